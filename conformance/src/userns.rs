//! Running as an ordinary user: the runner re-executes itself as root of a
//! new user, network and mount namespace — the same namespace `ci/test`
//! gives the tests: uids from the user's subordinate range (`unshare
//! --map-auto --map-root-user`, which needs Debian's `uidmap` and an entry in
//! `/etc/subuid` and `/etc/subgid`), a private `/run`, `lo` up.

use std::os::unix::process::CommandExt;

/// Set in the re-executed runner, so it never re-executes again.
pub const MARK: &str = "ISTIO_CNI_CONFORMANCE_USERNS";

/// Whether this process is an ordinary user outside the runner's namespace.
pub fn needed() -> bool {
    !nix::unistd::geteuid().is_root() && !inside()
}

/// Whether this is the re-executed runner.
pub fn inside() -> bool {
    std::env::var_os(MARK).is_some()
}

/// Why this user cannot get the namespace, if it cannot.
pub fn missing() -> Option<String> {
    let (user, why) = testkit::userns::unavailable()?;
    Some(format!(
        "running as {user}, the runner needs a user namespace with a range of uids, which needs {why}; \
         or run it as root"
    ))
}

/// Replaces this process with itself inside the namespace; returns only on error.
pub fn reexec() -> String {
    if let Some(why) = missing() {
        return why;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return format!("finding the runner's own path: {e}"),
    };
    let err = testkit::userns::command("istio-cni-conformance", &exe)
        .args(std::env::args_os().skip(1))
        .env(MARK, "1")
        .exec();
    format!("running unshare (util-linux) for the user namespace: {err}")
}
