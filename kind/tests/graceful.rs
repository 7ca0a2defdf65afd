//! Graceful deletion on a local cluster, through kubectl: a pod's SIGTERM
//! handler and preStop hook run (in that order) within its grace period, a
//! process ignoring SIGTERM is SIGKILLed once the grace period is over,
//! finalizers hold objects, the garbage collector's background, foreground
//! and orphan cascades, a deleted namespace's and a deleted DaemonSet's pods
//! terminating gracefully.
//!
//! Containers run the `shell` image (`/bin/sh`, mapped by the test's
//! image table) and write markers into a scratch directory of this machine.
//! Needs root, the CNI plugins and kubectl (`. ci/env`); skips with `SKIP:`
//! otherwise (a panic under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod workload_support;

use std::path::Path;
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::Cluster;
use istio_cni_kind::kubelet::ImageTable;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use testkit::{Kubectl, Need, Scratch};
use workload_support::ptp_spec;

const WAIT: Duration = Duration::from_secs(60);

struct Env {
    cluster: Cluster,
    kubectl: Kubectl,
    scratch: Scratch,
}

fn env(test: &str, nodes: u32) -> Option<Env> {
    if !testkit::gate(test, &[Need::Root, Need::Tool("ip"), Need::CniPlugins]) {
        return None;
    }
    let scratch = Scratch::new(test);
    let cluster = Cluster::create(ptp_spec(nodes, ImageTable::new().add("shell", "/bin/sh", &[]))).unwrap();
    let kubectl = Kubectl::new(test, cluster.kubeconfig_path(), scratch.path())?;
    Some(Env {
        cluster,
        kubectl,
        scratch,
    })
}

/// A pod running `script` in `sh -c`, with `$M` naming `marker`.
fn shell_pod(name: &str, script: &str, marker: &Path) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "shell", "args": ["-c", script],
            "env": [{"name": "M", "value": marker.to_str().unwrap()}]}]}
    })
}

/// `trap` scripts: the shell waits in `wait`, which a trapped signal interrupts.
const TRAPS_TERM: &str = "trap 'echo term >> $M; exit 0' TERM; echo started >> $M; sleep 1000 & wait";
const IGNORES_TERM: &str = "trap '' TERM; echo started >> $M; while true; do sleep 0.1; done";

fn create(env: &Env, obj: &Value) {
    let yaml = serde_json::to_vec(obj).unwrap();
    env.kubectl.run_with_stdin(&["create", "-f", "-"], Some(&yaml)).ok();
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn wait_running(env: &Env, name: &str, marker: &Path) {
    env.cluster.wait_for_pod("default", name, WAIT, running).unwrap();
    wait_until(&format!("{name} started"), || read(marker).contains("started"));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gone<K>(env: &Env, api: &Api<K>, name: &str) -> bool
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    env.cluster.block_on(api.get_opt(name)).unwrap().is_none()
}

fn reasons(env: &Env, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(env.cluster.client(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    let list = env.cluster.block_on(events.list(&lp)).unwrap();
    list.items.into_iter().filter_map(|e| e.reason).collect()
}

#[test]
fn sigterm_handlers_and_pre_stop_hooks_run_within_the_grace_period_then_sigkill() {
    let Some(env) = env(
        "sigterm_handlers_and_pre_stop_hooks_run_within_the_grace_period_then_sigkill",
        1,
    ) else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(env.cluster.client(), "default");

    // A container that traps SIGTERM, with a preStop hook: the hook, then
    // the handler, then the pod is gone (kubectl waits for that).
    let marker = env.scratch.join("trap.log");
    let mut pod = shell_pod("trap", TRAPS_TERM, &marker);
    pod["spec"]["containers"][0]["lifecycle"] =
        json!({"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> $M"]}}});
    create(&env, &pod);
    wait_running(&env, "trap", &marker);
    env.kubectl
        .ok(&["delete", "pod", "trap", "--grace-period=5", "--timeout=60s"]);
    assert!(gone(&env, &pods, "trap"));
    assert_eq!(read(&marker), "started\nprestop\nterm\n", "preStop before SIGTERM");
    let seen = reasons(&env, "trap");
    assert!(seen.iter().any(|r| r == "Killing"), "{seen:?}");

    // A container ignoring SIGTERM: marked with its grace period, then
    // SIGKILLed once it is over, and only then removed.
    let marker = env.scratch.join("stubborn.log");
    create(&env, &shell_pod("stubborn", IGNORES_TERM, &marker));
    wait_running(&env, "stubborn", &marker);
    let started = Instant::now();
    env.kubectl
        .ok(&["delete", "pod", "stubborn", "--grace-period=3", "--wait=false"]);
    let marked = env.cluster.block_on(pods.get("stubborn")).unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(3));
    wait_until("stubborn gone", || gone(&env, &pods, "stubborn"));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3),
        "removed after {elapsed:?}, before its grace period"
    );
    let killed = env
        .cluster
        .local()
        .unwrap()
        .nodes()
        .iter()
        .all(|n| n.pod_ids().is_empty());
    assert!(killed, "the sandbox was torn down");
    // The process is dead: nothing writes, nothing of it runs.
    assert!(!process_running(IGNORES_TERM), "the container's shell was SIGKILLed");
}

