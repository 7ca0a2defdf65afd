//! Nodes joining and leaving a running embedded cluster, and their
//! heartbeats: a node added later registers with its taints and labels,
//! is Ready, gets the DaemonSet's pod and takes pods; a removed node's
//! pods, Node object and namespace go away; a node whose heartbeat stops
//! becomes `Ready=Unknown` and tainted `unreachable` (and recovers); the
//! CLI's `node add|list|remove` and `up --image` work end to end.
//!
//! Needs root (and kubectl for the CLI test); skips with `SKIP:`
//! otherwise (panics under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`). Every wait is
//! a watch (`await_condition`, `kubectl wait`), never a sleep loop.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::kubelet::ImageTable;
use istio_cni_kind::kubelet::heartbeat::Heartbeat;
use istio_cni_kind::node::{NodeSpec, NodeTaint};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use serde_json::json;
use testkit::{Kubectl, Need, Scratch};

const WAIT: Duration = Duration::from_secs(60);

fn spec(heartbeat: Heartbeat) -> ClusterSpec {
    ClusterSpec {
        nodes: 1,
        images: ImageTable::new().add("mesh-probe", env!("CARGO_BIN_EXE_mesh-probe"), &[]),
        heartbeat,
        ..ClusterSpec::default()
    }
}

fn wait<K>(cluster: &Cluster, api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> Option<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    cluster
        .block_on(async { tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond)).await })
        .unwrap_or_else(|_| panic!("{name}: {what}: timed out"))
        .unwrap_or_else(|e| panic!("{name}: {what}: {e}"))
}

fn ready_status(node: &Node) -> Option<String> {
    let conds = node.status.as_ref()?.conditions.as_ref()?;
    conds.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

fn taint_keys(node: &Node) -> Vec<String> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    taints.into_iter().map(|t| format!("{}:{}", t.key, t.effect)).collect()
}

/// Watches the pods matching `selector` until `found` finds one.
fn wait_pods(cluster: &Cluster, api: &Api<Pod>, selector: &str, found: impl Fn(&[Pod]) -> Option<Pod>) -> Pod {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let stream = watcher(api.clone(), watcher::Config::default().labels(selector)).default_backoff();
    let (store, writer) = kube::runtime::reflector::store();
    let mut events = kube::runtime::reflector(writer, stream).boxed();
    let look = async {
        while let Some(event) = events.next().await {
            if event.is_ok() {
                let now: Vec<Pod> = store.state().iter().map(|p| (**p).clone()).collect();
                if let Some(p) = found(&now) {
                    return p;
                }
            }
        }
        panic!("pods {selector}: the watch ended")
    };
    cluster
        .block_on(async { tokio::time::timeout(WAIT, look).await })
        .unwrap_or_else(|_| panic!("pods {selector}: timed out"))
}

fn running(p: Option<&Pod>) -> bool {
    p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running")
}

