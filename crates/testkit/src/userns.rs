//! Root of a user namespace for an ordinary user: a test that needs root
//! runs itself again as root of a user, network and mount namespace of its
//! own ([`gate_or_userns`]), as `ci/test` runs the whole suite for an
//! ordinary user; [`command`] and [`unavailable`] serve everything else
//! that re-runs itself there (the scenario tests, the conformance runner).

use std::path::{Path, PathBuf};
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
    for (tool, package) in [("unshare", "util-linux"), ("ip", "iproute2")] {
        if crate::on_path(tool).is_none() {
            return Err(format!("{tool} ({package}) is not installed"));
        }
    }
    if let Some((user, why)) = unavailable() {
        return Err(format!("a user namespace for {user} needs {why}"));
    }
    Ok(rerun_command(&exe, name))
}

/// [`command`] running test `name` of the test binary `exe`, alone, marked.
fn rerun_command(exe: &Path, name: &str) -> Command {
    let mut c = command("testkit-rerun", exe);
    c.args([name, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1");
    c
}

/// `unshare` running `program` (add its arguments) as root of a new user,
/// network and mount namespace: uids from the caller's subordinate range
/// (`--map-auto`), a private `/run`, `lo` up. `label` is the shell's `$0`
/// (for its messages). `unshare` and `ip` are looked up as [`crate::on_path`]
/// does, since an ordinary user's `PATH` may lack `/sbin`.
pub fn command(label: &str, program: &Path) -> Command {
    let tool = |name: &str| crate::on_path(name).unwrap_or_else(|| PathBuf::from(name));
    let mut c = Command::new(tool("unshare"));
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
        SETUP,
        label,
    ])
    .arg(tool("ip"))
    .arg(program);
    c
}

/// Inside: `/run` the namespace's own (iptables' lock, netns files), `lo`
/// up (with `ip` at `$1`), then the program and its arguments.
const SETUP: &str = r#"ip=$1; shift; mount -t tmpfs tmpfs /run && "$ip" link set lo up && exec "$@""#;

/// The calling user's name, and what a user namespace with a range of uids
/// (`unshare --map-auto`) still lacks for it, if anything.
pub fn unavailable() -> Option<(String, String)> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let has_newuidmap = crate::on_path("newuidmap").is_some() || Path::new("/usr/bin/newuidmap").is_file();
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    let (subuid, subgid) = (read("/etc/subuid"), read("/etc/subgid"));
    let listed = |text: &str| {
        text.lines().any(|l| {
            l.split(':')
                .next()
                .is_some_and(|who| who == user || who == uid.to_string())
        })
    };
    let why = match (has_newuidmap, listed(&subuid) && listed(&subgid)) {
        (true, true) => return None,
        (false, _) => "Debian's uidmap (newuidmap; as root: apt-get install uidmap)".to_string(),
        (true, false) => {
            let (first, last) = free_subid_range(&[&subuid, &subgid]);
            format!(
                "a range for {user} in /etc/subuid and /etc/subgid \
                 (as root: usermod --add-subuids {first}-{last} --add-subgids {first}-{last} {user})"
            )
        }
    };
    Some((user, why))
}

/// A range of 65536 ids above every range already given out in these
/// `/etc/subuid`-format files, starting no lower than `useradd`'s first
/// (100000), so the suggestion never overlaps another user's range.
pub fn free_subid_range(files: &[&str]) -> (u64, u64) {
    const FIRST: u64 = 100_000;
    const COUNT: u64 = 65_536;
    let end = files
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| {
            let mut fields = line.trim().split(':').skip(1);
            let start: u64 = fields.next()?.parse().ok()?;
            let count: u64 = fields.next()?.parse().ok()?;
            start.checked_add(count)
        })
        .fold(FIRST, u64::max);
    // Keep ranges aligned to 65536 like useradd's, for readability.
    let first = if end <= FIRST {
        FIRST
    } else {
        end.div_ceil(COUNT).saturating_mul(COUNT)
    };
    (first, first.saturating_add(COUNT - 1))
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
    fn the_setup_runs_the_program_with_its_arguments() {
        // SETUP without its privileged steps: the program gets the rest.
        let script = SETUP.replace(r#"mount -t tmpfs tmpfs /run && "$ip" link set lo up && "#, "");
        let out = Command::new("/bin/sh")
            .args(["-c", &script, "label", "/sbin/ip", "/bin/echo", "name", "--exact"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "name --exact\n");
    }

    #[test]
    fn the_command_runs_the_program_in_new_namespaces() {
        let c = command("label", Path::new("/t/exe"));
        assert!(c.get_program().to_string_lossy().ends_with("unshare"));
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let namespaces = "--map-auto --map-root-user --net --mount --propagation private -- /bin/sh -c";
        assert!(args.join(" ").starts_with(namespaces), "{args:?}");
        let at = args.iter().position(|a| a == "-c").expect("sh -c");
        assert_eq!(args[at + 1..at + 3], [SETUP, "label"]);
        assert!(args[at + 3].ends_with("ip"), "{args:?}");
        assert_eq!(args[at + 4..], ["/t/exe"]);
    }

    #[test]
    fn the_rerun_is_the_exact_test_with_the_marker() {
        let c = rerun_command(Path::new("/t/exe"), "some::test");
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let exe = args.iter().position(|a| a == "/t/exe").expect("the test binary");
        assert_eq!(
            args[exe..],
            [
                "/t/exe",
                "some::test",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1"
            ]
        );
        assert!(c.get_envs().any(|(k, v)| k == INSIDE && v.is_some()));
    }

    #[test]
    fn suggested_subid_range_overlaps_no_existing_one() {
        assert_eq!(free_subid_range(&["", ""]), (100_000, 165_535));
        // useradd's first user: 100000:65536. The old hint, 100000-165535, overlapped it.
        let first_user = "alice:100000:65536\n";
        assert_eq!(free_subid_range(&[first_user, first_user]), (196_608, 262_143));
        let odd = "bob:300000:1000\n# comment\nbroken line\ncarol:x:y\n";
        assert_eq!(free_subid_range(&[first_user, odd]), (327_680, 393_215));
        assert_eq!(
            free_subid_range(&["big:18446744073709551000:65536\n"]),
            (100_000, 165_535)
        );
    }
}
