//! Test support shared by every test suite of the workspace.
//!
//! - [`gate`]: may this privileged test run here? A skip prints `SKIP:` and
//!   returns false, except under `ISTIO_CNI_REQUIRE_PRIVILEGED=1` (as
//!   `ci/test` sets), where it panics: a skip never passes in CI.
//!   [`gate_or_userns`]: the same, but an ordinary user's test that needs
//!   root re-runs itself as root of a user+network+mount namespace.
//!   [`privileged`]: the gate of a test that needs root.
//!   [`gate_or_return!`]: the gate for the calling test, by its own name,
//!   returning from it when it cannot run.
//! - [`Scratch`]: a fresh directory removed on drop; [`names_in`]: what a
//!   directory holds.
//! - [`on_path`]: a tool on `PATH` (with `/usr/sbin` and `/sbin`);
//!   [`run_ok`]: a command's stdout, or a panic with its stderr.
//! - [`Kubectl`]: kubectl (or helm) against one kubeconfig, with outputs a
//!   failing test can print; [`Kubectl::items`]: a `get`'s objects as JSON.
//! - [`workspace_bin`]: another package's binary, built when missing;
//!   [`place_exe`]: an executable put elsewhere, runnable at once.
//! - [`iptables::rules_by_chain`]: an `iptables-save` table, chain by chain.
//! - [`fixtures`]: the injected pods the suites program.
//! - [`pods`]: a pod's phase, its `istio-validation` exits, app restarts.

mod bins;
pub mod fixtures;
mod gate;
pub mod iptables;
mod kubectl;
pub mod pods;
mod scratch;
pub mod userns;

pub use bins::{place_exe, workspace_bin};
pub use gate::{Need, gate, privileged, skip, test_name_of};
pub use kubectl::{Kubectl, Run, helm_path, kubectl_path};
pub use scratch::{Scratch, names_in};
pub use userns::gate_or_userns;

/// Runs `cmd` to completion and returns its stdout; panics with the
/// command, its status and stderr unless it exits 0.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tool` on `PATH`, or in `/usr/sbin` or `/sbin` (where Debian puts
/// iptables and ip for root, and ordinary users' PATH lacks them).
pub fn on_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    #[test]
    fn run_ok_returns_stdout() {
        assert_eq!(
            super::run_ok(Command::new("sh").args(["-c", "echo out; echo err >&2"])),
            "out\n"
        );
    }

    #[test]
    #[should_panic(expected = "exit status: 3): err")]
    fn run_ok_shows_a_failures_status_and_stderr() {
        super::run_ok(Command::new("sh").args(["-c", "echo err >&2; exit 3"]));
    }
}
