//! Which nodes a daemon pod belongs on: the template's `nodeSelector` and
//! required node affinity against the node's labels and name, and the
//! node's taints against the pod's tolerations (those of the template plus
//! the ones every daemon pod gets, see [`daemon_tolerations`]).

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration};

/// Where a daemon pod stands on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// A daemon pod should run there (counted in desiredNumberScheduled).
    pub should_run: bool,
    /// A daemon pod already there may stay (no selector mismatch, no
    /// untolerated `NoExecute` taint); `NoSchedule` taints added after the
    /// pod started do not evict it.
    pub may_stay: bool,
}

/// The tolerations the DaemonSet controller adds to every daemon pod, so it
/// runs on nodes that are not ready, unreachable, under pressure or cordoned
/// (and, for host-network pods, whose network is not set up yet: the daemon
/// may be what sets it up).
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(format!("node.kubernetes.io/{key}")),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut out = vec![
        t("not-ready", "NoExecute"),
        t("unreachable", "NoExecute"),
        t("disk-pressure", "NoSchedule"),
        t("memory-pressure", "NoSchedule"),
        t("pid-pressure", "NoSchedule"),
        t("unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("network-unavailable", "NoSchedule"));
    }
    out
}

/// `spec.tolerations` with [`daemon_tolerations`] added where the spec has
/// no toleration of the same key and effect.
pub fn with_daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut all = spec.tolerations.clone().unwrap_or_default();
    for t in daemon_tolerations(spec.host_network == Some(true)) {
        if !all.iter().any(|have| have.key == t.key && have.effect == t.effect) {
            all.push(t);
        }
    }
    all
}

/// How a pod with `spec` (tolerations already completed) fits `node`.
pub fn fit(spec: &PodSpec, node: &Node) -> Fit {
    let selected = matches_selector(spec, node) && matches_affinity(spec, node);
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    Fit {
        should_run: selected && !no_execute && !untolerated("NoSchedule"),
        may_stay: selected && !no_execute,
    }
}

fn labels(node: &Node) -> &std::collections::BTreeMap<String, String> {
    static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether the node has every label of the pod's `nodeSelector`.
pub fn matches_selector(spec: &PodSpec, node: &Node) -> bool {
    let have = labels(node);
    spec.node_selector.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
}

/// Whether the node meets the pod's required node affinity (none: every node does).
pub fn matches_affinity(spec: &PodSpec, node: &Node) -> bool {
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        // The terms are ORed; no term (or only empty ones) selects nothing.
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, node)),
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let have = labels(node);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    exprs
        .iter()
        .all(|r| requirement(r, have.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement(r, Some(name)))
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|w| w == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (value.and_then(number), values.first().and_then(|v| number(v))) else {
                return false;
            };
            if r.operator == "Gt" { have > bound } else { have < bound }
        }
        _ => false,
    }
}

/// Whether `tol` tolerates `taint` (an empty key with `Exists` tolerates
/// every taint; an empty effect every effect).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or_default();
    let exists = tol.operator.as_deref() == Some("Exists");
    if key.is_empty() {
        return exists;
    }
    key == taint.key
        && (exists || tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: serde_json::Value) -> PodSpec {
        let mut spec: PodSpec = serde_json::from_value(v).unwrap();
        spec.tolerations = Some(with_daemon_tolerations(&spec));
        spec
    }

    #[test]
    fn selector_and_affinity() {
        let n = node(json!({"metadata": {"name": "n1", "labels": {"zone": "a", "size": "4"}}}));
        let run = |spec| fit(&pod(spec), &n).should_run;
        assert!(run(json!({"containers": []})));
        assert!(run(json!({"containers": [], "nodeSelector": {"zone": "a"}})));
        assert!(!run(json!({"containers": [], "nodeSelector": {"zone": "b"}})));
        let aff = |term: serde_json::Value| {
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [term]}}}})
        };
        assert!(run(aff(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        )));
        assert!(!run(aff(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})
        )));
        assert!(run(aff(
            json!({"matchExpressions": [{"key": "size", "operator": "Gt", "values": ["3"]}]})
        )));
        assert!(!run(aff(
            json!({"matchExpressions": [{"key": "size", "operator": "Lt", "values": ["3"]}]})
        )));
        assert!(run(aff(
            json!({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]})
        )));
        assert!(!run(aff(
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]})
        )));
        assert!(!run(aff(json!({}))), "an empty term selects nothing");
    }

    #[test]
    fn taints_against_tolerations() {
        let tainted = |key: &str, effect: &str| {
            node(json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": key, "value": "x", "effect": effect}]}}))
        };
        let plain = pod(json!({"containers": []}));
        // Cordoned and not-ready nodes still run daemon pods.
        assert!(fit(&plain, &tainted("node.kubernetes.io/unschedulable", "NoSchedule")).should_run);
        assert!(fit(&plain, &tainted("node.kubernetes.io/not-ready", "NoExecute")).should_run);
        let no_schedule = fit(&plain, &tainted("dedicated", "NoSchedule"));
        assert_eq!(
            no_schedule,
            Fit {
                should_run: false,
                may_stay: true
            }
        );
        let no_execute = fit(&plain, &tainted("dedicated", "NoExecute"));
        assert_eq!(
            no_execute,
            Fit {
                should_run: false,
                may_stay: false
            }
        );
        let tolerant =
            pod(json!({"containers": [], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "x"}]}));
        assert!(fit(&tolerant, &tainted("dedicated", "NoExecute")).should_run);
        let wrong_value = pod(json!({"containers": [], "tolerations": [{"key": "dedicated", "value": "y"}]}));
        assert!(!fit(&wrong_value, &tainted("dedicated", "NoSchedule")).should_run);
        let everything = pod(json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert!(fit(&everything, &tainted("anything", "NoExecute")).should_run);
        let net = tainted("node.kubernetes.io/network-unavailable", "NoSchedule");
        assert!(!fit(&plain, &net).should_run);
        assert!(fit(&pod(json!({"containers": [], "hostNetwork": true})), &net).should_run);
    }

    #[test]
    fn daemon_tolerations_are_added_once() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}))
        .unwrap();
        let all = with_daemon_tolerations(&spec);
        assert_eq!(all.len(), 6);
        assert_eq!(
            all[0].toleration_seconds,
            Some(5),
            "the template's own toleration is kept"
        );
    }
}
