//! Embedded-cluster timings, as medians:
//! - a 2-node cluster up and one pod Running (target: < 2 s on 2 cores);
//! - 100 pods on one node from creation to all Running (target: < 10 s);
//! - the baseline for both, measured in the same run: the bare per-pod work
//!   (a netns, the node's CNI ADD, spawning the process) without API server,
//!   kubelet or scheduler — the ratio is the harness's overhead.
//!
//! Run: `cargo bench -p istio-cni-kind --bench cluster` (needs root).

use std::time::{Duration, Instant};

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::{PodRef, RuntimeConf};
use istio_cni_kind::kubelet::ImageTable;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn mesh_probe() -> String {
    let exe = std::env::current_exe().expect("bench path");
    let target = exe
        .ancestors()
        .find(|p| p.ends_with("target"))
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    for profile in ["release", "debug"] {
        let candidate = target.join(profile).join("mesh-probe");
        if candidate.exists() {
            return candidate.display().to_string();
        }
    }
    panic!("build mesh-probe first: cargo build -p istio-cni-kind --release --bin mesh-probe");
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

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the cluster benchmark needs root to create network namespaces");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let up = median((0..7).map(|_| cluster_up()).collect());
    let bare_one = median((0..7).map(|_| bare(1)).collect());
    let hundred = median((0..3).map(|_| hundred_pods()).collect());
    let bare_hundred = median((0..3).map(|_| bare(100)).collect());
    println!("embedded cluster, medians:");
    println!("  2-node cluster up + 1 pod Running: {up:.2?} (target < 2 s); bare pod work {bare_one:.2?}");
    println!(
        "  100 pods on one node to Running:   {hundred:.2?} (target < 10 s); bare pod work {bare_hundred:.2?}, ratio {:.1}x",
        hundred.as_secs_f64() / bare_hundred.as_secs_f64()
    );
}
