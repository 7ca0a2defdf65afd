//! The pod cache the plugin asks before the API server: `<run dir>/pods.sock`
//! answers `GET /api/v1/namespaces/{ns}/pods/{name}` from a watch of the
//! pods on this node (docs/plugin.md#pod-lookup).
//!
//! Every pod's ADD otherwise reads the kubeconfig, sets up TLS and sends a
//! request to the API server, a few milliseconds on the pod's critical path.
//! The agent holds a watch of the pods bound to its node anyway (Istio's
//! chart grants it `get, list, watch` on pods), so it answers from that
//! copy. It is the object the API server sent on the watch, as fresh as the
//! watch: the runtime calls ADD after the kubelet saw the pod bound, and
//! the agent's watch sees the same binding. What the socket cannot answer
//! (not listed yet: 503; not seen: 404) the plugin asks the API server,
//! and the plugin also checks the uid against the sandbox's.
//!
//! Root only, like the log socket ([`super::uds`]): pod specs may carry
//! values no other local user should read.

use std::future::ready;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

pub use istio_cni::api::node_cache::SOCKET_NAME;

use super::uds::RootSocket;

/// The running cache: the watch and the socket answering from it.
pub struct PodSocket {
    socket: RootSocket,
    watch: JoinHandle<()>,
}

/// What the socket's handler reads.
#[derive(Clone)]
struct Cache {
    store: Store<Pod>,
    listed: Arc<AtomicBool>,
}

impl PodSocket {
    /// Starts watching the pods bound to `node` and serves them on
    /// `run_dir/pods.sock`. The socket answers 503 until the first list is in.
    pub async fn start(run_dir: &Path, client: kube::Client, node: &str) -> std::io::Result<PodSocket> {
        let (store, writer) = reflector::store::<Pod>();
        let listed = Arc::new(AtomicBool::new(false));
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let events = watcher(Api::<Pod>::all(client), config)
            .default_backoff()
            // The plugin never reads them; they are most of a pod's bytes.
            .modify(|pod| pod.metadata.managed_fields = None);
        let seen = listed.clone();
        let errors = AtomicU64::new(0);
        let watch = tokio::spawn(reflector::reflector(writer, events).for_each(move |event| {
            match event {
                Ok(watcher::Event::InitDone) => seen.store(true, Ordering::Relaxed),
                Ok(_) => {}
                // Logged 1st, 2nd, 4th, ...: the backoff retries for as long as the agent runs.
                Err(e) => {
                    let n = errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(target: "cni-agent", "pod cache: watching this node's pods: {e} ({n} errors so far; the plugin asks the API server meanwhile)");
                    }
                }
            }
            ready(())
        }));
        let router = Router::new()
            .route("/api/v1/namespaces/{namespace}/pods/{name}", get(pod))
            .with_state(Cache { store, listed });
        match RootSocket::bind(run_dir, SOCKET_NAME, "pod cache socket", router).await {
            Ok(socket) => Ok(PodSocket { socket, watch }),
            Err(e) => {
                watch.abort();
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Stops the watch and the socket and removes the socket file.
    pub fn close(self) {
        self.watch.abort();
        self.socket.close();
    }
}

async fn pod(State(cache): State<Cache>, UrlPath((namespace, name)): UrlPath<(String, String)>) -> Response {
    if !cache.listed.load(Ordering::Relaxed) {
        tracing::debug!(target: "cni-agent", "pod cache: {namespace}/{name}: not listed yet");
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the pod cache has not listed this node's pods yet",
        );
    }
    let Some(pod) = cache.store.get(&ObjectRef::new(&name).within(&namespace)) else {
        tracing::debug!(target: "cni-agent", "pod cache: {namespace}/{name}: not on this node's watch");
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found on this node"),
        );
    };
    match serde_json::to_vec(pod.as_ref()) {
        Ok(body) => {
            tracing::debug!(target: "cni-agent", "pod cache: {namespace}/{name}: answered");
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => {
            tracing::error!(target: "cni-agent", "pod cache: encoding {namespace}/{}: {e}", pod.name_any());
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "encoding the pod failed",
            )
        }
    }
}

/// A Kubernetes-style Status reply, so `curl --unix-socket` reads like the API.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
