//! Pods reach the API server at an address of their own family: on an
//! IPv6-only embedded cluster a (non-hostNetwork) pod has only an IPv6
//! address, so `KUBERNETES_SERVICE_HOST` must be IPv6 and served there; a
//! dual-stack cluster advertises its primary family (IPv4) as Kubernetes
//! does. The API check is kubectl's own in-cluster client (the environment,
//! the service-account token and CA): it proves the route, the listener,
//! the serving certificate's SAN for the literal and the URL's brackets.
//! And IPv6 pods on different nodes reach each other.
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
use testkit::Need;

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
    testkit::gate_or_return!(&[Need::Root, Need::Tool("ip"), Need::CniPlugins, Need::Tool("kubectl")]);
    let (phase, log, host) = check_in(IpFamily::Ipv6);
    assert!(host.is_ipv6(), "an IPv6-only pod was given {host}:\n{log}");
    assert_eq!(phase, "Succeeded", "the pod could not reach the API server:\n{log}");
    assert!(log.contains("\"versions\""), "no discovery document:\n{log}");
}

#[test]
fn a_dual_stack_pod_reaches_the_api_server_at_the_primary_family() {
    testkit::gate_or_return!(&[Need::Root, Need::Tool("ip"), Need::CniPlugins, Need::Tool("kubectl")]);
    let (phase, log, host) = check_in(IpFamily::DualStack);
    assert!(
        host.is_ipv4(),
        "a dual-stack cluster (IPv4 first) advertised {host}:\n{log}"
    );
    assert_eq!(phase, "Succeeded", "the pod could not reach the API server:\n{log}");
    assert!(log.contains("\"versions\""), "no discovery document:\n{log}");
}

/// The IPv6 side of the cluster network routes pod ranges between nodes as
/// the IPv4 one does: an IPv6-only pod reaches one on another node. The
/// client tries for a few seconds: a fresh IPv6 sandbox's first attempts
/// were seen lost for about a second (its addresses settling), on one node
/// as across nodes, while a sandbox a few seconds old connects at once.
#[test]
fn ipv6_only_pods_on_two_nodes_reach_each_other() {
    testkit::gate_or_return!(&[Need::Root, Need::Tool("ip"), Need::CniPlugins]);
    let cluster = Cluster::create(ClusterSpec {
        nodes: 2,
        ip_family: IpFamily::Ipv6,
        images: ImageTable::new().add("mesh-probe", env!("CARGO_BIN_EXE_mesh-probe"), &[]),
        ..ClusterSpec::default()
    })
    .unwrap();
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let pod = |name: &str, node: &str, args: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "mesh-probe", "args": args}]}
        }))
        .unwrap()
    };
    let echo = pod("echo", "node-0", json!(["echo", "--port", "8080"]));
    cluster.block_on(api.create(&PostParams::default(), &echo)).unwrap();
    let echo = cluster
        .wait_for_pod("default", "echo", Duration::from_secs(30), |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .unwrap();
    let ip: IpAddr = echo.status.unwrap().pod_ip.unwrap().parse().unwrap();
    assert!(ip.is_ipv6(), "{ip}");
    let target = std::net::SocketAddr::from((ip, 8080)).to_string();
    let client = pod(
        "client",
        "node-1",
        json!([
            "client",
            "--target",
            target,
            "--timeout",
            "1s",
            "--count",
            "6",
            "--interval",
            "500ms"
        ]),
    );
    cluster.block_on(api.create(&PostParams::default(), &client)).unwrap();
    let client = cluster
        .wait_for_pod("default", "client", Duration::from_secs(30), finished)
        .unwrap();
    let log = cluster.pod_logs("default", "client", "c").unwrap_or_default();
    assert!(
        client.status.is_some() && log.contains("\"event\":\"connected\""),
        "node-1 → [{ip}]:8080 on node-0:\n{log}"
    );
    cluster.delete().unwrap();
}
