//! One reconcile of a DaemonSet as a pure function: from the DaemonSet, the
//! nodes and its pods, which pods to create (per node) and delete, and the
//! status to report.
//!
//! The rules:
//! - a node where a daemon pod should run and none lives gets one, once the
//!   pods that are going away (terminating, or failed and deleted now) are
//!   gone, so an old and a new daemon never overlap unless `maxSurge` asks;
//! - pods on nodes where they may not stay (selector or affinity no longer
//!   match, an untolerated `NoExecute` taint, the node is gone), failed
//!   pods and extra pods on one node are deleted;
//! - `RollingUpdate` replaces pods of an old template: with `maxSurge` 0 it
//!   deletes old pods while at most `maxUnavailable` nodes lack an available
//!   daemon (the new pod follows on the next pass); with `maxSurge` it first
//!   starts a new pod beside the old one and deletes the old one once the
//!   new one is available. `OnDelete` replaces only pods someone deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::nodes::{fit, with_daemon_tolerations};
use super::pod::{REVISION_LABEL, revision_hash, template_spec};
use crate::controllers::owned::{is_finished, ready_since};

/// What one pass does.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The nodes that get a new daemon pod.
    pub create: Vec<String>,
    /// The pods to delete, by name.
    pub delete: Vec<String>,
    /// The status that describes the pods as found.
    pub status: DaemonSetStatus,
    /// When to look again without any change: a ready pod becomes available
    /// after `minReadySeconds`.
    pub recheck: Option<Duration>,
}

/// How a pod counts.
struct Daemon<'a> {
    pod: &'a Pod,
    current: bool,
    ready: bool,
    available: bool,
}

/// `value` of a `maxUnavailable`/`maxSurge` field against `total`
/// (percentages round up, as the DaemonSet controller scales them).
fn scaled(value: Option<&IntOrString>, total: usize, default: usize) -> usize {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => usize::try_from(*n).unwrap_or(0),
        Some(IntOrString::String(s)) => {
            let Some(pct) = s.strip_suffix('%').and_then(|p| p.trim().parse::<usize>().ok()) else {
                return default;
            };
            (pct * total).div_ceil(100)
        }
    }
}