#[test]
fn a_node_joins_takes_pods_and_its_daemon_then_leaves_with_them() {
    const TEST: &str = "a_node_joins_takes_pods_and_its_daemon_then_leaves_with_them";
    if !testkit::gate(TEST, &[Need::Root, Need::Tool("ip"), Need::CniPlugins]) {
        return;
    }
    let cluster = Cluster::create(spec(Heartbeat::default())).expect("cluster");
    let client = cluster.client();
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "daemon"},
        "spec": {"selector": {"matchLabels": {"app": "daemon"}},
            "template": {"metadata": {"labels": {"app": "daemon"}},
                "spec": {"containers": [{"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "9000"]}]}}}
    }))
    .unwrap();
    cluster
        .block_on(dss.create(&PostParams::default(), &ds))
        .expect("daemonset");

    let joined = NodeSpec::new("late")
        .taint("dedicated=late:NoSchedule".parse::<NodeTaint>().unwrap())
        .label("zone", "late");
    cluster.add_node(joined).expect("add node");
    let nodes: Api<Node> = Api::all(client.clone());
    let node = cluster
        .block_on(nodes.get("late"))
        .expect("the Node object exists when add_node returns");
    assert_eq!(ready_status(&node).as_deref(), Some("True"));
    assert_eq!(taint_keys(&node), ["dedicated:NoSchedule"]);
    assert_eq!(node.metadata.labels.as_ref().unwrap()["zone"], "late");
    assert!(cluster.local().unwrap().node("late").is_some());
    assert!(
        cluster.add_node(NodeSpec::new("late")).is_err(),
        "a duplicate name is refused"
    );

    // The DaemonSet's pod comes to the new node (its taint is tolerated by
    // none of the template's tolerations: the daemon tolerates it explicitly).
    let patch = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}}}});
    cluster
        .block_on(dss.patch("daemon", &Default::default(), &kube::api::Patch::Merge(patch)))
        .expect("tolerate the taint");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let on_late = |list: &[Pod]| {
        list.iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("late"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let daemon_on_late = wait_pods(&cluster, &pods, "app=daemon", |list| {
        on_late(list).into_iter().find(|p| running(Some(p)))
    });
    let daemon_name = daemon_on_late.metadata.name.clone().unwrap();

    // A pod that selects the node and tolerates its taint runs there.
    let pinned: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {"nodeSelector": {"zone": "late"},
            "tolerations": [{"key": "dedicated", "value": "late", "effect": "NoSchedule"}],
            "containers": [{"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}
    }))
    .unwrap();
    cluster
        .block_on(pods.create(&PostParams::default(), &pinned))
        .expect("pod");
    let pinned = wait(&cluster, &pods, "pinned", "Running", running).expect("pinned");
    assert_eq!(pinned.spec.unwrap().node_name.as_deref(), Some("late"));

    let netns = cluster
        .local()
        .unwrap()
        .node("late")
        .unwrap()
        .netns()
        .path()
        .to_path_buf();
    cluster.remove_node("late").expect("remove node");
    assert!(
        cluster.block_on(nodes.get_opt("late")).unwrap().is_none(),
        "Node object deleted"
    );
    for gone in ["pinned", daemon_name.as_str()] {
        assert!(
            cluster.block_on(pods.get_opt(gone)).unwrap().is_none(),
            "{gone} deleted with its node"
        );
    }
    assert!(cluster.local().unwrap().node("late").is_none());
    assert!(!netns.exists(), "the node's namespace is gone");
    assert!(matches!(
        cluster.remove_node("late"),
        Err(istio_cni_kind::cluster::ClusterError::NoSuchNode(_))
    ));
    // The name can join again (a new node: new address, new pod CIDR).
    cluster.add_node(NodeSpec::new("late")).expect("rejoin");
    cluster.delete().expect("teardown leaves nothing behind");
}

#[test]
fn a_silent_node_becomes_unknown_and_unreachable_then_recovers() {
    const TEST: &str = "a_silent_node_becomes_unknown_and_unreachable_then_recovers";
    if !testkit::gate(TEST, &[Need::Root, Need::Tool("ip"), Need::CniPlugins]) {
        return;
    }
    let heartbeat = Heartbeat {
        interval: Duration::from_millis(200),
        grace: Duration::from_secs(2),
    };
    let cluster = Cluster::create(spec(heartbeat)).expect("cluster");
    let nodes: Api<Node> = Api::all(cluster.client());
    let local = cluster.local().unwrap();
    local.stop_heartbeat("node-0").expect("silence");
    let node = wait(
        &cluster,
        &nodes,
        "node-0",
        "Ready=Unknown and tainted",
        |n: Option<&Node>| n.is_some_and(|n| ready_status(n).as_deref() == Some("Unknown") && taint_keys(n).len() == 2),
    )
    .unwrap();
    assert_eq!(
        taint_keys(&node),
        [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute"
        ]
    );
    let ready = node
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    // The scheduler keeps new pods off it.
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "echo", "image": "mesh-probe", "args": ["echo"]}]}}))
    .unwrap();
    cluster.block_on(pods.create(&PostParams::default(), &pod)).unwrap();
    let unschedulable = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"))
    };
    let p = wait(&cluster, &pods, "p", "unschedulable", unschedulable).unwrap();
    let message = p.status.unwrap().conditions.unwrap()[0].message.clone().unwrap();
    assert_eq!(
        message,
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."
    );

    local.resume_heartbeat("node-0").expect("resume");
    wait(
        &cluster,
        &nodes,
        "node-0",
        "Ready again, untainted",
        |n: Option<&Node>| n.is_some_and(|n| ready_status(n).as_deref() == Some("True") && taint_keys(n).is_empty()),
    );
    wait(&cluster, &pods, "p", "Running once the node is back", running);
}

