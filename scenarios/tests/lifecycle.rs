//! The lifecycle scenarios on the embedded cluster: `upgrade/*`,
//! `race/scale-out/*`, `race/job*` (see `istio_cni_scenarios::lifecycle`).
//! Needs root: an ordinary user's test re-runs itself in a user namespace or
//! fails saying why (see `istio_cni_scenarios::harness`). Only a scenario
//! needing an opt-in agent feature (the not-ready taint, safe upgrade) may
//! skip, and only when the agent's values refuse its key.

use istio_cni_scenarios::harness::run_local;
use istio_cni_scenarios::scenario::Verdict;
use rstest::rstest;

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
#[case::scale_out_taint("race/scale-out/taint")]
#[case::job("race/job")]
#[case::job_taint("race/job/taint")]
fn lifecycle(#[case] name: &str) {
    let Some(outcome) = run_local(name) else {
        return;
    };
    outcome.assert_passed();
    if let Verdict::Skip(reason) = &outcome.verdict {
        assert!(
            reason.starts_with("the agent under test lacks"),
            "{name} skipped: {reason}"
        );
    }
}