/// The pass over `ds` with `nodes` and the pods it controls.
pub fn plan(ds: &DaemonSet, nodes: &[Node], pods: &[Pod], now: Timestamp) -> Plan {
    let spec = ds.spec.clone().unwrap_or_default();
    let hash = revision_hash(ds);
    let min_ready = Duration::from_secs(u64::try_from(spec.min_ready_seconds.unwrap_or(0)).unwrap_or(0));
    let mut pod_spec = template_spec(ds);
    pod_spec.tolerations = Some(with_daemon_tolerations(&pod_spec));

    let mut out = Plan::default();
    let mut recheck = |d: Duration| out.recheck = Some(out.recheck.map_or(d, |r| r.min(d)));
    let mut by_node: BTreeMap<&str, (Vec<Daemon<'_>>, bool)> = BTreeMap::new();
    let mut delete = Vec::new();
    for pod in pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
        let entry = by_node.entry(node).or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            entry.1 = true;
            continue;
        }
        if is_finished(pod) {
            entry.1 = true;
            delete.push(pod.name_any());
            continue;
        }
        let since = ready_since(pod);
        let available_at = since.map(|t| t + min_ready);
        let available = available_at.is_some_and(|t| t <= now);
        if let (Some(at), false) = (available_at, available) {
            recheck(
                Duration::try_from(at - now)
                    .unwrap_or(min_ready)
                    .max(Duration::from_millis(100)),
            );
        }
        entry.0.push(Daemon {
            pod,
            current: pod.labels().get(REVISION_LABEL) == Some(&hash),
            ready: since.is_some(),
            available,
        });
    }
    // Pods on nodes that no longer exist.
    for (node, (live, _)) in &by_node {
        if !nodes.iter().any(|n| n.metadata.name.as_deref() == Some(*node)) {
            delete.extend(live.iter().map(|d| d.pod.name_any()));
        }
    }

    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let ru = strategy.rolling_update.unwrap_or_default();
    // A percentage of 100 is nonzero exactly when the percentage is.
    let surging = rolling && scaled(ru.max_surge.as_ref(), 100, 0) > 0;
    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..DaemonSetStatus::default()
    };
    // Nodes running an old daemon that a rolling update may replace:
    // (node, old pods, the old daemon is available, the node also has a current pod).
    let (mut available, mut updated) = (0, 0);
    let mut outdated: Vec<(String, Vec<String>, bool, Option<bool>)> = Vec::new();
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.metadata.name.clone());
    for node in sorted {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (mut live, going) = by_node.remove(name.as_str()).unwrap_or_default();
        let f = fit(&pod_spec, node);
        if !f.should_run {
            if !live.is_empty() {
                st.number_misscheduled += 1;
                if !f.may_stay {
                    delete.extend(live.iter().map(|d| d.pod.name_any()));
                }
            }
            continue;
        }
        st.desired_number_scheduled += 1;
        if live.is_empty() {
            if !going {
                out.create.push(name);
            }
            continue;
        }
        st.current_number_scheduled += 1;
        // Best first: current before old, available, ready, then the oldest.
        live.sort_by_key(|d| {
            (
                !d.current,
                !d.available,
                !d.ready,
                d.pod.metadata.creation_timestamp.clone(),
                d.pod.name_any(),
            )
        });
        let best = &live[0];
        st.number_ready += i32::from(best.ready);
        available += i32::from(best.available);
        updated += i32::from(best.current);
        let (current, old): (Vec<&Daemon>, Vec<&Daemon>) = live.iter().partition(|d| d.current);
        // Extras: every current pod but the best one; old pods beyond one,
        // and the old one too when a current one runs without surge.
        delete.extend(current.iter().skip(1).map(|d| d.pod.name_any()));
        let keep_old = if current.is_empty() || surging { 1 } else { 0 };
        delete.extend(old.iter().skip(keep_old).map(|d| d.pod.name_any()));
        if rolling && keep_old == 1 && !old.is_empty() {
            let new_available = current.first().map(|d| d.available);
            outdated.push((name, vec![old[0].pod.name_any()], old[0].available, new_available));
        }
    }
    st.number_available = Some(available);
    st.updated_number_scheduled = Some(updated);
    st.number_unavailable = Some(st.desired_number_scheduled - available).filter(|n| *n > 0);

    if rolling {
        let desired = usize::try_from(st.desired_number_scheduled).unwrap_or(0);
        let surge = scaled(ru.max_surge.as_ref(), desired, 0);
        if surge > 0 {
            // Nodes whose old pod goes in this pass no longer count as surging.
            let mut surged = outdated.iter().filter(|o| o.3 == Some(false)).count();
            for (node, old, old_available, new) in outdated {
                match new {
                    Some(true) => delete.extend(old),
                    Some(false) => {}
                    None if !old_available => out.create.push(node),
                    None if surged < surge => {
                        surged += 1;
                        out.create.push(node);
                    }
                    None => {}
                }
            }
        } else {
            let max_unavailable = scaled(ru.max_unavailable.as_ref(), desired, 1).max(1);
            let unavailable = usize::try_from(st.desired_number_scheduled - available).unwrap_or(0);
            let (down, up): (Vec<_>, Vec<_>) = outdated.into_iter().partition(|o| !o.2);
            delete.extend(down.into_iter().flat_map(|o| o.1));
            // Each available old pod deleted makes one more node unavailable.
            let budget = max_unavailable.saturating_sub(unavailable);
            delete.extend(up.into_iter().take(budget).flat_map(|o| o.1));
        }
    }
    delete.sort();
    delete.dedup();
    out.delete = delete;
    out.status = st;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const T0: &str = "2025-01-01T00:00:00Z";

    fn ds(image: &str, strategy: Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ns", "uid": "u", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "updateStrategy": strategy,
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {REVISION_LABEL: hash}, "creationTimestamp": T0},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": T0}]}
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        T0.parse::<Timestamp>().unwrap() + Duration::from_secs(60)
    }

    fn rolling(max_unavailable: Value, max_surge: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": max_surge}})
    }

    #[test]
    fn one_pod_per_node_and_status() {
        let d = ds("v1", rolling(json!(1), json!(0)));
        let h = revision_hash(&d);
        let nodes = [node("a"), node("b"), node("c")];
        let p = plan(
            &d,
            &nodes,
            &[pod("d-1", "a", &h, true), pod("d-2", "b", &h, false)],
            now(),
        );
        assert_eq!(p.create, ["c"]);
        assert!(p.delete.is_empty());
        let s = &p.status;
        assert_eq!(
            (
                s.desired_number_scheduled,
                s.current_number_scheduled,
                s.number_ready,
                s.number_available
            ),
            (3, 2, 1, Some(1))
        );
        assert_eq!(
            (s.updated_number_scheduled, s.number_unavailable, s.observed_generation),
            (Some(2), Some(2), Some(2))
        );
    }

    #[test]
    fn failed_duplicate_and_stray_pods_are_deleted() {
        let d = ds("v1", rolling(json!(1), json!(0)));
        let h = revision_hash(&d);
        let mut failed = pod("d-f", "a", &h, false);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods = [
            failed,
            pod("d-b1", "b", &h, true),
            pod("d-b2", "b", &h, false),
            pod("d-gone", "gone", &h, true),
        ];
        let p = plan(&d, &[node("a"), node("b")], &pods, now());
        assert_eq!(p.delete, ["d-b2", "d-f", "d-gone"]);
        assert!(p.create.is_empty(), "node a waits until its failed pod is gone");
        let p = plan(&d, &[node("a"), node("b")], &pods[1..2], now());
        assert_eq!(p.create, ["a"]);
    }

    #[test]
    fn a_rolling_update_replaces_max_unavailable_at_a_time() {
        let d = ds("v2", rolling(json!(1), json!(0)));
        let nodes = [node("a"), node("b"), node("c")];
        let h = revision_hash(&d);
        let old = [
            pod("d-a", "a", "old", true),
            pod("d-b", "b", "old", true),
            pod("d-c", "c", "old", true),
        ];
        let p = plan(&d, &nodes, &old, now());
        assert_eq!((p.delete.as_slice(), p.create.len()), (&["d-a".to_string()][..], 0));
        // a's pod is gone: a new one is created there, nothing else is deleted.
        let p = plan(&d, &nodes, &old[1..], now());
        assert_eq!((p.create.as_slice(), p.delete.len()), (&["a".to_string()][..], 0));
        // The new pod on a is not ready yet: still nothing else.
        let mid = [pod("d-a2", "a", &h, false), old[1].clone(), old[2].clone()];
        let p = plan(&d, &nodes, &mid, now());
        assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        // Ready: the next old pod goes.
        let mid = [pod("d-a2", "a", &h, true), old[1].clone(), old[2].clone()];
        assert_eq!(plan(&d, &nodes, &mid, now()).delete, ["d-b"]);
        // Percentages round up; an unavailable old pod goes without using the budget.
        let d = ds("v2", rolling(json!("50%"), json!(0)));
        let old = [
            pod("d-a", "a", "old", false),
            pod("d-b", "b", "old", true),
            pod("d-c", "c", "old", true),
        ];
        assert_eq!(plan(&d, &nodes, &old, now()).delete, ["d-a", "d-b"]);
    }

    #[test]
    fn on_delete_keeps_old_pods() {
        let d = ds("v2", json!({"type": "OnDelete"}));
        let h = revision_hash(&d);
        let p = plan(&d, &[node("a"), node("b")], &[pod("d-a", "a", "old", true)], now());
        assert!(p.delete.is_empty());
        assert_eq!(p.create, ["b"]);
        assert_eq!(
            (p.status.updated_number_scheduled, p.status.current_number_scheduled),
            (Some(0), 1)
        );
        let p = plan(&d, &[node("a")], &[pod("d-a", "a", &h, true)], now());
        assert_eq!(p.status.updated_number_scheduled, Some(1));
    }

    #[test]
    fn max_surge_starts_the_new_pod_first() {
        let d = ds("v2", rolling(json!(0), json!(1)));
        let h = revision_hash(&d);
        let nodes = [node("a"), node("b")];
        let old = [pod("d-a", "a", "old", true), pod("d-b", "b", "old", true)];
        let p = plan(&d, &nodes, &old, now());
        assert_eq!((p.create.as_slice(), p.delete.len()), (&["a".to_string()][..], 0));
        let surging = [old[0].clone(), pod("d-a2", "a", &h, false), old[1].clone()];
        let p = plan(&d, &nodes, &surging, now());
        assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
        assert_eq!(p.status.number_available, Some(1), "a counts its new, unready pod");
        let surging = [old[0].clone(), pod("d-a2", "a", &h, true), old[1].clone()];
        let p = plan(&d, &nodes, &surging, now());
        assert_eq!(
            (p.create.as_slice(), p.delete.as_slice()),
            (&["b".to_string()][..], &["d-a".to_string()][..])
        );
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut d = ds("v1", rolling(json!(1), json!(0)));
        d.spec.as_mut().unwrap().min_ready_seconds = Some(90);
        let h = revision_hash(&d);
        let p = plan(&d, &[node("a")], &[pod("d-a", "a", &h, true)], now());
        assert_eq!((p.status.number_ready, p.status.number_available), (1, Some(0)));
        assert_eq!(p.recheck, Some(Duration::from_secs(30)));
    }

    #[test]
    fn selectors_and_taints_decide_the_nodes() {
        let mut d = ds("v1", rolling(json!(1), json!(0)));
        let tpl = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        tpl.node_selector = Some([("role".to_string(), "mesh".to_string())].into());
        let h = revision_hash(&d);
        let labelled = |name: &str, taint: Option<&str>| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"role": "mesh"}},
                "spec": {"unschedulable": true, "taints": taint.map(|e| vec![json!({"key": "k", "effect": e})])}}))
            .unwrap()
        };
        let nodes = [
            labelled("a", None),
            node("b"),
            labelled("c", Some("NoSchedule")),
            labelled("e", Some("NoExecute")),
        ];
        let pods = [
            pod("d-b", "b", &h, true),
            pod("d-c", "c", &h, true),
            pod("d-e", "e", &h, true),
        ];
        let p = plan(&d, &nodes, &pods, now());
        assert_eq!(p.create, ["a"], "a cordoned node still runs its daemon");
        assert_eq!(p.delete, ["d-b", "d-e"], "c's NoSchedule taint does not evict");
        assert_eq!(
            (p.status.desired_number_scheduled, p.status.number_misscheduled),
            (1, 3)
        );
    }
}
