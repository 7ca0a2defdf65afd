//! The `race/...` scenarios on the embedded cluster. Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).

use istio_cni_scenarios::catalog;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::harness::privileged;
use rstest::rstest;

#[rstest]
#[case::repair_pods("race/repairPods")]
#[case::delete_pods("race/deletePods")]
#[case::label_pods("race/labelPods")]
#[case::disabled("race/disabled")]
#[case::agent_restart("race/agent-restart")]
#[case::ordering("race/ordering")]
fn race(#[case] name: &str) {
    if !privileged(name) {
        return;
    }
    let env = Env::new(Target::Local).expect("the workspace binaries");
    let scenario = catalog::named(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let outcome = scenario.run(&env);
    outcome.eprint();
    outcome.assert_passed();
    assert_eq!(
        outcome.verdict,
        istio_cni_scenarios::scenario::Verdict::Pass,
        "{name} skipped"
    );
}
