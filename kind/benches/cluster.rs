//! Embedded-cluster timings, as medians (printed, never asserted):
//! - the baseline: a 2-node cluster up and one pod Running;
//! - a 3-node cluster up, and up with the agent's DaemonSet
//!   (`istio-cni-agent manifest | kubectl apply -f -`, the agent image laid
//!   out as a directory) rolled out Ready on every node;
//! - a 100-pod Deployment rolled out on 3 nodes (`kubectl rollout status`);
//! - a `kubectl exec <pod> -- true` round trip;
//! - 100 pods on one node from creation to all Running, and the bare
//!   per-pod work (a netns, the node's CNI ADD, spawning the process)
//!   without API server, kubelet or scheduler — the ratio is the harness's
//!   overhead.
//!
//! Run: `. ci/env && cargo bench -p istio-cni-kind --bench cluster` (needs
//! root, the CNI plugins and, for the kubectl rows, the pinned kubectl).

use std::time::{Duration, Instant};

use std::path::Path;

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::{PodRef, RuntimeConf};
use istio_cni_kind::kubelet::ImageTable;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use testkit::{Kubectl, Scratch};

fn mesh_probe() -> String {
    testkit::workspace_bin("mesh-probe", "istio-cni-kind")
        .display()
        .to_string()
}

fn spec(nodes: u32) -> ClusterSpec {
    ClusterSpec {
        nodes,
        images: ImageTable::new().add("mesh-probe", mesh_probe(), &[]),
        ..ClusterSpec::default()
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [
        {"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}}))
    .expect("pod")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn all_running(cluster: &Cluster, n: usize, timeout: Duration) {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let deadline = Instant::now() + timeout;
    loop {
        let pods = cluster.block_on(api.list(&ListParams::default())).expect("list pods");
        let running = pods
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {running}/{n} pods Running after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// 2-node cluster up and a pod Running.
fn cluster_up() -> Duration {
    let start = Instant::now();
    let cluster = Cluster::create(spec(2)).expect("cluster");
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster
        .block_on(api.create(&PostParams::default(), &pod("web")))
        .expect("create pod");
    all_running(&cluster, 1, Duration::from_secs(30));
    let took = start.elapsed();
    cluster.delete().expect("teardown");
    took
}

/// 100 pods on one node, creation to all Running.
fn hundred_pods() -> Duration {
    let cluster = Cluster::create(spec(1)).expect("cluster");
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let start = Instant::now();
    for i in 0..100 {
        cluster
            .block_on(api.create(&PostParams::default(), &pod(&format!("web-{i}"))))
            .expect("create pod");
    }
    all_running(&cluster, 100, Duration::from_secs(60));
    let took = start.elapsed();
    cluster.delete().expect("teardown");
    took
}

/// The bare per-pod work for `n` pods on one node, without the control plane.
fn bare(n: usize) -> Duration {
    let cluster = Cluster::create(spec(1)).expect("cluster");
    let node = &cluster.local().expect("the local backend").nodes()[0];
    let network = node.select_network().expect("network").network;
    let start = Instant::now();
    let mut children = Vec::new();
    for i in 0..n {
        let id = format!("bare{i}");
        let sandbox = node.create_pod_netns(&id).expect("netns");
        let pod = PodRef {
            namespace: "default".into(),
            name: id.clone(),
            uid: id.clone(),
        };
        node.runner()
            .add(&network, &RuntimeConf::for_pod(&id, sandbox.path(), "eth0", &pod))
            .expect("CNI ADD");
        children.push(
            sandbox
                .command(mesh_probe())
                .args(["echo", "--port", "8080"])
                .spawn()
                .expect("spawn"),
        );
    }
    let took = start.elapsed();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    for i in 0..n {
        let id = format!("bare{i}");
        if let Some(sandbox) = node.pod_netns(&id) {
            let pod = PodRef {
                namespace: "default".into(),
                name: id.clone(),
                uid: id.clone(),
            };
            let _ = node
                .runner()
                .del(&network, &RuntimeConf::for_pod(&id, sandbox.path(), "eth0", &pod));
        }
        let _ = node.delete_pod_netns(&id);
    }
    cluster.delete().expect("teardown");
    took
}

/// The cluster's kubectl (its cache in `home`); `None` without kubectl.
fn kubectl(cluster: &Cluster, home: &Path) -> Option<Kubectl> {
    Kubectl::new("cluster bench", cluster.kubeconfig_path(), home)
}

/// `spec(nodes)` whose image table also has the agent's image directory
/// (agent and plugin, as agent/Dockerfile lays it out) under `images`.
fn agent_spec(nodes: u32, images: &Path) -> ClusterSpec {
    let agent = testkit::workspace_bin("istio-cni-agent", "istio-cni-agent");
    let plugin = testkit::workspace_bin("istio-cni", "istio-cni");
    let mut spec = spec(nodes);
    spec.images = spec
        .images
        .with_agent_dir(images, &agent, &plugin)
        .expect("laying out the agent image");
    spec
}

/// 3-node cluster up; with `agent`, then the agent's DaemonSet applied and
/// rolled out, one Ready pod on every node.
fn cluster_up_with_agent(agent: bool) -> Option<Duration> {
    let scratch = Scratch::new("bench-agent");
    let manifest = std::process::Command::new(testkit::workspace_bin("istio-cni-agent", "istio-cni-agent"))
        .arg("manifest")
        .output()
        .expect("istio-cni-agent manifest");
    assert!(manifest.status.success(), "istio-cni-agent manifest failed");
    let spec = agent_spec(3, &scratch.join("agent-image"));
    let start = Instant::now();
    let cluster = Cluster::create(spec).expect("cluster");
    if agent {
        let k = kubectl(&cluster, &scratch)?;
        k.ok(&["create", "namespace", "istio-system"]);
        k.run_with_stdin(&["apply", "-f", "-"], Some(&manifest.stdout)).ok();
        k.ok(&[
            "-n",
            "istio-system",
            "rollout",
            "status",
            "ds/istio-cni-node",
            "--timeout=120s",
        ]);
        let ready = k.ok(&[
            "-n",
            "istio-system",
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
        ]);
        let mut nodes: Vec<&str> = ready
            .split_whitespace()
            .filter_map(|p| p.strip_suffix("=True"))
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["node-0", "node-1", "node-2"], "agent pods Ready: {ready}");
    }
    let took = start.elapsed();
    cluster.delete().expect("teardown");
    Some(took)
}

/// A 100-replica Deployment on 3 nodes, from apply to rolled out.
fn hundred_pod_deployment() -> Option<Duration> {
    let scratch = Scratch::new("bench-deployment");
    let cluster = Cluster::create(spec(3)).expect("cluster");
    let k = kubectl(&cluster, &scratch)?;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 100,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}
            }
        }
    });
    let start = Instant::now();
    k.run_with_stdin(&["apply", "-f", "-"], Some(deployment.to_string().as_bytes()))
        .ok();
    k.ok(&["rollout", "status", "deploy/web", "--timeout=300s"]);
    let took = start.elapsed();
    let ready = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}"]);
    assert_eq!(ready, "100", "ready replicas");
    cluster.delete().expect("teardown");
    Some(took)
}

