//! The node lifecycle controller, as kube-controller-manager's: a node's
//! heartbeat is its Lease in `kube-node-lease` (renewed by its kubelet) or
//! its `Ready` condition's `lastHeartbeatTime`, whichever is newer. A node
//! whose heartbeat is older than the grace period gets `Ready=Unknown`
//! (`NodeStatusUnknown`, "Kubelet stopped posting node status."), and the
//! taints follow `Ready`: `Unknown` → `node.kubernetes.io/unreachable`,
//! `False` → `node.kubernetes.io/not-ready`, each as `NoSchedule` and
//! `NoExecute`; `True` removes both. Evicting the pods that do not
//! tolerate the `NoExecute` taints is the taint manager's part
//! ([`super::taint_manager`]), as in kube-controller-manager.
//!
//! [`assess`] is the pure part; [`run`] polls every `period`.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose kubelet stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose kubelet reports it not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// How the controller watches heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMonitor {
    /// How often every node is looked at (`--node-monitor-period`).
    pub period: Duration,
    /// A heartbeat older than this makes the node `Unknown`
    /// (`--node-monitor-grace-period`).
    pub grace: Duration,
}

impl Default for NodeMonitor {
    /// kube-controller-manager's defaults.
    fn default() -> Self {
        NodeMonitor {
            period: Duration::from_secs(5),
            grace: Duration::from_secs(40),
        }
    }
}

/// What one look at a node changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// The node's conditions with `Ready` now `Unknown`, when it just went silent.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The node's taints, when they change.
    pub taints: Option<Vec<Taint>>,
}

fn is_lifecycle_taint(t: &Taint) -> bool {
    (t.key == UNREACHABLE || t.key == NOT_READY) && (t.effect == "NoSchedule" || t.effect == "NoExecute")
}

/// The newest heartbeat of `node`: its lease's renewal, its `Ready`
/// condition's heartbeat, else its creation.
fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renewed = lease.and_then(|l| l.spec.as_ref()?.renew_time.as_ref()).map(|t| t.0);
    let ready = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    renewed.into_iter().chain(ready).max().or(created)
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// What `node` (with its `lease`) needs at `now`.
pub fn assess(node: &Node, lease: Option<&Lease>, now: Timestamp, grace: Duration) -> Verdict {
    let mut verdict = Verdict::default();
    let silent = last_heartbeat(node, lease).is_some_and(|last| {
        now.duration_since(last)
            .try_into()
            .is_ok_and(|elapsed: Duration| elapsed > grace)
    });
    // A node still registering (no `Ready` yet) gets the grace period from
    // its creation before it counts as anything.
    let Some(mut ready) = ready_condition(node)
        .map(|c| c.status.clone())
        .or_else(|| silent.then(|| "None".to_string()))
    else {
        return verdict;
    };
    if silent && ready != "Unknown" {
        let mut conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let unknown = NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusUnknown".into()),
            message: Some("Kubelet stopped posting node status.".into()),
            last_transition_time: Some(Time(now)),
            last_heartbeat_time: ready_condition(node).and_then(|c| c.last_heartbeat_time.clone()),
        };
        match conditions.iter_mut().find(|c| c.type_ == "Ready") {
            Some(c) => *c = unknown,
            None => conditions.push(unknown),
        }
        verdict.conditions = Some(conditions);
        ready = "Unknown".into();
    }
    let have: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let wanted_key = match ready.as_str() {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let mut want: Vec<Taint> = have
        .iter()
        .filter(|t| !is_lifecycle_taint(t) || Some(t.key.as_str()) == wanted_key)
        .cloned()
        .collect();
    if let Some(key) = wanted_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !want.iter().any(|t| t.key == key && t.effect == effect) {
                want.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                });
            }
        }
    }
    if want != have {
        verdict.taints = Some(want);
    }
    verdict
}

/// Watches heartbeats until cancelled (dropped).
pub(crate) async fn run(client: kube::Client, monitor: NodeMonitor) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut tick = tokio::time::interval(monitor.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pass(&nodes, &leases, monitor.grace).await {
            tracing::warn!("node lifecycle: {e}");
        }
    }
}

