//! The lifecycle scenarios on the embedded cluster: `upgrade/*`,
//! `race/scale-out/*`, `race/job*` (see `istio_cni_scenarios::lifecycle`).
//! Needs root: an ordinary user's test re-runs itself in a user namespace or
//! fails saying why (see `istio_cni_scenarios::harness`). Only a scenario
//! needing an opt-in agent feature (the not-ready taint, safe upgrade) may
//! skip, and only when the agent's values refuse its key.

use istio_cni_scenarios::harness::assert_passes_locally;
use rstest::rstest;

/// The two that prove the not-ready taint end to end run here; every other
/// lifecycle scenario takes minutes and runs in the main job
/// (`istio-cni-conformance run --suite lifecycle`), see [`the_rest`].
#[rstest]
#[case::scale_out_taint("race/scale-out/taint")]
#[case::job_taint("race/job/taint")]
fn lifecycle(#[case] name: &str) {
    assert_passes_locally(name, |reason| reason.starts_with("the agent under test lacks"));
}

/// The other lifecycle scenarios, minutes each (DaemonSet rolls under load,
/// nodes joining): `cargo test --test lifecycle -- --ignored` runs them.
#[rstest]
#[case::in_place_repair("upgrade/in-place/repairPods")]
#[case::in_place_delete("upgrade/in-place/deletePods")]
#[case::in_place_label("upgrade/in-place/labelPods")]
#[case::in_place_safe("upgrade/in-place/safe-upgrade")]
#[case::independent("upgrade/independent")]
#[case::scale_out_repair("race/scale-out/repairPods")]
#[case::scale_out_delete("race/scale-out/deletePods")]
#[case::scale_out_label("race/scale-out/labelPods")]
#[case::scale_out_disabled("race/scale-out/disabled")]
#[case::job("race/job")]
#[ignore = "minutes each: the main job runs them (istio-cni-conformance run --suite lifecycle)"]
fn the_rest(#[case] name: &str) {
    lifecycle(name);
}
