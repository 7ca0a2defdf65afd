//! Root for the scenario tests, as `cargo test -p scenarios` runs them.
//!
//! The embedded cluster needs root. An ordinary user's test re-runs itself,
//! alone, as root of a new user, network and mount namespace (what `ci/test`
//! and the conformance runner do: `unshare --map-auto --map-root-user`, uids
//! from the user's `/etc/subuid` range), and passes only when that run passed
//! the test. When the namespace cannot be had the test fails saying why: a
//! scenario that did not run is never reported as passed.

use std::process::{Command, Stdio};

/// Set in the re-run test binary, so it never re-runs itself again.
pub const MARK: &str = "ISTIO_CNI_SCENARIOS_USERNS";

const SCRIPT: &str = "mount -t tmpfs tmpfs /run && ip link set lo up && exec \"$@\"";

/// Whether the calling test should run its body here: true as root. As an
/// ordinary user the test has already run in a user namespace when this
/// returns false (and passed: a failure there panics here); it panics when
/// no namespace can be had.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if let Err(why) = rerun_as_root(test, std::env::var_os(MARK).is_some()) {
        panic!("{test}: {why}");
    }
    false
}

/// Runs the current test (libtest names its thread after it) once more,
/// alone, in a user namespace where this process's user is root.
fn rerun_as_root(test: &str, inside: bool) -> Result<(), String> {
    if inside {
        return Err("not root even inside the user namespace made for the test".into());
    }
    if let Some(why) = missing() {
        return Err(why);
    }
    let current = std::thread::current();
    let name = current
        .name()
        .filter(|n| *n != "main")
        .ok_or("not root, and cannot tell which test to re-run as root (no test thread name)")?;
    let exe = std::env::current_exe().map_err(|e| format!("finding the test binary: {e}"))?;
    eprintln!("{test}: not root: re-running {name} as root of a user namespace");
    let output = Command::new("unshare")
        .args([
            "--map-auto",
            "--map-root-user",
            "--net",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", SCRIPT, "scenario-test"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(MARK, "1")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running unshare (util-linux) for the user namespace: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stdout}");
    // libtest exits 0 when --exact matched nothing: demand the one pass.
    if output.status.success() && stdout.contains("test result: ok. 1 passed") {
        Ok(())
    } else if output.status.success() {
        Err(format!("the re-run as root in a user namespace did not run {name}"))
    } else {
        Err(format!("failed as root of a user namespace ({})", output.status))
    }
}

/// Why this user cannot get a user namespace with a range of uids, if it cannot.
pub fn missing() -> Option<String> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let has_newuidmap = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/bin".into(), "/usr/sbin".into()])
            .any(|d| d.join("newuidmap").is_file())
    });
    let listed = |file: &str| {
        std::fs::read_to_string(file).is_ok_and(|s| {
            s.lines().any(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|who| who == user || who == uid.to_string())
            })
        })
    };
    let why = match (has_newuidmap, listed("/etc/subuid") && listed("/etc/subgid")) {
        (true, true) => return None,
        (false, _) => "no newuidmap (Debian's uidmap; as root: apt-get install uidmap)".to_string(),
        (true, false) => format!(
            "no range for {user} in /etc/subuid and /etc/subgid \
             (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user})"
        ),
    };
    Some(format!(
        "not root, and the scenarios need root: running as {user}, they re-run themselves as root of a user \
         namespace, which needs {why}; or run them as root"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The re-run never recurses: inside its namespace a non-root test fails.
    #[test]
    fn never_reruns_inside_the_namespace() {
        let err = rerun_as_root("t", true).unwrap_err();
        assert!(err.contains("inside the user namespace"), "{err}");
    }
}
