//! The gate for an ordinary user: a test that needs root runs itself again
//! as root of a user, network and mount namespace of its own, as `ci/test`
//! runs the whole suite for an ordinary user.

use std::path::Path;
use std::process::Command;

use crate::gate::{Need, gate, skip};

/// Set in the re-run test's environment: it never re-runs itself again.
const INSIDE: &str = "TESTKIT_IN_USER_NAMESPACE";

/// What the re-run test must print for its run to count as a pass.
const ONE_PASSED: &str = "test result: ok. 1 passed;";

/// Like [`gate`], except that an ordinary user's test needing
/// [`Need::Root`] does not skip: it runs again, alone (`--exact`), as
/// root of a new user, network and mount namespace (`unshare --map-auto
/// --map-root-user --net --mount`, as `ci/test` does for an ordinary
/// user: the user's subordinate ids exist there too, so tests can act as
/// uid 1000 or 1337), with a private `/run` and loopback up, and this call
/// reports that run. Without Debian's `uidmap` or a range for the user in
/// `/etc/subuid` and `/etc/subgid` it skips, saying which.
///
/// True: run the test here (every need met, or this is the re-run).
/// False: return now. Either the test cannot run here ([`skip`]: `SKIP:`,
/// a panic under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`) or its re-run passed.
/// A failed re-run panics with the re-run's output.
///
/// Call it on the test's own thread (libtest names it after the test,
/// the name `--exact` needs); `test` is the fallback name.
pub fn gate_or_userns(test: &str, needs: &[Need]) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let wants_root = needs.iter().any(|n| matches!(n, Need::Root));
    if root || !wants_root || std::env::var_os(INSIDE).is_some() {
        return gate(test, needs);
    }
    let others: Vec<Need> = needs.iter().copied().filter(|n| !matches!(n, Need::Root)).collect();
    if !gate(test, &others) {
        return false;
    }
    let name = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or(test)
        .to_owned();
    let command = match rerun(&name) {
        Ok(c) => c,
        Err(reason) => return skip(test, &format!("not root, and {reason}")),
    };
    rerun_verdict(test, command)
}

/// Runs `command` (the test's re-run) and says what its output means.
fn rerun_verdict(test: &str, mut command: Command) -> bool {
    let out = match command.output() {
        Ok(out) => out,
        Err(e) => return skip(test, &format!("not root, and running unshare failed: {e}")),
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Through print!, so libtest shows it with the test's own output.
    print!("{stdout}");
    eprint!("{stderr}");
    if !stdout.contains("running 1 test") {
        // unshare, the mount or `ip` failed before the test binary ran.
        return skip(
            test,
            &format!(
                "not root, and entering a user namespace failed ({}): {}",
                out.status,
                stderr.trim()
            ),
        );
    }
    assert!(
        out.status.success() && stdout.contains(ONE_PASSED),
        "{test}: its run as root of a user namespace failed ({})",
        out.status
    );
    if let Some(line) = stderr.lines().find(|l| l.starts_with("SKIP: ")) {
        return skip(test, &format!("in the user namespace: {line}"));
    }
    eprintln!("{test}: passed as root of a user namespace (not root here)");
    false
}

/// The command that runs test `name` of this binary again in the namespaces.
fn rerun(name: &str) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the test binary's path is unknown: {e}"))?;
    let unshare = crate::on_path("unshare").ok_or("unshare (util-linux) is not installed")?;
    let ip = crate::on_path("ip").ok_or("ip (iproute2) is not installed")?;
    if crate::on_path("newuidmap").is_none() {
        return Err("newuidmap is not installed (Debian: uidmap)".into());
    }
    if let Some(file) = ["/etc/subuid", "/etc/subgid"].into_iter().find(|f| !listed(f)) {
        return Err(format!(
            "{file} gives this user no range (usermod --add-subuids/--add-subgids)"
        ));
    }
    Ok(command(&unshare, &exe, &ip, name))
}

/// `unshare` running test `name` of the test binary `exe` in the namespaces.
fn command(unshare: &Path, exe: &Path, ip: &Path, name: &str) -> Command {
    let mut c = Command::new(unshare);
    c.args([
        "--map-auto",
        "--map-root-user",
        "--net",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(SETUP)
    .arg(exe)
    .arg(ip)
    .args([name, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
    .env(INSIDE, "1");
    c
}

/// Inside: `/run` the namespace's own (iptables' lock, netns files), `lo`
/// up, then the test binary (`$0`) with the rest of the arguments.
const SETUP: &str = r#"ip=$1; shift; mount -t tmpfs tmpfs /run && "$ip" link set lo up && exec "$0" "$@""#;

/// Whether `file` (`/etc/subuid` format) gives this user a range, the
/// one `unshare --map-auto` maps.
fn listed(file: &str) -> bool {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name);
    std::fs::read_to_string(file).is_ok_and(|text| {
        text.lines().any(|line| {
            let owner = line.split(':').next().unwrap_or_default();
            Some(owner) == name.as_deref() || owner == uid.to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_passing_rerun_returns_false() {
        assert!(!rerun_verdict(
            "t",
            sh("echo 'running 1 test'; echo 'test result: ok. 1 passed; 0 failed'")
        ));
    }

    #[test]
    #[should_panic(expected = "its run as root of a user namespace failed")]
    fn a_failing_rerun_panics() {
        rerun_verdict(
            "t",
            sh("echo 'running 1 test'; echo 'test result: FAILED. 0 passed; 1 failed'; exit 101"),
        );
    }

    #[test]
    #[should_panic(expected = "its run as root of a user namespace failed")]
    fn a_rerun_that_matched_no_test_is_no_pass() {
        rerun_verdict(
            "t",
            sh("echo 'running 1 test'; echo 'test result: ok. 0 passed; 0 failed'"),
        );
    }

    #[test]
    fn the_setup_runs_the_binary_with_its_arguments() {
        // SETUP without its privileged steps: `$0` gets the rest.
        let script = SETUP.replace(r#"mount -t tmpfs tmpfs /run && "$ip" link set lo up && "#, "");
        let out = Command::new("/bin/sh")
            .args(["-c", &script, "/bin/echo", "/sbin/ip", "name", "--exact"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "name --exact\n");
    }

    #[test]
    fn the_rerun_is_the_exact_test_with_the_marker() {
        let c = command(
            Path::new("/u/unshare"),
            Path::new("/t/exe"),
            Path::new("/s/ip"),
            "some::test",
        );
        assert_eq!(c.get_program(), "/u/unshare");
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let at = args.iter().position(|a| a == "-c").expect("sh -c");
        assert_eq!(
            args[..at - 1],
            [
                "--map-auto",
                "--map-root-user",
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--"
            ]
        );
        assert_eq!(
            args[at + 2..],
            [
                "/t/exe",
                "/s/ip",
                "some::test",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1"
            ]
        );
        assert!(c.get_envs().any(|(k, v)| k == INSIDE && v.is_some()));
    }
}
