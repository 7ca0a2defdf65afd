//! Getting this machine ready before a run that uses it (the spec cases,
//! the embedded cluster): the checkout's `ci/setup` installs what is missing
//! from Debian's packages (apt-get as root; unpacked into `target/ci-tools`
//! as an ordinary user), and `ci/env`'s variables (PATH, LD_LIBRARY_PATH,
//! XTABLES_LIBDIR, CNI_PLUGINS_DIR) are taken into this process.
//!
//! The checkout is found from the runner's own path
//! (`<checkout>/target/<profile>/istio-cni-conformance`) or the path it was
//! built from; an installed runner outside a checkout skips this.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variables `ci/env` sets that the run needs.
const ENV_VARS: [&str; 5] = [
    "PATH",
    "LD_LIBRARY_PATH",
    "XTABLES_LIBDIR",
    "CI_TOOLS",
    "CNI_PLUGINS_DIR",
];

/// The checkout with `ci/setup` and `ci/env` this runner belongs to, if any.
pub fn checkout() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let from_exe = exe
        .iter()
        .flat_map(|e| e.ancestors().skip(3).take(2).map(Path::to_path_buf).collect::<Vec<_>>());
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    from_exe
        .chain(built_in)
        .find(|dir| dir.join("ci/setup").is_file() && dir.join("ci/env").is_file())
}

/// Runs `ci/setup` in `checkout` (quiet when nothing is missing).
pub fn setup(checkout: &Path) -> Result<(), String> {
    let status = Command::new("bash")
        .arg(checkout.join("ci/setup"))
        .current_dir(checkout)
        .status()
        .map_err(|e| format!("running {}/ci/setup: {e}", checkout.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}/ci/setup failed ({status}); it installs iptables, nftables, iproute2, containernetworking-plugins, kubectl and uidmap",
            checkout.display()
        ))
    }
}

/// Takes `ci/env`'s variables into this process.
///
/// Must be called while the process is single-threaded (before any run
/// starts): it changes the environment.
pub fn import_env(checkout: &Path) -> Result<(), String> {
    let out = Command::new("bash")
        .args(["-c", "cd \"$1\" && . ci/env && env -0", "ci-env"])
        .arg(checkout)
        .output()
        .map_err(|e| format!("sourcing {}/ci/env: {e}", checkout.display()))?;
    if !out.status.success() {
        return Err(format!(
            "sourcing {}/ci/env failed: {}",
            checkout.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    for (key, value) in parse_env(&out.stdout) {
        if ENV_VARS.contains(&key.as_str()) {
            // SAFETY: documented precondition — no other thread is running.
            unsafe { std::env::set_var(key, value) };
        }
    }
    Ok(())
}

/// `env -0` output as pairs.
fn parse_env(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (k, v) = entry.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// `ci/setup` and `ci/env` of the checkout, when there is one. Inside a
/// user namespace (`ci/test`'s, or ours) there is nothing to install with —
/// the caller set up outside — so only the environment is taken.
pub fn prepare() -> Result<(), String> {
    let Some(checkout) = checkout() else { return Ok(()) };
    if !in_user_namespace() {
        setup(&checkout)?;
    }
    import_env(&checkout)
}

/// Whether this process is in a user namespace other than the initial one
/// (whose uid map is the identity over every uid).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| !is_initial_uid_map(&map))
}

fn is_initial_uid_map(map: &str) -> bool {
    map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_output_is_split_on_nul() {
        assert_eq!(
            parse_env(b"PATH=/a:/b\0X=y=z\0bad\0"),
            [
                ("PATH".to_owned(), "/a:/b".to_owned()),
                ("X".to_owned(), "y=z".to_owned())
            ]
        );
    }

    #[test]
    fn the_initial_user_namespace_is_the_identity_map() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0       1000          1\n"));
        assert!(!is_initial_uid_map("0 1000 1\n1 100000 65536\n"));
    }

    #[test]
    fn the_checkout_is_this_repository() {
        let dir = checkout().expect("tests run inside the checkout");
        assert!(dir.join("conformance/Cargo.toml").is_file());
    }
}
