//! The DaemonSet controller on a 2-node local cluster: one Running pod per
//! node, the status `kubectl rollout status` waits for, a deleted pod
//! recreated, a template change rolled out one node at a time, and the
//! DaemonSet's deletion taking its pods along.
//!
//! Needs root (an ordinary user's run re-runs itself as root of a user
//! namespace: `testkit::gate_or_userns`; skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`). The kubectl step needs kubectl on
//! PATH (`. ci/env`).

use std::collections::BTreeSet;

use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Resource, ResourceExt};
use serde_json::json;

mod workload_support;
use workload_support::{WAIT, node_of, ready, record_pods, two_node_cluster as cluster, wait_object, wait_pods};

fn daemonset(name: &str, port: u16) -> DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "echo", "image": "mesh-probe",
                    "args": ["echo", "--port", port.to_string()]}]}
            }
        }
    }))
    .unwrap()
}

/// The DaemonSet's status says every pod is current and available, for the
/// latest generation (what `kubectl rollout status` waits for).
fn rolled_out(want: i32) -> impl Condition<DaemonSet> {
    move |ds: Option<&DaemonSet>| {
        let Some(ds) = ds else { return false };
        let Some(s) = &ds.status else { return false };
        s.observed_generation == ds.meta().generation
            && s.desired_number_scheduled == want
            && s.current_number_scheduled == want
            && s.number_ready == want
            && s.number_available == Some(want)
            && s.updated_number_scheduled == Some(want)
    }
}

