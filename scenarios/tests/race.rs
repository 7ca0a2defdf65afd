//! The `race/...` scenarios on the embedded cluster. Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).

use istio_cni_scenarios::harness::run_local;
use istio_cni_scenarios::scenario::Verdict;
use rstest::rstest;

#[rstest]
#[case::repair_pods("race/repairPods")]
#[case::delete_pods("race/deletePods")]
#[case::label_pods("race/labelPods")]
#[case::disabled("race/disabled")]
#[case::agent_restart("race/agent-restart")]
#[case::ordering("race/ordering")]
fn race(#[case] name: &str) {
    let Some(outcome) = run_local(name) else {
        return;
    };
    outcome.assert_passed();
    assert_eq!(outcome.verdict, Verdict::Pass, "{name} skipped");
}
