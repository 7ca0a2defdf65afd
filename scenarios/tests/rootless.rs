//! An ordinary user's `cargo test -p scenarios` never reports a scenario that
//! did not run as passed: the test either re-runs itself as root of a user
//! namespace (see `istio_cni_scenarios::harness`) or fails saying why.

use std::process::Command;

use istio_cni_scenarios::harness::as_root;

/// Gates [`probe`]'s body to the run [`an_ordinary_user_never_passes_unrun`] makes.
const PROBE: &str = "ISTIO_CNI_SCENARIOS_PROBE";

/// Stands for a scenario test: its body needs root.
#[test]
fn probe() {
    if std::env::var_os(PROBE).is_none() || !as_root("rootless/probe") {
        return;
    }
    assert!(nix::unistd::geteuid().is_root(), "the body ran without root");
}

#[test]
fn an_ordinary_user_never_passes_unrun() {
    // Switching to another user needs root (or root of a user namespace).
    if !as_root("an_ordinary_user_never_passes_unrun") {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", "probe", "--nocapture"])
        .env(PROBE, "1")
        .current_dir("/")
        .output()
        .expect("running setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = format!("{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    if out.status.success() {
        // It passed: only after running the body as root of a user namespace.
        assert!(stdout.contains("1 passed"), "{text}");
        assert!(
            stderr.contains("re-running probe as root of a user namespace"),
            "{text}"
        );
    } else {
        // It failed: saying why, not with a skip.
        assert!(stderr.contains("not root, and the scenarios need root"), "{text}");
        assert!(!stderr.contains("SKIP"), "{text}");
    }
}
