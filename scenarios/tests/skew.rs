//! The `skew/...` scenarios on the embedded cluster. Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).
//! `skew/release/previous-plugin` builds the previous release's plugin into
//! the build cache on first use (minutes on a cold cache).

use istio_cni_scenarios::harness::assert_passes_locally;
use rstest::rstest;

/// Runs the scenario `name`; none of them may skip (the release pairing
/// falls back to a pinned commit on a clone without tags).
fn run(name: &str) {
    assert_passes_locally(name, |_| false);
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
#[ignore = "builds the previous release's plugin (minutes on a cold cache): the main job runs it"]
fn previous_release_plugin() {
    run("skew/release/previous-plugin");
}