/// `kubectl exec <pod> -- true`, `runs` times on one pod: every round trip.
fn exec_round_trips(runs: usize) -> Option<Vec<Duration>> {
    let scratch = Scratch::new("bench-exec");
    let cluster = Cluster::create(spec(1)).expect("cluster");
    let k = kubectl(&cluster, &scratch)?;
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster
        .block_on(api.create(&PostParams::default(), &pod("web")))
        .expect("create pod");
    all_running(&cluster, 1, Duration::from_secs(30));
    let times = (0..runs)
        .map(|_| {
            let start = Instant::now();
            k.ok(&["exec", "web", "--", "true"]);
            start.elapsed()
        })
        .collect();
    cluster.delete().expect("teardown");
    Some(times)
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64())
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the cluster benchmark needs root to create network namespaces");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let up = median((0..7).map(|_| cluster_up()).collect());
    let up3: Vec<_> = (0..5).filter_map(|_| cluster_up_with_agent(false)).collect();
    let with_agent: Vec<_> = (0..5).filter_map(|_| cluster_up_with_agent(true)).collect();
    let deployment: Vec<_> = (0..3).filter_map(|_| hundred_pod_deployment()).collect();
    let exec = exec_round_trips(21);
    let bare_one = median((0..7).map(|_| bare(1)).collect());
    let hundred = median((0..3).map(|_| hundred_pods()).collect());
    let bare_hundred = median((0..3).map(|_| bare(100)).collect());

    let row = |what: &str, runs: usize, took: Option<Duration>| match took {
        Some(t) => println!("  {what:<58} {:>9.2?} {runs:>4}  {:>6}", t, ratio(t, up)),
        None => println!("  {what:<58} {:>9} {runs:>4}  (SKIP: no kubectl)", "-"),
    };
    let med = |v: Vec<Duration>| (!v.is_empty()).then(|| median(v));
    println!("embedded cluster, medians (ratio to the baseline of this run):");
    println!("  {:<58} {:>9} {:>4}  {:>6}", "", "median", "runs", "ratio");
    row("baseline: 2-node cluster up + 1 pod Running", 7, Some(up));
    row("3-node cluster up", up3.len(), med(up3));
    row(
        "3-node cluster up + agent DaemonSet Ready on every node",
        with_agent.len(),
        med(with_agent),
    );
    row(
        "100-pod Deployment rolled out (3 nodes, kubectl rollout status)",
        deployment.len(),
        med(deployment),
    );
    let exec_runs = exec.as_ref().map_or(0, Vec::len);
    row("kubectl exec <pod> -- true round trip", exec_runs, exec.and_then(med));
    row("100 pods on one node to Running (API)", 3, Some(hundred));
    println!(
        "  bare pod work: 1 pod {bare_one:.2?}, 100 pods {bare_hundred:.2?} (100 pods through the cluster: {})",
        ratio(hundred, bare_hundred)
    );
}
