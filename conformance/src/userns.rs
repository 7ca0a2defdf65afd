//! Running as an ordinary user: the runner re-executes itself as root of a
//! new user, network and mount namespace — the same namespace `ci/test`
//! gives the tests: uids from the user's subordinate range (`unshare
//! --map-auto --map-root-user`, which needs Debian's `uidmap` and an entry in
//! `/etc/subuid` and `/etc/subgid`), a private `/run`, `lo` up.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Set in the re-executed runner, so it never re-executes again.
pub const MARK: &str = "ISTIO_CNI_CONFORMANCE_USERNS";

const SCRIPT: &str = "mount -t tmpfs tmpfs /run && ip link set lo up && exec \"$@\"";

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
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string());
    let has_newuidmap = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/bin".into(), "/usr/sbin".into()])
            .any(|d| d.join("newuidmap").is_file())
    });
    let in_subuid = std::fs::read_to_string("/etc/subuid")
        .is_ok_and(|s| s.lines().any(|l| l.split(':').next() == Some(user.as_str())));
    if has_newuidmap && in_subuid {
        return None;
    }
    Some(format!(
        "running as {user}, the runner needs a user namespace with a range of uids: install Debian's uidmap \
         (as root: apt-get install uidmap) and give {user} a range in /etc/subuid and /etc/subgid \
         (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}), or run it as root"
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
    let err = Command::new("unshare")
        .args([
            "--map-auto",
            "--map-root-user",
            "--net",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", SCRIPT, "istio-cni-conformance"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(MARK, "1")
        .exec();
    format!("running unshare (util-linux) for the user namespace: {err}")
}