/// `istio-cni-cluster up --image ...`, then `node add|list|remove` from
/// another process, with kubectl.
#[test]
fn cli_node_add_list_remove_and_image_entries() {
    const TEST: &str = "cli_node_add_list_remove_and_image_entries";
    if !testkit::gate(
        TEST,
        &[Need::Root, Need::Tool("ip"), Need::CniPlugins, Need::Tool("kubectl")],
    ) {
        return;
    }
    let home = Scratch::new("nodes-cli");
    let bin = env!("CARGO_BIN_EXE_istio-cni-cluster");
    let name = format!("nodes-cli-{}", std::process::id());
    let image = format!("example.com/tools/echo:1={}", env!("CARGO_BIN_EXE_mesh-probe"));
    let mut up = Command::new(bin)
        .args(["up", "--name", &name, "--image", &image])
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("up");
    // Kept open until `up` exits: it prints as it tears down.
    let mut output = BufReader::new(up.stdout.take().unwrap()).lines();
    let kubeconfig = output
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("kubeconfig: ").map(str::to_string))
        .expect("up prints its kubeconfig");
    let node_cmd = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("node")
            .args(args)
            .args(["--cluster", &name])
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .output()
            .expect("node command");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    let k = Kubectl::new(TEST, std::path::Path::new(&kubeconfig), &home).expect("kubectl");

    let (ok, out) = node_cmd(&[
        "add",
        "--register-with-taints",
        "dedicated=x:NoSchedule",
        "--node-labels",
        "zone=b",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("node-1") && out.contains("dedicated=x:NoSchedule"),
        "{out}"
    );
    let (ok, list) = node_cmd(&["list"]);
    assert!(ok, "{list}");
    let line = list
        .lines()
        .find(|l| l.starts_with("node-1"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("Ready") && line.contains("10."), "{list}");
    let (ok, out) = node_cmd(&["add", "--register-with-taints", "k=v:Sometimes"]);
    assert!(!ok && out.contains("effect \"Sometimes\" is not one of"), "{out}");

    // The --image entry runs, on the new node (selected and tolerated).
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tool", "namespace": "default"},
        "spec": {"nodeSelector": {"zone": "b"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "echo", "image": "example.com/tools/echo:1", "args": ["echo", "--port", "8080"]}]}});
    k.run_with_stdin(&["apply", "-f", "-"], Some(pod.to_string().as_bytes()))
        .ok();
    k.ok(&["wait", "--for=condition=Ready", "pod/tool", "--timeout=60s"]);
    assert_eq!(
        k.ok(&["get", "pod", "tool", "-o", "jsonpath={.spec.nodeName}"]),
        "node-1"
    );
    assert!(k.ok(&["logs", "tool"]).contains("listening"));

    let (ok, out) = node_cmd(&["remove", "node-1"]);
    assert!(ok, "{out}");
    assert!(!out.contains("node-1") && out.contains("node-0"), "{out}");
    assert!(k.run(&["get", "pod", "tool"]).stderr.contains("NotFound"));
    assert!(k.run(&["get", "node", "node-1"]).stderr.contains("NotFound"));
    let (ok, out) = node_cmd(&["remove", "node-1"]);
    assert!(!ok && out.contains("no node \"node-1\""), "{out}");

    let down = Command::new(bin)
        .args(["down", "--name", &name])
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let rest: Vec<String> = output.map_while(Result::ok).collect();
    assert!(up.wait().unwrap().success(), "{rest:?}");
    let (ok, out) = node_cmd(&["list"]);
    assert!(!ok && out.contains("is running"), "{out}");
}