/// Whether a process whose command line contains `script` still runs.
fn process_running(script: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains(script)
    })
}

fn owned(name: &str, owner: &ConfigMap, block: bool) -> Value {
    json!({"name": name, "namespace": "default", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(),
        "uid": owner.uid().unwrap(), "blockOwnerDeletion": block}]})
}

/// An owner ConfigMap with a ConfigMap and a pod (running `script`) as dependents.
fn family(env: &Env, prefix: &str, script: &str, block: bool) -> (String, String, String) {
    let cms: Api<ConfigMap> = Api::namespaced(env.cluster.client(), "default");
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("{prefix}-owner")}})).unwrap();
    let owner = env
        .cluster
        .block_on(cms.create(&PostParams::default(), &owner))
        .unwrap();
    let dep_cm = format!("{prefix}-cm");
    create(
        env,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": owned(&dep_cm, &owner, block)}),
    );
    let dep_pod = format!("{prefix}-pod");
    let marker = env.scratch.join(format!("{prefix}.log"));
    let mut pod = shell_pod(&dep_pod, script, &marker);
    pod["metadata"] = owned(&dep_pod, &owner, block);
    create(env, &pod);
    wait_running(env, &dep_pod, &marker);
    (owner.name_any(), dep_cm, dep_pod)
}

