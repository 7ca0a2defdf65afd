//! The `skew/...` scenarios on the embedded cluster. Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).
//! `skew/release/*` builds the previous release's plugin into the build
//! cache on first use (minutes on a cold cache).

use istio_cni_scenarios::harness::run_local;
use istio_cni_scenarios::scenario::Verdict;
use rstest::rstest;

/// Runs the one scenario whose name is `name` (or starts with it, for the
/// release scenario whose name carries the ref).
fn run(name: &str) {
    let Some(outcome) = run_local(name) else {
        return;
    };
    outcome.assert_passed();
    // Only a checkout without an earlier tag may skip (the release pairing).
    let no_release = matches!(&outcome.verdict, Verdict::Skip(m) if m.starts_with("no previous release"));
    assert!(
        outcome.verdict == Verdict::Pass || no_release,
        "{} skipped: {:?}",
        outcome.name,
        outcome.verdict
    );
}

#[rstest]
fn injected_pods(
    #[values("1.28", "1.29", "1.30")] version: &str,
    #[values("classic", "native", "kubevirt", "reroute-virtual", "custom-uid", "tproxy")] shape: &str,
) {
    run(&format!("skew/istio-{version}/{shape}"));
}

#[rstest]
fn installer_conflist_entries(#[values("1.20", "1.23", "1.27", "1.29")] version: &str) {
    run(&format!("skew/conflist/istio-{version}"));
}

#[test]
fn previous_release_plugin() {
    run("skew/release/");
}