/// Runs kubectl (from PATH: `. ci/env`) against the cluster's `default`
/// namespace; its stdout, or a panic with its output when it fails.
fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["-n", "default"])
        .args(args)
        .output()
        .expect("kubectl on PATH (. ci/env)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A 2-node cluster with `ds` created in the `default` namespace, and that
/// namespace's DaemonSets and pods, when the test may run.
fn setup(test: &str, ds: &DaemonSet) -> Option<(Cluster, Api<DaemonSet>, Api<Pod>)> {
    if !testkit::gate_or_userns(test, &[testkit::Need::Root]) {
        return None;
    }
    let cluster = cluster();
    let (dss, pods): (Api<DaemonSet>, _) = (
        Api::namespaced(cluster.client(), "default"),
        Api::namespaced(cluster.client(), "default"),
    );
    cluster.block_on(dss.create(&PostParams::default(), ds)).unwrap();
    Some((cluster, dss, pods))
}

fn one_running_pod_per_node(pods: &[Pod]) -> bool {
    let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
    pods.len() == 2 && nodes.len() == 2 && pods.iter().all(ready)
}

#[test]
fn a_daemonset_runs_one_pod_per_node_and_rolls_out() {
    let Some((cluster, dss, pods)) = setup(testkit::test_name!(), &daemonset("probe", 8080)) else {
        return;
    };
    let ds = wait_object(&cluster, &dss, "probe", "rolled out", rolled_out(2));
    let status = ds.status.unwrap();
    assert_eq!((status.number_misscheduled, status.number_unavailable), (0, None));

    let running = cluster.block_on(wait_pods(pods.clone(), "app=probe", one_running_pod_per_node));
    for p in &running {
        assert!(
            p.name_any().starts_with("probe-") && p.name_any().len() == "probe-".len() + 5,
            "{}",
            p.name_any()
        );
        let owner = &p.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("DaemonSet", "probe"));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert!(p.labels().contains_key("controller-revision-hash"), "{:?}", p.labels());
        assert_eq!(p.labels().get("pod-template-generation").map(String::as_str), Some("1"));
        let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable")),
            "{tolerations:?}"
        );
    }

    // kubectl agrees that the rollout is complete, and shows the numbers.
    let out = kubectl(&cluster, &["rollout", "status", "ds/probe", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let row = kubectl(&cluster, &["get", "ds", "probe", "--no-headers"]);
    let row: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        row[..6],
        ["probe", "2", "2", "2", "2", "2"],
        "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE"
    );

    // A deleted pod comes back on its node.
    let victim = running[0].clone();
    cluster
        .block_on(pods.delete(&victim.name_any(), &DeleteParams::default()))
        .unwrap();
    let again = cluster.block_on(wait_pods(pods.clone(), "app=probe", |ps| {
        one_running_pod_per_node(ps) && ps.iter().all(|p| p.name_any() != victim.name_any())
    }));
    assert!(again.iter().any(|p| node_of(p) == node_of(&victim)));

    // Deleting the DaemonSet deletes its pods.
    cluster.block_on(dss.delete("probe", &DeleteParams::default())).unwrap();
    cluster.block_on(wait_pods(pods.clone(), "app=probe", <[Pod]>::is_empty));
    let left = cluster.block_on(pods.list(&ListParams::default())).unwrap();
    assert!(
        left.items.is_empty(),
        "{:?}",
        left.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    cluster.delete().unwrap();
}

#[test]
fn a_template_change_replaces_pods_one_node_at_a_time() {
    let Some((cluster, dss, pods)) = setup(testkit::test_name!(), &daemonset("roll", 8080)) else {
        return;
    };
    wait_object(&cluster, &dss, "roll", "rolled out", rolled_out(2));
    let first = cluster.block_on(wait_pods(pods.clone(), "app=roll", one_running_pod_per_node));
    let first: BTreeSet<String> = first.iter().map(ResourceExt::name_any).collect();

    // Record, at every pod event, how many pods exist and how many are Ready.
    let (seen, recorder) = record_pods(&cluster, pods.clone(), "app=roll");

    let change = json!({"spec": {"template": {"spec": {"containers": [{"name": "echo", "image": "mesh-probe",
        "args": ["echo", "--port", "9090"]}]}}}});
    let changed = cluster
        .block_on(dss.patch("roll", &PatchParams::default(), &Patch::Strategic(change)))
        .or_else(|_| {
            // Without strategic merge support: the whole template.
            let mut ds = cluster.block_on(dss.get("roll"))?;
            ds.spec.as_mut().unwrap().template = daemonset("roll", 9090).spec.unwrap().template;
            cluster.block_on(dss.replace("roll", &PostParams::default(), &ds))
        })
        .unwrap();
    assert_eq!(changed.meta().generation, Some(2));
    wait_object(&cluster, &dss, "roll", "rolled out", rolled_out(2));
    let second = cluster.block_on(wait_pods(pods.clone(), "app=roll", one_running_pod_per_node));
    recorder.abort();

    for p in &second {
        assert!(!first.contains(&p.name_any()), "{} was not replaced", p.name_any());
        assert_eq!(p.labels().get("pod-template-generation").map(String::as_str), Some("2"));
        let args = p.spec.as_ref().unwrap().containers[0].args.clone().unwrap_or_default();
        assert!(args.contains(&"9090".to_string()), "{args:?}");
    }
    let seen = seen.lock().unwrap().clone();
    eprintln!("(pods, ready) at each event of the rollout: {seen:?}");
    assert!(seen.len() > 4, "the recorder saw the rollout: {seen:?}");
    // maxUnavailable 1 and maxSurge 0 on 2 nodes: never more than 2 pods,
    // never fewer than 1 Ready.
    assert!(seen.iter().all(|m| m.pods <= 2), "{seen:?}");
    assert!(seen.iter().all(|m| m.ready >= 1), "{seen:?}");
    cluster.delete().unwrap();
}

#[test]
fn node_selectors_and_taints_choose_the_nodes() {
    let mut ds = daemonset("picky", 8080);
    let template = ds.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    template.node_selector = Some([("kubernetes.io/hostname".to_string(), "node-1".to_string())].into());
    let Some((cluster, dss, pods)) = setup(testkit::test_name!(), &ds) else {
        return;
    };
    let nodes: Api<Node> = Api::all(cluster.client());
    wait_object(&cluster, &dss, "picky", "rolled out", rolled_out(1));
    let on = cluster.block_on(wait_pods(pods.clone(), "app=picky", |ps| {
        ps.len() == 1 && ps.iter().all(ready)
    }));
    assert_eq!(node_of(&on[0]), "node-1");

    // A cordoned node still gets its daemon (daemon pods tolerate
    // unschedulable): the pod deleted there is recreated.
    let taint = |taints: serde_json::Value| {
        let patch = Patch::Merge(json!({"spec": {"unschedulable": true, "taints": taints}}));
        cluster
            .block_on(nodes.patch("node-1", &PatchParams::default(), &patch))
            .unwrap();
    };
    let cordon = json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"});
    taint(json!([cordon]));
    let first = on[0].name_any();
    cluster.block_on(pods.delete(&first, &DeleteParams::default())).unwrap();
    let again = cluster.block_on(wait_pods(pods.clone(), "app=picky", |ps| {
        ps.len() == 1 && ps.iter().all(|p| ready(p) && p.name_any() != first)
    }));
    assert_eq!(node_of(&again[0]), "node-1");

    // An untolerated NoExecute taint evicts it and takes the node out of DESIRED.
    taint(json!([cordon, {"key": "maintenance", "effect": "NoExecute"}]));
    cluster.block_on(wait_pods(pods.clone(), "app=picky", <[Pod]>::is_empty));
    wait_object(&cluster, &dss, "picky", "rolled out", rolled_out(0));
    let after: Vec<String> = cluster
        .block_on(pods.list(&ListParams::default()))
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert!(after.is_empty(), "{after:?}");
    // The status catches up with the eviction on the controller's next pass.
    let misscheduled_cleared = await_condition(dss.clone(), "picky", |ds: Option<&DaemonSet>| {
        ds.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.number_misscheduled == 0)
    });
    cluster
        .block_on(async { tokio::time::timeout(WAIT, misscheduled_cleared).await })
        .unwrap_or_else(|_| panic!("daemonset picky: numberMisscheduled not 0 after {WAIT:?}"))
        .unwrap();
    cluster.delete().unwrap();
}
