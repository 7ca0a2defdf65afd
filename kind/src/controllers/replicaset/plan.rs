//! One pass over a ReplicaSet as a pure function: from the ReplicaSet and
//! the pods of its namespace, which orphans to adopt, how many pods to
//! create, which to delete, and the status to report.
//!
//! The rules, as the ReplicaSet controller has them:
//! - its pods are those it controls, plus orphans (no controller) its
//!   selector matches, which it adopts;
//! - the active ones (not being deleted, not finished) are counted against
//!   `replicas`: missing pods are created, surplus ones deleted, the least
//!   useful first (unscheduled, pending, not ready, ready the shortest
//!   time, most restarts, newest);
//! - the status describes the pods as found: `replicas` (active),
//!   `fullyLabeledReplicas` (carrying every template label), `readyReplicas`,
//!   `availableReplicas` (ready for `minReadySeconds`), `observedGeneration`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::apiserver::LabelSelector;
use crate::controllers::owned::{availability, controlled_by, controller_ref, is_active, min_ready, ready_since};

/// What one pass does.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Orphans to adopt, by name.
    pub adopt: Vec<String>,
    /// How many pods to create.
    pub create: usize,
    /// The pods to delete, by name.
    pub delete: Vec<String>,
    /// The status that describes the pods as found.
    pub status: ReplicaSetStatus,
    /// When to look again without any change (a ready pod becomes available).
    pub recheck: Option<Duration>,
}

/// The ReplicaSet's selector; `None` when it has none or it is malformed
/// (the API server refuses both, so it selects nothing).
pub fn selector(rs: &ReplicaSet) -> Option<LabelSelector> {
    let sel = LabelSelector::from_api(&rs.spec.as_ref()?.selector).ok()?;
    (!sel.is_empty()).then_some(sel)
}

/// The pass over `rs` with the pods of its namespace.
pub fn plan(rs: &ReplicaSet, pods: &[Pod], now: Timestamp) -> Plan {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let min_ready = min_ready(spec.min_ready_seconds);
    let selector = selector(rs);
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut out = Plan::default();

    let mut mine: Vec<&Pod> = Vec::new();
    for pod in pods {
        if controlled_by(&pod.metadata, &uid) {
            mine.push(pod);
        } else if controller_ref(&pod.metadata).is_none()
            && !deleting
            && pod.metadata.deletion_timestamp.is_none()
            && selector.as_ref().is_some_and(|s| s.matches(pod.labels()))
        {
            out.adopt.push(pod.name_any());
            mine.push(pod);
        }
    }
    let active: Vec<&Pod> = mine.into_iter().filter(|p| is_active(p)).collect();

    let template_labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut st = ReplicaSetStatus {
        replicas: i32::try_from(active.len()).unwrap_or(i32::MAX),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        ..ReplicaSetStatus::default()
    };
    let (mut labeled, mut ready, mut available) = (0, 0, 0);
    for pod in &active {
        labeled += i32::from(template_labels.iter().all(|(k, v)| pod.labels().get(k) == Some(v)));
        ready += i32::from(ready_since(pod).is_some());
        let (is_available, wait) = availability(pod, min_ready, now);
        available += i32::from(is_available);
        if let Some(wait) = wait {
            out.recheck = Some(out.recheck.map_or(wait, |r| r.min(wait)));
        }
    }
    st.fully_labeled_replicas = Some(labeled);
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    out.status = st;

    if deleting {
        return out;
    }
    if active.len() < want {
        out.create = want - active.len();
    } else if active.len() > want {
        let mut ranked = active;
        ranked.sort_by_key(|p| deletion_rank(p));
        out.delete = ranked
            .into_iter()
            .take(out.status.replicas as usize - want)
            .map(ResourceExt::name_any)
            .collect();
    }
    out
}

/// The order in which surplus pods go: the least useful first.
fn deletion_rank(pod: &Pod) -> impl Ord {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = ready_since(pod);
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        assigned,
        phase,
        ready.is_some(),
        // Ready more recently first, then more restarts, then newer.
        std::cmp::Reverse(ready),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
        pod.name_any(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const T0: &str = "2025-01-01T00:00:00Z";

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "ns", "uid": "rs-uid", "generation": 4},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: Option<&str>, ready_at: Option<&str>, extra: Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"app": "web", "tier": "front"}, "creationTimestamp": T0},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready_at.is_some() { "True" } else { "False" }, "lastTransitionTime": ready_at.unwrap_or(T0)}]}
        });
        if let Some(uid) = owner {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-x", "uid": uid, "controller": true}]);
        }
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).unwrap()
    }

    fn now() -> Timestamp {
        T0.parse::<Timestamp>().unwrap() + Duration::from_secs(600)
    }

    #[test]
    fn creates_the_missing_and_reports_what_it_found() {
        let pods = [
            pod("a", Some("rs-uid"), Some(T0), json!({})),
            pod(
                "b",
                Some("rs-uid"),
                None,
                json!({"metadata": {"labels": {"tier": null}}}),
            ),
            pod("other", Some("someone-else"), Some(T0), json!({})),
            pod(
                "gone",
                Some("rs-uid"),
                Some(T0),
                json!({"metadata": {"deletionTimestamp": T0}}),
            ),
            pod("done", Some("rs-uid"), None, json!({"status": {"phase": "Failed"}})),
        ];
        let p = plan(&rs(3), &pods, now());
        assert_eq!((p.create, p.delete.len(), p.adopt.len()), (1, 0, 0));
        let s = &p.status;
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.observed_generation
            ),
            (2, Some(1), Some(1), Some(1), Some(4))
        );
    }

    #[test]
    fn adopts_matching_orphans_only() {
        let pods = [
            pod("orphan", None, Some(T0), json!({})),
            pod(
                "stranger",
                None,
                Some(T0),
                json!({"metadata": {"labels": {"app": "db"}}}),
            ),
            pod(
                "leaving",
                None,
                Some(T0),
                json!({"metadata": {"deletionTimestamp": T0}}),
            ),
        ];
        let p = plan(&rs(1), &pods, now());
        assert_eq!(p.adopt, ["orphan"]);
        assert_eq!((p.create, p.status.replicas), (0, 1));
    }

    #[test]
    fn deletes_the_least_useful_surplus_first() {
        let later = "2025-01-01T00:05:00Z";
        let pods = [
            pod("old-ready", Some("rs-uid"), Some(T0), json!({})),
            pod("new-ready", Some("rs-uid"), Some(later), json!({})),
            pod("not-ready", Some("rs-uid"), None, json!({})),
            pod(
                "pending",
                Some("rs-uid"),
                None,
                json!({"spec": {"nodeName": null}, "status": {"phase": "Pending"}}),
            ),
        ];
        assert_eq!(plan(&rs(1), &pods, now()).delete, ["pending", "not-ready", "new-ready"]);
        assert_eq!(plan(&rs(3), &pods, now()).delete, ["pending"]);
        assert!(plan(&rs(4), &pods, now()).delete.is_empty());
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut r = rs(1);
        r.spec.as_mut().unwrap().min_ready_seconds = Some(900);
        let p = plan(&r, &[pod("a", Some("rs-uid"), Some(T0), json!({}))], now());
        assert_eq!(
            (p.status.ready_replicas, p.status.available_replicas),
            (Some(1), Some(0))
        );
        assert_eq!(p.recheck, Some(Duration::from_secs(300)));
    }
}
