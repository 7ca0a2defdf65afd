//! Process-level CNI ADD as the runtime calls it (fork, exec, stdin config,
//! stdout result), against the embedded API server: a meshed pod (GET +
//! program), a non-meshed pod (GET + skip), an excluded-namespace pod (no
//! API). The floor for the meshed case, in the same run: one HTTP GET of the
//! pod plus `iptables-restore` of the same payload into a fresh netns.
//! Reports p50 and p99 over 200 pods each, and the meshed/floor ratio.
//!
//! Run: `cargo bench -p istio-cni --bench add` (needs root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use istio_cni::api::{Client, Target};
use istio_cni::capture::{CaptureConfig, NodeEnv};
use istio_cni::cni::add::PodApi;
use istio_cni::pod::PodInfo;
use istio_cni::redirect::Redirect;
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::node::Netns;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

const PODS: usize = 200;

fn istio_cni() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    let target = exe
        .ancestors()
        .find(|p| p.ends_with("target"))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for profile in ["release", "debug"] {
        let candidate = target.join(profile).join("istio-cni");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("build istio-cni first: cargo build --release -p istio-cni");
}

/// A fresh netns with an address (what the primary CNI leaves behind).
fn pod_netns(dir: &Path, i: usize) -> Netns {
    let ns = Netns::create(&dir.join(format!("bench-{i}"))).expect("netns");
    let ip = format!("10.99.{}.{}/16", i / 250, i % 250 + 2);
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
        vec!["addr", "add", &ip, "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
    ] {
        let ok = ns.command("ip").args(&args).status().is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?}");
    }
    ns
}

fn pod(name: &str, ns: &str, meshed: bool) -> Pod {
    let annotations = if meshed {
        json!({"sidecar.istio.io/status": "{}"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"nodeName": "not-a-node", "containers": [{"name": "app", "image": "app"}, {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"]}]}}))
    .expect("pod")
}

fn add(bin: &Path, conf: &str, netns: &Path, ns: &str, name: &str) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", format!("c-{name}"))
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
        )
        .env("ISTIO_CNI_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn istio-cni");
    let _ = child.stdin.take().expect("stdin").write_all(conf.as_bytes());
    let out = child.wait_with_output().expect("istio-cni");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "ADD {ns}/{name}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    took
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the ADD benchmark needs root to create network namespaces");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = istio_cni();
    let cluster = Cluster::create(ClusterSpec::default()).expect("cluster");
    let dir = std::env::temp_dir().join(format!("istio-cni-add-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("istio-cni-kubeconfig");
    let server = cluster.local().expect("the local backend").api();
    server
        .write_kubeconfig(&kubeconfig, &server.admin_token())
        .expect("kubeconfig");
    let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
        "cni_agent_run_dir": dir, "exclude_namespaces": ["kube-system"], "pod_namespace": "istio-system"})
    .to_string();

    let mut results = Vec::new();
    for (label, ns, meshed) in [
        ("meshed", "default", true),
        ("non-meshed", "default", false),
        ("excluded namespace", "kube-system", true),
    ] {
        let mut times = Vec::new();
        for i in 0..PODS {
            let name = format!("{}-{i}", label.replace(' ', "-"));
            let api: Api<Pod> = Api::namespaced(cluster.client(), ns);
            cluster
                .block_on(api.create(&PostParams::default(), &pod(&name, ns, meshed)))
                .expect("create pod");
            let netns = pod_netns(&dir, results.len() * PODS + i);
            times.push(add(&bin, &conf, netns.path(), ns, &name));
            let _ = netns.delete();
        }
        results.push((label, times));
    }

    // The floor: one GET of a meshed pod and a bare restore of its payload.
    let client = Client::new(Target::load(&kubeconfig).expect("kubeconfig"), Duration::from_secs(2)).expect("client");
    let mut floor = Vec::new();
    for i in 0..PODS {
        let netns = pod_netns(&dir, 3 * PODS + i);
        let start = Instant::now();
        let pod = client.get_pod("default", &format!("meshed-{i}")).expect("GET");
        let redirect = Redirect::from_pod(&PodInfo::from_pod(&pod)).expect("redirect");
        let payload =
            istio_cni::iptables::render(&CaptureConfig::new(&redirect, &NodeEnv::default(), false).expect("config"));
        let mut restore = netns
            .command("iptables-nft-restore")
            .arg("--noflush")
            .stdin(Stdio::piped())
            .spawn()
            .expect("restore");
        let _ = restore.stdin.take().expect("stdin").write_all(payload.v4.as_bytes());
        assert!(restore.wait().expect("restore").success());
        floor.push(start.elapsed());
        let _ = netns.delete();
    }
    let floor_p50 = percentile(&mut floor, 0.5);
    println!("process-level ADD, {PODS} pods each ({}):", bin.display());
    for (label, mut times) in results {
        let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
        let ratio = p50.as_secs_f64() / floor_p50.as_secs_f64();
        println!("  {label:<20} p50 {p50:>9.2?}  p99 {p99:>9.2?}  p50/floor {ratio:.2}x");
    }
    println!(
        "  floor (GET + bare iptables-nft-restore) p50 {floor_p50:.2?}  p99 {:.2?}",
        percentile(&mut floor, 0.99)
    );
    let _ = std::fs::remove_dir_all(&dir);
    cluster.delete().expect("teardown");
}
