//! The agent's pod cache socket against the embedded API server, read by
//! the plugin's own client: pods bound to this node are answered from the
//! watch, others are not, and a pod created later appears without a restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use istio_cni::api::node_cache::NodeCache;
use istio_cni_agent::server::pods::PodSocket;
use istio_cni_kind::apiserver::{ApiServer, ApiServerOptions};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "annotations": {"sidecar.istio.io/status": "{}"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]}
    }))
    .expect("pod")
}

/// Looks `name` up the way the plugin does, until `want(hit)` or 10 s.
async fn lookup_until(
    socket: PathBuf,
    name: &'static str,
    want: fn(&Result<Pod, String>) -> bool,
) -> Result<Pod, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let socket = socket.clone();
        let got = tokio::task::spawn_blocking(move || {
            NodeCache::new(socket, Duration::from_secs(2))
                .lookup("default", name)
                .map_err(|m| m.0)
        })
        .await
        .expect("lookup thread");
        if want(&got) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pods_bound_to_this_node_are_answered_from_the_watch() {
    let server = ApiServer::start(ApiServerOptions::default()).await.expect("API server");
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let here = pods
        .create(&PostParams::default(), &pod("web", "node-a"))
        .await
        .expect("create web");
    pods.create(&PostParams::default(), &pod("elsewhere", "node-b"))
        .await
        .expect("create elsewhere");

    let run_dir = std::env::temp_dir().join(format!("agent-pod-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    let cache = PodSocket::start(&run_dir, client, "node-a").await.expect("pod socket");
    let socket = cache.path().to_path_buf();

    let hit = lookup_until(socket.clone(), "web", Result::is_ok)
        .await
        .expect("web from the cache");
    assert_eq!(hit.metadata.uid, here.metadata.uid);
    assert_eq!(hit.metadata.annotations, here.metadata.annotations);
    assert!(hit.metadata.managed_fields.is_none(), "managed fields are not kept");

    // Listed by now: a pod of another node and an unknown one are 404s.
    for name in ["elsewhere", "nobody"] {
        let miss = lookup_until(socket.clone(), name, |_| true).await.unwrap_err();
        assert!(miss.contains("404"), "{name}: {miss}");
    }

    // A pod created now reaches the cache through the watch.
    let later = pods
        .create(&PostParams::default(), &pod("later", "node-a"))
        .await
        .expect("create later");
    let seen = lookup_until(socket.clone(), "later", Result::is_ok)
        .await
        .expect("later from the cache");
    assert_eq!(seen.metadata.uid, later.metadata.uid);

    // And a deleted one leaves it (at once: no kubelet here to finish a graceful deletion).
    let now = kube::api::DeleteParams::default().grace_period(0);
    pods.delete("later", &now).await.expect("delete later");
    let gone = lookup_until(socket.clone(), "later", Result::is_err).await.unwrap_err();
    assert!(gone.contains("404"), "{gone}");

    cache.close();
    assert!(!socket.exists(), "the socket file is removed on close");
    let _ = std::fs::remove_dir_all(&run_dir);
}
