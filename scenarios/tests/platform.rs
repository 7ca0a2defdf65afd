//! The `platform/...` scenarios on the embedded cluster: every distribution's
//! node layout with the manifest rendered for it (see
//! `istio_cni_scenarios::platform`). Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).

use istio_cni_scenarios::harness::assert_passes_locally;
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
    // Nothing here may skip on the local backend.
    assert_passes_locally(name, |_| false);
}