#[test]
fn finalizers_hold_objects_and_cascades_follow_the_propagation_policy() {
    let Some(env) = env("finalizers_hold_objects_and_cascades_follow_the_propagation_policy", 1) else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(env.cluster.client(), "default");
    let pods: Api<Pod> = Api::namespaced(env.cluster.client(), "default");

    // A finalizer keeps a ConfigMap until it is removed.
    create(
        &env,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    );
    env.kubectl.ok(&["delete", "configmap", "held", "--wait=false"]);
    let held = env.cluster.block_on(cms.get("held")).unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let added = env.kubectl.run(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold","example.com/more"]}}"#,
    ]);
    assert!(!added.success(), "no new finalizer while deleting: {added}");
    env.kubectl.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(gone(&env, &cms, "held"));

    // Background (kubectl's default): the owner goes at once, its
    // dependents after it.
    let (owner, dep_cm, dep_pod) = family(&env, "bg", TRAPS_TERM, false);
    env.kubectl.ok(&["delete", "configmap", &owner, "--wait=false"]);
    assert!(gone(&env, &cms, &owner));
    wait_until("background dependents gone", || {
        gone(&env, &cms, &dep_cm) && gone(&env, &pods, &dep_pod)
    });
    assert!(
        read(&env.scratch.join("bg.log")).contains("term"),
        "the pod terminated gracefully"
    );

    // Foreground: the owner stays, marked, until its blocking dependents
    // are gone (the pod takes a second to stop).
    let slow = "trap 'sleep 1; echo term >> $M; exit 0' TERM; echo started >> $M; sleep 1000 & wait";
    let (owner, dep_cm, dep_pod) = family(&env, "fg", slow, true);
    env.kubectl
        .ok(&["delete", "configmap", &owner, "--cascade=foreground", "--wait=false"]);
    let marked = env.cluster.block_on(cms.get(&owner)).unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.finalizers, Some(vec!["foregroundDeletion".to_string()]));
    wait_until("foreground owner gone", || gone(&env, &cms, &owner));
    assert!(gone(&env, &pods, &dep_pod), "the blocking pod went before its owner");
    assert!(
        gone(&env, &cms, &dep_cm),
        "the blocking ConfigMap went before its owner"
    );
    assert!(read(&env.scratch.join("fg.log")).contains("term"));

    // Orphan: the owner goes, its dependents stay without the reference.
    let (owner, dep_cm, dep_pod) = family(&env, "or", TRAPS_TERM, true);
    env.kubectl
        .ok(&["delete", "configmap", &owner, "--cascade=orphan", "--wait=false"]);
    wait_until("orphaning owner gone", || gone(&env, &cms, &owner));
    let cm = env.cluster.block_on(cms.get(&dep_cm)).unwrap();
    let pod = env.cluster.block_on(pods.get(&dep_pod)).unwrap();
    assert!(cm.owner_references().is_empty(), "{:?}", cm.owner_references());
    assert!(pod.owner_references().is_empty(), "{:?}", pod.owner_references());
    std::thread::sleep(Duration::from_secs(1));
    let pod = env.cluster.block_on(pods.get(&dep_pod)).unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none(), "an orphan is not collected");

    // A deleted namespace waits for its pods to terminate, gracefully.
    env.kubectl.ok(&["create", "namespace", "doomed"]);
    let marker = env.scratch.join("doomed.log");
    let mut pod = shell_pod("resident", TRAPS_TERM, &marker);
    pod["metadata"]["namespace"] = json!("doomed");
    create(&env, &pod);
    env.cluster.wait_for_pod("doomed", "resident", WAIT, running).unwrap();
    wait_until("resident started", || read(&marker).contains("started"));
    env.kubectl.ok(&["delete", "namespace", "doomed", "--timeout=60s"]);
    assert_eq!(read(&marker), "started\nterm\n", "the namespace's pod got its SIGTERM");
}

#[test]
fn a_deleted_daemonsets_pods_terminate_gracefully() {
    let Some(env) = env("a_deleted_daemonsets_pods_terminate_gracefully", 2) else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(env.cluster.client(), "default");
    let dir = env.scratch.join("ds");
    std::fs::create_dir_all(&dir).unwrap();
    // Each pod writes to a file named after itself ($HOSTNAME is the pod's name).
    let script = "trap 'echo term >> $D/$HOSTNAME; exit 0' TERM; echo started >> $D/$HOSTNAME; sleep 1000 & wait";
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agents", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agents"}},
            "template": {
                "metadata": {"labels": {"app": "agents"}},
                "spec": {"terminationGracePeriodSeconds": 10, "containers": [{"name": "agent", "image": "shell",
                    "args": ["-c", script], "env": [{"name": "D", "value": dir.to_str().unwrap()}]}]}
            }
        }
    });
    create(&env, &ds);
    env.kubectl.ok(&["rollout", "status", "ds/agents", "--timeout=60s"]);
    let listed = |env: &Env| {
        let lp = ListParams::default().labels("app=agents");
        env.cluster.block_on(pods.list(&lp)).unwrap().items
    };
    let names: Vec<String> = listed(&env).iter().map(ResourceExt::name_any).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    wait_until("both started", || {
        names.iter().all(|n| read(&dir.join(n)).contains("started"))
    });
    env.kubectl.ok(&["delete", "daemonset", "agents", "--timeout=60s"]);
    wait_until("the daemonset's pods gone", || listed(&env).is_empty());
    for n in &names {
        assert_eq!(
            read(&dir.join(n)),
            "started\nterm\n",
            "pod {n}: its SIGTERM handler ran"
        );
    }
}
