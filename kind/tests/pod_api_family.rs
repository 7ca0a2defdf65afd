//! Pods reach the API server at an address of their own family: on an
//! IPv6-only embedded cluster a (non-hostNetwork) pod has only an IPv6
//! address, so `KUBERNETES_SERVICE_HOST` must be IPv6 and served there; a
//! dual-stack cluster advertises its primary family (IPv4) as Kubernetes
//! does. The check is kubectl's own in-cluster client (the environment, the
//! service-account token and CA): it proves the route, the listener, the
//! serving certificate's SAN for the literal and the URL's brackets.
//!
//! Needs root, `ip`, the CNI plugins and kubectl (skips with `SKIP:`
//! otherwise; panics under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::net::IpAddr;
use std::time::Duration;

use istio_cni_kind::cluster::{Cluster, ClusterSpec, IpFamily};
use istio_cni_kind::kubelet::ImageTable;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use testkit::{Need, gate};

/// Prints the API address it was given, then asks the API server for its
/// discovery document (authenticated: the token must be accepted). No
/// kubectl flag that changes the client config (`--request-timeout` ...):
/// kubectl then no longer falls back to the in-cluster config.
const CHECK: &str = r#"
echo "host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT"
exec "$KUBECTL" get --raw /api
"#;

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Runs the check pod in a fresh cluster of `family`; its phase, log and
/// the host it was given.
fn check_in(family: IpFamily) -> (String, String, IpAddr) {
    let kubectl = testkit::on_path("kubectl").expect("gated on kubectl");
    let cluster = Cluster::create(ClusterSpec {
        ip_family: family,
        images: ImageTable::new().add("shell", "/bin/sh", &[]),
        ..ClusterSpec::default()
    })
    .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "api-check"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "shell", "args": ["-c", CHECK],
            // No kubeconfig of the harness's user may win over the in-cluster config.
            "env": [{"name": "KUBECTL", "value": kubectl.to_string_lossy()},
                    {"name": "HOME", "value": "/nonexistent"},
                    {"name": "KUBECONFIG", "value": ""}]}]}
    }))
    .unwrap();
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster.block_on(api.create(&PostParams::default(), &pod)).unwrap();
    let pod = cluster
        .wait_for_pod("default", "api-check", Duration::from_secs(60), finished)
        .unwrap();
    let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
    let log = cluster.pod_logs("default", "api-check", "c").unwrap();
    let host = log
        .lines()
        .find_map(|l| l.strip_prefix("host="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{family:?}: no host line in the log:\n{log}"));
    let host: IpAddr = host
        .parse()
        .unwrap_or_else(|e| panic!("{family:?}: KUBERNETES_SERVICE_HOST {host:?}: {e}\n{log}"));
    cluster.delete().unwrap();
    (phase, log, host)
}

#[test]
fn an_ipv6_only_pod_reaches_the_api_server_at_an_ipv6_address() {
    let test = "an_ipv6_only_pod_reaches_the_api_server_at_an_ipv6_address";
    if !gate(
        test,
        &[Need::Root, Need::Tool("ip"), Need::CniPlugins, Need::Tool("kubectl")],
    ) {
        return;
    }
    let (phase, log, host) = check_in(IpFamily::Ipv6);
    assert!(host.is_ipv6(), "an IPv6-only pod was given {host}:\n{log}");
    assert_eq!(phase, "Succeeded", "the pod could not reach the API server:\n{log}");
    assert!(log.contains("\"versions\""), "no discovery document:\n{log}");
}

#[test]
fn a_dual_stack_pod_reaches_the_api_server_at_the_primary_family() {
    let test = "a_dual_stack_pod_reaches_the_api_server_at_the_primary_family";
    if !gate(
        test,
        &[Need::Root, Need::Tool("ip"), Need::CniPlugins, Need::Tool("kubectl")],
    ) {
        return;
    }
    let (phase, log, host) = check_in(IpFamily::DualStack);
    assert!(
        host.is_ipv4(),
        "a dual-stack cluster (IPv4 first) advertised {host}:\n{log}"
    );
    assert_eq!(phase, "Succeeded", "the pod could not reach the API server:\n{log}");
    assert!(log.contains("\"versions\""), "no discovery document:\n{log}");
}
