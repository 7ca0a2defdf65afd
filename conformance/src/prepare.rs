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
use std::process::{Command, ExitStatus};

/// The variables `ci/env` sets that the run needs.
const ENV_VARS: [&str; 5] = [
    "PATH",
    "LD_LIBRARY_PATH",
    "XTABLES_LIBDIR",
    "CI_TOOLS",
    "CNI_PLUGINS_DIR",
];

/// Why the machine could not be prepared; each names the checkout's script.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("running {}/ci/setup: {source}", checkout.display())]
    RunSetup {
        checkout: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}/ci/setup failed ({status}); it installs iptables, nftables, iproute2, containernetworking-plugins, kubectl and uidmap",
        checkout.display()
    )]
    Setup { checkout: PathBuf, status: ExitStatus },
    #[error("sourcing {}/ci/env: {source}", checkout.display())]
    RunEnv {
        checkout: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sourcing {}/ci/env failed: {stderr}", checkout.display())]
    Env { checkout: PathBuf, stderr: String },
}

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
pub fn setup(checkout: &Path) -> Result<(), PrepareError> {
    let status = Command::new("bash")
        .arg(checkout.join("ci/setup"))
        .current_dir(checkout)
        .status()
        .map_err(|source| PrepareError::RunSetup {
            checkout: checkout.to_path_buf(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(PrepareError::Setup {
            checkout: checkout.to_path_buf(),
            status,
        })
    }
}

/// Takes `ci/env`'s variables into this process.
///
/// Must be called while the process is single-threaded (before any run
/// starts): it changes the environment.
pub fn import_env(checkout: &Path) -> Result<(), PrepareError> {
    let out = Command::new("bash")
        .args(["-c", "cd \"$1\" && . ci/env && env -0", "ci-env"])
        .arg(checkout)
        .output()
        .map_err(|source| PrepareError::RunEnv {
            checkout: checkout.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(PrepareError::Env {
            checkout: checkout.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
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
pub fn prepare() -> Result<(), PrepareError> {
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