async fn pass(nodes: &Api<Node>, leases: &Api<Lease>, grace: Duration) -> Result<(), kube::Error> {
    let timeout = |e: tokio::time::error::Elapsed| kube::Error::Service(Box::new(e));
    let limit = Duration::from_secs(10);
    let all = tokio::time::timeout(limit, nodes.list(&ListParams::default()))
        .await
        .map_err(timeout)??;
    let by_node: HashMap<String, Lease> = tokio::time::timeout(limit, leases.list(&ListParams::default()))
        .await
        .map_err(timeout)??
        .items
        .into_iter()
        .filter_map(|l| Some((l.metadata.name.clone()?, l)))
        .collect();
    let now = Timestamp::now();
    for node in all {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let verdict = assess(&node, by_node.get(&name), now, grace);
        if let Some(conditions) = verdict.conditions {
            tracing::info!(node = %name, "node stopped posting status: Ready=Unknown");
            let patch = Patch::Merge(json!({"status": {"conditions": conditions}}));
            tokio::time::timeout(limit, nodes.patch_status(&name, &PatchParams::default(), &patch))
                .await
                .map_err(timeout)??;
        }
        if let Some(taints) = verdict.taints {
            let patch = Patch::Merge(json!({"spec": {"taints": taints}}));
            tokio::time::timeout(limit, nodes.patch(&name, &PatchParams::default(), &patch))
                .await
                .map_err(timeout)??;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const GRACE: Duration = Duration::from_secs(40);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn node(ready: &str, heartbeat: &str, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]}
        }))
        .unwrap()
    }

    fn lease(renewed: &str) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"renewTime": renewed}})).unwrap()
    }

    fn keys(v: &Verdict) -> Vec<(String, String)> {
        v.taints
            .iter()
            .flatten()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    #[test]
    fn a_fresh_lease_keeps_a_ready_node_untouched() {
        let n = node("True", "2025-01-01T00:00:00Z", json!([]));
        let v = assess(
            &n,
            Some(&lease("2025-01-01T00:05:00Z")),
            at("2025-01-01T00:05:30Z"),
            GRACE,
        );
        assert_eq!(v, Verdict::default());
    }

    #[test]
    fn a_silent_node_becomes_unknown_and_unreachable() {
        let n = node(
            "True",
            "2025-01-01T00:00:00Z",
            json!([{"key": "dedicated", "effect": "NoSchedule"}]),
        );
        let now = at("2025-01-01T00:05:00Z");
        let v = assess(&n, Some(&lease("2025-01-01T00:04:00Z")), now, GRACE);
        let conditions = v.conditions.clone().unwrap();
        assert_eq!(conditions.len(), 2, "other conditions are kept");
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.message.as_deref(), Some("Kubelet stopped posting node status."));
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        assert_eq!(
            keys(&v),
            [
                ("dedicated".into(), "NoSchedule".into()),
                (UNREACHABLE.into(), "NoSchedule".into()),
                (UNREACHABLE.into(), "NoExecute".into())
            ]
        );
        let taints = v.taints.unwrap();
        assert!(taints[2].time_added.is_some() && taints[1].time_added.is_none());
    }

    #[test]
    fn without_a_lease_the_condition_heartbeat_counts_then_the_creation() {
        let n = node("True", "2025-01-01T00:04:50Z", json!([]));
        assert_eq!(assess(&n, None, at("2025-01-01T00:05:00Z"), GRACE), Verdict::default());
        let mut bare = n.clone();
        bare.status = None;
        // A node that has not posted `Ready` yet is left alone for the grace
        // period (it is registering), then is Unknown and unreachable.
        assert_eq!(
            assess(&bare, None, at("2025-01-01T00:00:10Z"), GRACE),
            Verdict::default()
        );
        let v = assess(&bare, None, at("2025-01-01T00:01:00Z"), GRACE);
        assert_eq!(v.conditions.clone().unwrap()[0].status, "Unknown");
        assert_eq!(
            keys(&v),
            [
                (UNREACHABLE.into(), "NoSchedule".into()),
                (UNREACHABLE.into(), "NoExecute".into())
            ]
        );
    }

    #[test]
    fn not_ready_nodes_get_not_ready_taints_and_ready_ones_lose_them() {
        let n = node("False", "2025-01-01T00:05:00Z", json!([]));
        let v = assess(&n, None, at("2025-01-01T00:05:01Z"), GRACE);
        assert_eq!(
            keys(&v),
            [
                (NOT_READY.into(), "NoSchedule".into()),
                (NOT_READY.into(), "NoExecute".into())
            ]
        );
        let back = node(
            "True",
            "2025-01-01T00:05:00Z",
            json!([{"key": UNREACHABLE, "effect": "NoSchedule"}, {"key": UNREACHABLE, "effect": "NoExecute"},
                   {"key": "dedicated", "effect": "NoSchedule"}]),
        );
        let v = assess(&back, None, at("2025-01-01T00:05:01Z"), GRACE);
        assert_eq!(keys(&v), [("dedicated".into(), "NoSchedule".into())]);
        assert!(v.conditions.is_none());
    }

    #[test]
    fn an_unknown_node_is_not_marked_again() {
        let n = node(
            "Unknown",
            "2025-01-01T00:00:00Z",
            json!([{"key": UNREACHABLE, "effect": "NoSchedule"}, {"key": UNREACHABLE, "effect": "NoExecute"}]),
        );
        assert_eq!(assess(&n, None, at("2025-01-01T01:00:00Z"), GRACE), Verdict::default());
    }
}
