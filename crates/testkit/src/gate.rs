//! The privilege gate.

use std::path::PathBuf;

/// The environment variable under which a test that cannot run fails
/// instead of skipping.
const REQUIRE: &str = "ISTIO_CNI_REQUIRE_PRIVILEGED";

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Root, or root of a user namespace (namespaces, iptables, mounts).
    Root,
    /// A program on `PATH` (see [`crate::on_path`]).
    Tool(&'static str),
    /// The primary CNI plugins (bridge, ptp, host-local ...) in
    /// `$CNI_PLUGINS_DIR` or `/usr/lib/cni`.
    CniPlugins,
}

impl Need {
    /// Why this need is not met here, or `None` when it is.
    fn unmet(self) -> Option<String> {
        match self {
            Need::Root => (!nix::unistd::geteuid().is_root())
                .then(|| "not root (namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_owned()),
            Need::Tool(tool) => crate::on_path(tool)
                .is_none()
                .then(|| format!("{tool} not found in PATH")),
            Need::CniPlugins => {
                let dir = cni_plugins_dir();
                (!dir.join("bridge").is_file()).then(|| {
                    format!(
                        "no CNI plugins in {} (install containernetworking-plugins or set CNI_PLUGINS_DIR)",
                        dir.display()
                    )
                })
            }
        }
    }
}

fn cni_plugins_dir() -> PathBuf {
    std::env::var_os("CNI_PLUGINS_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// Whether `test` can run here given what it `needs`. When it cannot, see
/// [`skip`].
pub fn gate(test: &str, needs: &[Need]) -> bool {
    match needs.iter().find_map(|need| need.unmet()) {
        None => true,
        Some(reason) => skip(test, &reason),
    }
}

/// Reports that `test` cannot run for `reason`: prints `SKIP: test: reason`
/// and returns false, or panics under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`.
pub fn skip(test: &str, reason: &str) -> bool {
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{test}: cannot run and {REQUIRE}=1: {reason}");
    }
    eprintln!("SKIP: {test}: {reason}");
    false
}
