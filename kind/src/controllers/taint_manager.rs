//! The taint manager (kube-controller-manager's taint eviction controller):
//! a pod bound to a node with a `NoExecute` taint it does not tolerate is
//! deleted (gracefully, with its own grace period) at once; one whose
//! tolerations of every such taint carry `tolerationSeconds` is deleted
//! once the smallest of them has passed since the taint was first seen on
//! its node; a toleration without `tolerationSeconds` keeps it forever.
//! A taint removed before then cancels the eviction. Each eviction is a
//! `TaintManagerEviction` event on the pod.
//!
//! [`verdict`] is the pure part; [`run`] keeps watch caches of nodes and
//! pods and looks again on every change and when the next eviction is due.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Preconditions};
use tokio::time::Instant;

use super::daemonset::nodes::tolerates;
use super::events::Events;
use super::node_pod_cache::{NodePodCache, Snapshot};
use crate::kubelet::events::pod_reference;

/// Every API call is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// A failed deletion is tried again after this.
const RETRY: Duration = Duration::from_secs(1);
const COMPONENT: &str = "taint-eviction-controller";

/// What the taints of its node mean for a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No `NoExecute` taint, or every one tolerated for good.
    Stay,
    /// A `NoExecute` taint it does not tolerate.
    EvictNow,
    /// Tolerated for this long from when the taints were first seen.
    EvictAfter(Duration),
}

/// The verdict for a pod with `tolerations` on a node with `taints`.
pub fn verdict(tolerations: &[Toleration], taints: &[Taint]) -> Verdict {
    let mut shortest: Option<Duration> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        // As kubelet and the scheduler do: the first toleration that matches.
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::EvictNow;
        };
        if let Some(secs) = toleration.toleration_seconds {
            let d = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
            shortest = Some(shortest.map_or(d, |s| s.min(d)));
        }
    }
    match shortest {
        Some(d) if d.is_zero() => Verdict::EvictNow,
        Some(d) => Verdict::EvictAfter(d),
        None => Verdict::Stay,
    }
}

/// Pods and when their node's current `NoExecute` taints were first seen.
#[derive(Default)]
struct State {
    since: HashMap<String, Instant>,
    /// Evictions whose delete went through (until the pod is gone).
    evicted: HashSet<String>,
}

/// Evicts pods from tainted nodes until cancelled (dropped).
pub(crate) async fn run(client: kube::Client) {
    let mut cache = NodePodCache::watch(&client, "taint manager");
    let events = Events::new(client.clone(), COMPONENT);
    let mut state = State::default();
    let mut wake: Option<Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {},
            alive = cache.changed() => if !alive { return },
        }
        if cache.listed() {
            wake = pass(&client, &events, cache.snapshot(), &mut state).await;
        }
    }
}

fn taints_of(node: &Node) -> &[Taint] {
    node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
}

/// One look at every bound pod; when to look again.
async fn pass(client: &kube::Client, events: &Events, cached: Snapshot, state: &mut State) -> Option<Instant> {
    let now = Instant::now();
    let taints: HashMap<String, Vec<Taint>> = cached
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, taints_of(n).to_vec())))
        .collect();
    let pods = cached.pods;
    let mut next: Option<Instant> = None;
    let mut seen = HashMap::new();
    for pod in pods.iter() {
        let Some(uid) = pod.metadata.uid.clone() else { continue };
        let spec = pod.spec.as_ref();
        let Some(node) = spec.and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty()) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
        let node_taints = taints.get(node).map(Vec::as_slice).unwrap_or_default();
        let due = match verdict(tolerations, node_taints) {
            Verdict::Stay => continue,
            Verdict::EvictNow => now,
            Verdict::EvictAfter(d) => {
                let since = *state.since.get(&uid).unwrap_or(&now);
                seen.insert(uid.clone(), since);
                since + d
            }
        };
        if due > now {
            next = Some(next.map_or(due, |n: Instant| n.min(due)));
            continue;
        }
        if state.evicted.contains(&uid) {
            continue;
        }
        if evict(client, events, pod).await {
            state.evicted.insert(uid);
        } else {
            next = Some(now + RETRY);
        }
    }
    let live: HashSet<&str> = pods.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
    state.evicted.retain(|uid| live.contains(uid.as_str()));
    state.since = seen;
    next
}

/// Deletes `pod` (this uid only) and records why; whether the API took it.
async fn evict(client: &kube::Client, events: &Events, pod: &Pod) -> bool {
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
        return true;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match tokio::time::timeout(API_TIMEOUT, api.delete(name, &params)).await {
        Ok(Ok(_)) => {}
        // Gone already, or replaced by another pod of that name.
        Ok(Err(kube::Error::Api(e))) if e.code == 404 || e.code == 409 => return true,
        Ok(Err(e)) => {
            tracing::warn!(pod = name, "taint manager: deleting: {e}");
            return false;
        }
        Err(_) => {
            tracing::warn!(pod = name, "taint manager: deleting: timed out");
            return false;
        }
    }
    let message = format!("Marking for deletion Pod {ns}/{name}");
    events
        .record(&pod_reference(pod), false, "TaintManagerEviction", &message)
        .await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, effect: &str) -> Taint {
        serde_json::from_value(json!({"key": key, "value": "x", "effect": effect})).unwrap()
    }

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn verdicts() {
        let gpu = taint("gpu", "NoExecute");
        let soft = taint("soft", "NoSchedule");
        assert_eq!(verdict(&[], &[]), Verdict::Stay);
        assert_eq!(
            verdict(&[], std::slice::from_ref(&soft)),
            Verdict::Stay,
            "NoSchedule evicts nothing"
        );
        assert_eq!(verdict(&[], std::slice::from_ref(&gpu)), Verdict::EvictNow);
        let forever = toleration(json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}));
        assert_eq!(
            verdict(std::slice::from_ref(&forever), std::slice::from_ref(&gpu)),
            Verdict::Stay
        );
        let minute = toleration(json!({"key": "gpu", "operator": "Exists", "tolerationSeconds": 60}));
        assert_eq!(
            verdict(std::slice::from_ref(&minute), std::slice::from_ref(&gpu)),
            Verdict::EvictAfter(Duration::from_secs(60))
        );
        // The shortest toleration of all the taints counts.
        let other = taint("other", "NoExecute");
        let five = toleration(json!({"key": "other", "operator": "Exists", "tolerationSeconds": 5}));
        assert_eq!(
            verdict(&[minute.clone(), five], &[gpu.clone(), other.clone()]),
            Verdict::EvictAfter(Duration::from_secs(5))
        );
        // One taint tolerated, the other not: out now.
        assert_eq!(
            verdict(std::slice::from_ref(&minute), &[gpu.clone(), other]),
            Verdict::EvictNow
        );
        let zero = toleration(json!({"key": "gpu", "operator": "Exists", "tolerationSeconds": 0}));
        assert_eq!(verdict(&[zero], std::slice::from_ref(&gpu)), Verdict::EvictNow);
        // A toleration of another value does not count.
        let wrong = toleration(json!({"key": "gpu", "operator": "Equal", "value": "y"}));
        assert_eq!(verdict(&[wrong], &[gpu]), Verdict::EvictNow);
    }
}
