//! `istio-cni` as the runtime calls it, with the node agent's pod cache in
//! the run dir and no kubeconfig: a pod the cache answers needs no API
//! server; a pod it cannot answer for goes to the API server (and here
//! fails closed, naming the missing kubeconfig).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Output;
use std::thread::JoinHandle;

use serde_json::json;

/// A fake agent answering every connection on `run_dir/pods.sock` with
/// `pod`, until `connections` have been served; returns the request lines.
fn agent(run_dir: &Path, pod: serde_json::Value, connections: usize) -> JoinHandle<Vec<String>> {
    let listener = UnixListener::bind(run_dir.join("pods.sock")).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..connections {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&chunk[..n]);
            }
            let body = pod.to_string();
            write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let request = String::from_utf8(request).unwrap();
            seen.push(request.lines().next().unwrap_or_default().to_string());
        }
        seen
    })
}

fn add(run_dir: &Path, uid: &str) -> Output {
    let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
        "cni_agent_run_dir": run_dir,
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
                       "ips": [{"address": "10.1.0.5/24", "interface": 0}], "dns": {}}});
    support::add_web_pod(&conf, Some(uid))
}

/// A pod without a sidecar: ADD passes its previous result through.
fn plain_pod(uid: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "app"}]}})
}

#[test]
fn a_pod_from_the_agents_cache_needs_no_api_server() {
    let run_dir = support::Scratch::new("node-cache-hit");
    let served = agent(&run_dir, plain_pod("u-1"), 1);
    let out = add(&run_dir, "u-1");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.1.0.5/24");
    assert_eq!(
        served.join().unwrap(),
        ["GET /api/v1/namespaces/default/pods/web HTTP/1.1"]
    );
}

#[test]
fn another_pod_under_the_name_or_no_agent_means_the_api_server() {
    // The cache holds the pod that had this name before (another uid).
    let run_dir = support::Scratch::new("node-cache-stale");
    let served = agent(&run_dir, plain_pod("u-old"), 1);
    let out = add(&run_dir, "u-new");
    served.join().unwrap();
    let no_agent = support::Scratch::new("node-cache-none");
    for out in [out, add(&no_agent, "u-new")] {
        assert_eq!(out.status.code(), Some(1));
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(e["code"], 11, "{e}");
        assert!(e["msg"].as_str().unwrap().contains("istio-cni-kubeconfig"), "{e}");
    }
}
