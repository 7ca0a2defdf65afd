//! The opt-in not-ready taint on the embedded cluster, deployed as the
//! DaemonSet from `istio-cni-agent manifest`: node-1 registers with
//! `cni.istio.io/not-ready:NoSchedule`, and an app pod pinned to node-1 is
//! created before any agent runs, so it stays Pending (Unschedulable).
//!
//! - `taint.enabled` off: the agent installs and is Ready on node-1, yet the
//!   taint stays and the pod stays unscheduled; the rendered RBAC has no
//!   write on nodes and the agent's log shows no attempt.
//! - `taint.enabled=true`: the agent removes the taint from its own node
//!   once the plugin is installed; only then is the pod scheduled, and the
//!   runtime's CNI cache shows its network was set up with `istio-cni` in the
//!   chain (without the taint it would have been scheduled, and attached
//!   without the plugin, before any agent ran). node-0 never had the taint
//!   and is left alone.
//!
//! The app pod lives in `kube-system`, a namespace the plugin excludes: on
//! the embedded cluster the runtime runs plugins on the host's filesystem,
//! where the DaemonSet's kubeconfig path (`/var/run/istio-cni/...`, inside
//! the node's tree here) does not exist, so a pod the plugin must look up
//! cannot start. Whether the plugin was in the chain is what matters.
//!
//! Needs root (or ci/test's user namespace).

mod daemonset_support;

use std::time::Duration;

use daemonset_support::{
    NS, Setup, agent_pod, apply, cluster, conflists, delete_daemonset, has_entry, node_files, rollout, setup,
};
use istio_cni_kind::cluster::Cluster;
use istio_cni_kind::node::{NodeSpec, NodeTaint};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use testkit::Kubectl;
use testkit::pods::running;

const TAINT: &str = "cni.istio.io/not-ready";
const WAIT: Duration = Duration::from_secs(120);

const APP_NS: &str = "kube-system";

/// Istio's sample app, pinned to `node` by nodeSelector (the scheduler decides).
fn app_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "hello", "image": "fake.docker.io/google-samples/hello-go-gke:1.0"}]
        }
    }))
    .expect("a pod")
}

/// The conflist the runtime attached pod `name` with, from its CNI cache on `node`.
fn attached_with(cluster: &Cluster, node: &str, name: &str) -> Vec<u8> {
    let local = cluster.local().expect("a local cluster");
    let node = local
        .nodes()
        .iter()
        .find(|n| n.name() == node)
        .unwrap_or_else(|| panic!("no node {node}"));
    let entries = istio_cni_kind::cni::cache::list(&node.cni_cache_dir(), None);
    entries
        .into_iter()
        .find(|e| e.cni_args.iter().any(|(k, v)| k == "K8S_POD_NAME" && v == name))
        .map(|e| e.config)
        .unwrap_or_else(|| panic!("no CNI cache entry for pod {name}"))
}

fn unschedulable(p: &Pod) -> bool {
    let conditions = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
}

fn bound_node(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn taints(kubectl: &Kubectl, node: &str) -> String {
    kubectl.ok(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
    ])
}

#[test]
fn the_not_ready_taint_holds_pods_until_the_agent_has_installed_the_plugin() {
    let test = "the_not_ready_taint_holds_pods_until_the_agent_has_installed_the_plugin";
    let Some(Setup {
        kubectl,
        cluster,
        scratch: _scratch,
    }) = setup(test, "not-ready-taint", |scratch| cluster(scratch, 1))
    else {
        return;
    };
    let taint = NodeTaint::new(TAINT, "", "NoSchedule").expect("a taint");
    cluster
        .add_node(NodeSpec::new("node-1").taint(taint))
        .expect("adding the tainted node-1");
    let before = node_files(&cluster);
    let node1_conflist = conflists(&cluster)
        .into_iter()
        .find(|(n, _)| n == "node-1")
        .map(|(_, p)| p)
        .expect("node-1's conflist");

    let pods: Api<Pod> = Api::namespaced(cluster.client(), APP_NS);
    cluster
        .block_on(pods.create(&PostParams::default(), &app_pod("app", "node-1")))
        .expect("creating the app pod");
    cluster
        .wait_for_pod(APP_NS, "app", WAIT, unschedulable)
        .expect("the scheduler refuses node-1 while it is tainted");

    // Off (the default): installed and Ready, the taint stays.
    apply(&kubectl, &[]);
    rollout(&kubectl);
    assert_eq!(taints(&kubectl, "node-1").trim(), format!("{TAINT}:NoSchedule"));
    assert!(has_entry(&std::fs::read(&node1_conflist).unwrap_or_default()));
    let app = cluster.block_on(pods.get("app")).expect("the pod");
    assert_eq!(bound_node(&app), None, "scheduled onto a tainted node: {app:?}");
    let rules = kubectl.ok(&["get", "clusterroles", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(!rules.contains("istio-cni-taint"), "{rules}");
    let log = cluster
        .pod_logs(NS, &agent_pod(&kubectl, "node-1"), "install-cni")
        .expect("the agent's log");
    // Every outcome of an attempt is logged (removed, absent, failed).
    for attempt in ["removed taint", "has no taint", "removing taint"] {
        assert!(
            !log.contains(attempt),
            "the agent acted on the taint while disabled:\n{log}"
        );
    }
    delete_daemonset(&kubectl);
    assert_eq!(node_files(&cluster), before, "node files after the first uninstall");

    // On: the agent removes the taint once installed, then the pod is scheduled.
    apply(&kubectl, &["taint.enabled=true"]);
    let app = cluster
        .wait_for_pod(APP_NS, "app", WAIT, |p| bound_node(p).is_some())
        .expect("the pod is scheduled once the taint is gone");
    assert_eq!(bound_node(&app), Some("node-1"));
    assert!(
        has_entry(&std::fs::read(&node1_conflist).unwrap_or_default()),
        "the pod was scheduled while node-1 has no istio-cni entry"
    );
    cluster.wait_for_pod(APP_NS, "app", WAIT, running).unwrap_or_else(|e| {
        let events = kubectl.run(&["-n", APP_NS, "get", "events", "-o", "wide"]);
        panic!("the app pod does not run: {e}\nevents:\n{events}")
    });
    assert!(
        has_entry(&attached_with(&cluster, "node-1", "app")),
        "the app pod was attached without istio-cni in the chain"
    );
    rollout(&kubectl);
    assert_eq!(taints(&kubectl, "node-1").trim(), "", "the taint is gone from node-1");
    assert_eq!(taints(&kubectl, "node-0").trim(), "", "node-0 untouched");
    let log = cluster
        .pod_logs(NS, &agent_pod(&kubectl, "node-1"), "install-cni")
        .expect("the agent's log");
    assert!(
        log.contains(&format!("removed taint {TAINT} from node node-1")),
        "{log}"
    );
    let log0 = cluster
        .pod_logs(NS, &agent_pod(&kubectl, "node-0"), "install-cni")
        .expect("node-0 agent's log");
    assert!(log0.contains(&format!("node node-0 has no taint {TAINT}")), "{log0}");

    cluster
        .block_on(pods.delete("app", &Default::default()))
        .expect("deleting the pod");
    kubectl.ok(&["-n", APP_NS, "wait", "--for=delete", "pod/app", "--timeout=120s"]);
    delete_daemonset(&kubectl);
    assert_eq!(node_files(&cluster), before, "node files after the second uninstall");
}
