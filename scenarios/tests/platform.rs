//! The `platform/...` scenarios on the embedded cluster: every distribution's
//! node layout with the manifest rendered for it (see
//! `istio_cni_scenarios::platform`). Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).

use istio_cni_scenarios::catalog;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::harness::privileged;
use istio_cni_scenarios::scenario::Verdict;
use rstest::rstest;

#[rstest]
#[case::default("platform/default")]
#[case::gke("platform/gke")]
#[case::k3d("platform/k3d")]
#[case::k3s("platform/k3s")]
#[case::microk8s("platform/microk8s")]
#[case::minikube("platform/minikube")]
#[case::openshift("platform/openshift")]
fn platform(#[case] name: &str) {
    if !privileged(name) {
        return;
    }
    let scenario = catalog::named(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let env = Env::new(Target::Local).unwrap();
    let outcome = scenario.run(&env);
    outcome.eprint();
    // Nothing here may skip on the local backend.
    assert!(
        !matches!(outcome.verdict, Verdict::Skip(_)),
        "{name}: {:?}",
        outcome.verdict
    );
    outcome.assert_passed();
}
