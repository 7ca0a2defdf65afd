//! The scheduler through kubectl on a 2-node embedded cluster, as a user
//! meets it: a cordoned cluster leaves a new pod Pending with kube-
//! scheduler's reason until `uncordon`; taints keep pods without a
//! toleration off (and a removed taint lets them on); node affinity and
//! `nodeSelector` pick nodes, and a label added later schedules the pod
//! that waited for it; `drain` evicts a node's pods and cordons it.
//!
//! Needs root and kubectl (`. ci/env`); skips with `SKIP:` otherwise
//! (panics under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`). Waits are
//! `kubectl wait` (watches), never sleeps.

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::kubelet::ImageTable;
use serde_json::{Value, json};
use testkit::{Kubectl, Need, Scratch};

const WAIT: &str = "--timeout=60s";

fn cluster() -> Cluster {
    Cluster::create(ClusterSpec {
        nodes: 2,
        images: ImageTable::new().add("mesh-probe", env!("CARGO_BIN_EXE_mesh-probe"), &[]),
        ..ClusterSpec::default()
    })
    .expect("cluster")
}

/// An echo pod with `spec` merged into its spec.
fn pod(name: &str, spec: Value) -> String {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 0,
            "containers": [{"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}
    });
    if let (Some(base), Value::Object(extra)) = (pod["spec"].as_object_mut(), spec) {
        base.extend(extra);
    }
    pod.to_string()
}

fn apply(k: &Kubectl, manifest: &str) {
    k.run_with_stdin(&["apply", "-f", "-"], Some(manifest.as_bytes())).ok();
}

fn node_of(k: &Kubectl, pod: &str) -> String {
    k.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn wait_scheduled(k: &Kubectl, pod: &str) -> String {
    k.ok(&["wait", "--for=condition=PodScheduled", &format!("pod/{pod}"), WAIT]);
    node_of(k, pod)
}

/// Waits until the pod is marked unschedulable; the condition's message.
fn wait_unschedulable(k: &Kubectl, pod: &str) -> String {
    k.ok(&[
        "wait",
        "--for=condition=PodScheduled=False",
        &format!("pod/{pod}"),
        WAIT,
    ]);
    assert_eq!(node_of(k, pod), "", "{pod} must not be bound");
    k.ok(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}|{.status.conditions[?(@.type==\"PodScheduled\")].message}",
    ])
}

/// The messages of the FailedScheduling events about `pod`.
fn failed_scheduling(k: &Kubectl, pod: &str) -> Vec<String> {
    k.items(&["get", "events"])
        .iter()
        .filter(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == pod)
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn cordon_taints_affinity_and_drain_through_kubectl() {
    const TEST: &str = "cordon_taints_affinity_and_drain_through_kubectl";
    if !testkit::gate(TEST, &[Need::Root, Need::Tool("ip"), Need::CniPlugins]) {
        return;
    }
    let home = Scratch::new("scheduling");
    let cluster = cluster();
    let Some(k) = Kubectl::new(TEST, cluster.kubeconfig_path(), &home) else {
        return;
    };

    // Cordon: nothing fits, the pod waits with kube-scheduler's reason.
    k.ok(&["cordon", "node-0", "node-1"]);
    apply(&k, &pod("waits", json!({})));
    assert_eq!(
        wait_unschedulable(&k, "waits"),
        "Unschedulable|0/2 nodes are available: 2 node(s) were unschedulable."
    );
    assert_eq!(
        failed_scheduling(&k, "waits"),
        ["0/2 nodes are available: 2 node(s) were unschedulable."]
    );
    assert!(k.ok(&["get", "nodes"]).contains("SchedulingDisabled"));
    k.ok(&["uncordon", "node-1"]);
    assert_eq!(
        wait_scheduled(&k, "waits"),
        "node-1",
        "uncordon reschedules the waiting pod"
    );
    k.ok(&["wait", "--for=condition=Ready", "pod/waits", WAIT]);
    k.ok(&["uncordon", "node-0"]);

    // Taints and tolerations, with the reasons of both nodes counted.
    k.ok(&["taint", "node", "node-0", "dedicated=gpu:NoSchedule"]);
    k.ok(&["taint", "node", "node-1", "edge=:NoExecute"]);
    apply(&k, &pod("plain", json!({})));
    assert_eq!(
        wait_unschedulable(&k, "plain"),
        "Unschedulable|0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
         1 node(s) had untolerated taint {edge: }."
    );
    let tolerant =
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]});
    apply(&k, &pod("tolerant", tolerant));
    assert_eq!(wait_scheduled(&k, "tolerant"), "node-0");
    k.ok(&["taint", "node", "node-1", "edge-"]);
    assert_eq!(wait_scheduled(&k, "plain"), "node-1", "a removed taint lets the pod on");
    k.ok(&["taint", "node", "node-0", "dedicated-"]);

    // Node affinity and nodeSelector; a label added later schedules the waiting pod.
    k.ok(&["label", "node", "node-1", "zone=b"]);
    let affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}});
    apply(&k, &pod("in-b", affinity));
    assert_eq!(wait_scheduled(&k, "in-b"), "node-1");
    let by_name = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-0"]}]}]}}}});
    apply(&k, &pod("on-0", by_name));
    assert_eq!(wait_scheduled(&k, "on-0"), "node-0");
    apply(&k, &pod("in-c", json!({"nodeSelector": {"zone": "c"}})));
    assert_eq!(
        wait_unschedulable(&k, "in-c"),
        "Unschedulable|0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    k.ok(&["label", "node", "node-0", "zone=c"]);
    assert_eq!(wait_scheduled(&k, "in-c"), "node-0");

    // Drain: node-0's pods are evicted and it stays cordoned.
    k.ok(&["drain", "node-0", "--force", "--grace-period=0", "--timeout=60s"]);
    for gone in ["on-0", "in-c"] {
        let run = k.run(&["get", "pod", gone]);
        assert!(
            !run.success() && run.stderr.contains("NotFound"),
            "{gone} evicted: {run}"
        );
    }
    let cordoned = k.ok(&["get", "node", "node-0", "-o", "jsonpath={.spec.unschedulable}"]);
    assert_eq!(cordoned, "true");
    apply(&k, &pod("after-drain", json!({})));
    assert_eq!(wait_scheduled(&k, "after-drain"), "node-1");
}
