//! Root for the scenario tests, as `cargo test -p scenarios` runs them.
//!
//! The embedded cluster needs root. An ordinary user's test re-runs itself,
//! alone, as root of a new user, network and mount namespace (what `ci/test`
//! and the conformance runner do: `unshare --map-auto --map-root-user`, uids
//! from the user's `/etc/subuid` range), and passes only when that run passed
//! the test. When the namespace cannot be had the test fails saying why: a
//! scenario that did not run is never reported as passed.

use std::process::Stdio;

use crate::catalog;
use crate::env::{Env, Target};
use crate::scenario::{Outcome, Verdict};

/// Set in the re-run test binary, so it never re-runs itself again.
pub const MARK: &str = "ISTIO_CNI_SCENARIOS_USERNS";

/// Whether the calling test should run its body here: true as root. As an
/// ordinary user the test has already run in a user namespace when this
/// returns false (and passed: a failure there panics here); it panics when
/// no namespace can be had. Unlike `testkit::gate` it never skips: a
/// scenario that did not run never passes.
pub fn as_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if let Err(why) = rerun_as_root(test, std::env::var_os(MARK).is_some()) {
        panic!("{test}: {why}");
    }
    false
}

/// Why a test could not be re-run as root of a user namespace.
#[derive(Debug, thiserror::Error)]
enum RerunError {
    #[error("not root even inside the user namespace made for the test")]
    Inside,
    /// No user namespace for this user ([`missing`] says why).
    #[error("{0}")]
    Unavailable(String),
    #[error("not root, and cannot tell which test to re-run as root (no test thread name)")]
    NoTestName,
    #[error("finding the test binary: {0}")]
    Exe(#[source] std::io::Error),
    #[error("running unshare (util-linux) for the user namespace: {0}")]
    Unshare(#[source] std::io::Error),
    #[error("the re-run as root in a user namespace did not run {name}")]
    NotRun { name: String },
    #[error("failed as root of a user namespace ({0})")]
    Failed(std::process::ExitStatus),
}

/// Runs the current test (libtest names its thread after it) once more,
/// alone, in a user namespace where this process's user is root.
fn rerun_as_root(test: &str, inside: bool) -> Result<(), RerunError> {
    if inside {
        return Err(RerunError::Inside);
    }
    if let Some(why) = missing() {
        return Err(RerunError::Unavailable(why));
    }
    let current = std::thread::current();
    let name = current.name().filter(|n| *n != "main").ok_or(RerunError::NoTestName)?;
    let exe = std::env::current_exe().map_err(RerunError::Exe)?;
    eprintln!("{test}: not root: re-running {name} as root of a user namespace");
    let output = testkit::userns::command("scenario-test", &exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(MARK, "1")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(RerunError::Unshare)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stdout}");
    // libtest exits 0 when --exact matched nothing: demand the one pass.
    if output.status.success() && stdout.contains("test result: ok. 1 passed") {
        Ok(())
    } else if output.status.success() {
        Err(RerunError::NotRun { name: name.to_owned() })
    } else {
        Err(RerunError::Failed(output.status))
    }
}

/// Runs the catalog's scenario `name` (or the one whose name starts with
/// it, when it ends in `/`) on the embedded cluster, as root ([`as_root`]),
/// printing its timeline; `None` when it already ran in a user namespace.
pub fn run_local(name: &str) -> Option<Outcome> {
    if !as_root(name) {
        return None;
    }
    let env = Env::new(Target::Local).unwrap_or_else(|e| panic!("{name}: locating the workspace binaries: {e}"));
    let scenario = catalog::all()
        .into_iter()
        .find(|s| s.name == name || (name.ends_with('/') && s.name.starts_with(name)))
        .unwrap_or_else(|| panic!("no scenario {name}"));
    let outcome = scenario.run(&env);
    outcome.eprint();
    Some(outcome)
}

/// [`run_local`], then the scenario must have passed; a skip fails the test
/// unless `may_skip` accepts its reason.
pub fn assert_passes_locally(name: &str, may_skip: impl Fn(&str) -> bool) {
    let Some(outcome) = run_local(name) else {
        return;
    };
    outcome.assert_passed();
    if let Verdict::Skip(reason) = &outcome.verdict {
        assert!(may_skip(reason), "{name} skipped: {reason}");
    }
}

/// Why this user cannot get a user namespace with a range of uids, if it cannot.
pub fn missing() -> Option<String> {
    let (user, why) = testkit::userns::unavailable()?;
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
        let err = rerun_as_root("t", true).unwrap_err().to_string();
        assert!(err.contains("inside the user namespace"), "{err}");
    }
}
