//! The opt-in not-ready taint (docs/taint-and-safe-upgrade.md): nodes
//! register with `cni.istio.io/not-ready` (or the configured key), so the
//! scheduler places no pod there that does not tolerate it; once the plugin
//! is installed on this node, the agent removes that taint, any effect, from
//! its own node (NODE_NAME) and never adds it back.
//!
//! The removal is a JSON patch that tests, for each entry it removes, that
//! the entry at that index still has our key: a concurrent change to the
//! taint list fails the patch instead of dropping or resurrecting someone
//! else's taint, and the next attempt reads the node again. A failed attempt
//! is logged, counted and retried with backoff until it succeeds or SIGTERM.

use std::time::Duration;

use axum::http::Request;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::{Value, json};

use crate::config::InstallSettings;
use crate::metrics::{Metrics, TaintResult};
use crate::shutdown::Shutdown;

/// The JSON patch (RFC 6902) that removes every taint with `key` from
/// `node`, each removal guarded by a test of that entry's key; `None` when
/// the node has no such taint. Indices go from the last to the first so
/// each stays valid after the removals before it.
pub fn removal_patch(node: &Node, key: &str) -> Option<Value> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let ours: Vec<usize> = taints
        .iter()
        .enumerate()
        .filter(|(_, t)| t.key == key)
        .map(|(i, _)| i)
        .collect();
    if ours.is_empty() {
        return None;
    }
    let ops: Vec<Value> = ours
        .iter()
        .rev()
        .flat_map(|i| {
            [
                json!({"op": "test", "path": format!("/spec/taints/{i}/key"), "value": key}),
                json!({"op": "remove", "path": format!("/spec/taints/{i}")}),
            ]
        })
        .collect();
    Some(Value::Array(ops))
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    Absent,
}

/// Why an attempt failed (retried).
#[derive(Debug, thiserror::Error)]
pub enum TaintError {
    #[error("API client: {0}")]
    Client(String),
    #[error("reading node {node}: {source}")]
    Get {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching node {node}: {source}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("building the request for node {node}: {reason}")]
    Request { node: String, reason: String },
}

/// One attempt: read the node, patch the taint away if present.
pub async fn attempt(client: &kube::Client, node: &str, key: &str) -> Result<Outcome, TaintError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let current = nodes.get(node).await.map_err(|source| TaintError::Get {
        node: node.to_string(),
        source,
    })?;
    let Some(patch) = removal_patch(&current, key) else {
        return Ok(Outcome::Absent);
    };
    // kube's typed JSON patch needs a feature the workspace does not enable;
    // the request is small enough to build by hand.
    let request = Request::builder()
        .method("PATCH")
        .uri(format!("/api/v1/nodes/{}", percent_path(node)))
        .header("Content-Type", "application/json-patch+json")
        .header("Accept", "application/json")
        .body(patch.to_string().into_bytes())
        .map_err(|e| TaintError::Request {
            node: node.to_string(),
            reason: e.to_string(),
        })?;
    client.request_text(request).await.map_err(|source| TaintError::Patch {
        node: node.to_string(),
        source,
    })?;
    Ok(Outcome::Removed)
}

/// A node name is a DNS subdomain, so it needs no escaping; anything else is
/// escaped rather than trusted into the path.
fn percent_path(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Exponential backoff between failed attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { next: initial, max }
    }

    /// The delay before the next attempt; doubles up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Removes the taint from `node`, retrying with backoff, until done or
/// `shutdown` is requested.
pub async fn remove_own_taint(
    install: InstallSettings,
    node: String,
    key: String,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut client = None;
    loop {
        if shutdown.requested().is_some() {
            return;
        }
        let result = async {
            let c = match &client {
                Some(c) => c,
                None => client.insert(crate::run::kube_client(&install).map_err(TaintError::Client)?),
            };
            attempt(c, &node, &key).await
        };
        let result = tokio::select! {
            _ = shutdown.wait() => return,
            r = result => r,
        };
        match result {
            Ok(Outcome::Removed) => {
                metrics.taint(TaintResult::removed);
                tracing::info!(target: "cni-agent", "removed taint {key} from node {node}: pods may be scheduled here now");
                return;
            }
            Ok(Outcome::Absent) => {
                metrics.taint(TaintResult::absent);
                tracing::info!(target: "cni-agent", "node {node} has no taint {key}: nothing to remove");
                return;
            }
            Err(e) => {
                metrics.taint(TaintResult::fail);
                let delay = backoff.next_delay();
                tracing::warn!(target: "cni-agent", "removing taint {key} from node {node}: {e}; retrying in {delay:?}");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(taints: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"taints": taints}})).unwrap()
    }

    const KEY: &str = "cni.istio.io/not-ready";

    #[test]
    fn no_patch_when_absent() {
        assert_eq!(removal_patch(&node(json!([])), KEY), None);
        assert_eq!(
            removal_patch(&node(json!([{"key": "other", "effect": "NoSchedule"}])), KEY),
            None
        );
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
        assert_eq!(removal_patch(&bare, KEY), None);
    }

    #[test]
    fn every_effect_of_the_key_goes_last_index_first_each_guarded() {
        let n = node(json!([
            {"key": KEY, "effect": "NoSchedule"},
            {"key": "keep", "effect": "NoSchedule"},
            {"key": KEY, "value": "x", "effect": "NoExecute"},
        ]));
        let patch = removal_patch(&n, KEY).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/spec/taints/2/key", "value": KEY},
                {"op": "remove", "path": "/spec/taints/2"},
                {"op": "test", "path": "/spec/taints/0/key", "value": KEY},
                {"op": "remove", "path": "/spec/taints/0"},
            ])
        );
        // Applied to the node, only the other taint is left.
        let mut doc = serde_json::to_value(&n).unwrap();
        for op in patch.as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            let (parent, index) = path.rsplit_once('/').unwrap();
            match op["op"].as_str().unwrap() {
                "test" => assert_eq!(doc.pointer(path), Some(&op["value"])),
                _ => {
                    let list = doc.pointer_mut(parent).unwrap().as_array_mut().unwrap();
                    list.remove(index.parse().unwrap());
                }
            }
        }
        assert_eq!(doc["spec"]["taints"], json!([{"key": "keep", "effect": "NoSchedule"}]));
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn node_names_stay_plain_in_the_path() {
        assert_eq!(percent_path("node-1.example"), "node-1.example");
        assert_eq!(percent_path("a/b c"), "a%2Fb%20c");
    }
}
