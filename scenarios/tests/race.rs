//! The `race/...` scenarios on the embedded cluster. Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).

use istio_cni_scenarios::harness::assert_passes_locally;
use rstest::rstest;

#[rstest]
#[case::repair_pods("race/repairPods")]
#[case::delete_pods("race/deletePods")]
#[case::label_pods("race/labelPods")]
#[case::disabled("race/disabled")]
#[case::agent_restart("race/agent-restart")]
#[case::ordering("race/ordering")]
fn race(#[case] name: &str) {
    assert_passes_locally(name, |_| false);
}
