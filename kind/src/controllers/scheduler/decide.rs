//! Where a pod goes, as a pure function of the pod and the nodes: the
//! filters kube-scheduler's default profile runs, in its order (a node is
//! rejected by the first one that fails), then the least loaded node that
//! passes every filter.
//!
//! 1. `NodeUnschedulable`: a cordoned node (`spec.unschedulable`) takes only
//!    pods tolerating `node.kubernetes.io/unschedulable:NoSchedule`.
//! 2. `TaintToleration`: every `NoSchedule` and `NoExecute` taint must be
//!    tolerated (`PreferNoSchedule` only scores, so it is ignored here).
//! 3. `NodeAffinity`: `nodeSelector` and the required node affinity terms.
//!
//! A pod nothing fits gets kube-scheduler's message, reasons counted and
//! sorted: `0/2 nodes are available: 1 node(s) had untolerated taint
//! {dedicated: gpu}, 1 node(s) were unschedulable.`

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, PodSpec, Taint, Toleration};

use crate::controllers::daemonset::nodes::{matches_affinity, matches_selector, tolerates};

/// The taint a cordoned node is treated as having.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// The outcome for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind to this node.
    Bind(String),
    /// No node fits; the `FailedScheduling` message says why.
    Unschedulable(String),
}

/// Why one node was filtered out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reject {
    Unschedulable,
    Taint { key: String, value: String },
    Affinity,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reject::Taint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reject::Affinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
        }
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first filter `node` fails for `spec`, if any.
fn filter(spec: &PodSpec, node: &Node) -> Option<Reject> {
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let node_spec = node.spec.as_ref();
    if node_spec.and_then(|s| s.unschedulable) == Some(true) {
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !tolerated(tolerations, &cordon) {
            return Some(Reject::Unschedulable);
        }
    }
    let taints = node_spec.and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let untolerated = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(tolerations, t));
    if let Some(t) = untolerated {
        return Some(Reject::Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        });
    }
    if !(matches_selector(spec, node) && matches_affinity(spec, node)) {
        return Some(Reject::Affinity);
    }
    None
}

/// Where a pod with `spec` goes among `nodes`; `load` counts the pods each
/// node already runs (ties go to the first name).
pub fn decide(spec: &PodSpec, nodes: &[Node], load: &HashMap<String, usize>) -> Decision {
    let live = nodes.iter().filter(|n| n.metadata.deletion_timestamp.is_none());
    let mut rejects: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(usize, &str)> = None;
    let mut total = 0;
    for node in live {
        total += 1;
        let name = node.metadata.name.as_deref().unwrap_or_default();
        match filter(spec, node) {
            Some(reject) => *rejects.entry(reject.to_string()).or_default() += 1,
            None => {
                let key = (load.get(name).copied().unwrap_or(0), name);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
    }
    if let Some((_, name)) = best {
        return Decision::Bind(name.to_string());
    }
    if total == 0 {
        return Decision::Unschedulable("no nodes available to schedule pods".into());
    }
    let reasons: Vec<String> = rejects.iter().map(|(why, n)| format!("{n} {why}")).collect();
    Decision::Unschedulable(format!("0/{total} nodes are available: {}.", reasons.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, spec: Value, labels: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})).unwrap()
    }

    fn plain(name: &str) -> Node {
        node(name, json!({}), json!({}))
    }

    fn pod(v: Value) -> PodSpec {
        let mut v = v;
        v["containers"] = json!([]);
        serde_json::from_value(v).unwrap()
    }

    fn taint(key: &str, value: &str, effect: &str) -> Value {
        json!({"key": key, "value": value, "effect": effect})
    }

    fn no_load() -> HashMap<String, usize> {
        HashMap::new()
    }

    fn bind(name: &str) -> Decision {
        Decision::Bind(name.into())
    }

    fn affinity(expr: Value) -> PodSpec {
        pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [expr]}}}}),
        )
    }

    #[test]
    fn the_least_loaded_node_wins_and_ties_go_to_the_first_name() {
        let nodes = [plain("b"), plain("a"), plain("c")];
        assert_eq!(decide(&pod(json!({})), &nodes, &no_load()), bind("a"));
        let load = HashMap::from([("a".to_string(), 2), ("b".to_string(), 1)]);
        assert_eq!(decide(&pod(json!({})), &nodes, &load), bind("c"));
    }

    #[test]
    fn a_cordoned_node_takes_only_pods_tolerating_it() {
        let nodes = [node("a", json!({"unschedulable": true}), json!({})), plain("b")];
        let load = HashMap::from([("b".to_string(), 5)]);
        assert_eq!(decide(&pod(json!({})), &nodes, &load), bind("b"));
        let cordoned = [node("a", json!({"unschedulable": true}), json!({}))];
        assert_eq!(
            decide(&pod(json!({})), &cordoned, &no_load()),
            Decision::Unschedulable("0/1 nodes are available: 1 node(s) were unschedulable.".into())
        );
        let tolerant = pod(json!({"tolerations": [
            {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(decide(&tolerant, &cordoned, &no_load()), bind("a"));
        let everything = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(decide(&everything, &cordoned, &no_load()), bind("a"));
    }

    #[test]
    fn taints_need_tolerations_by_effect() {
        let on = |effect: &str| {
            [node(
                "a",
                json!({"taints": [taint("dedicated", "gpu", effect)]}),
                json!({}),
            )]
        };
        let plain_pod = pod(json!({}));
        let refused = Decision::Unschedulable(
            "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}.".into(),
        );
        assert_eq!(decide(&plain_pod, &on("NoSchedule"), &no_load()), refused);
        assert_eq!(decide(&plain_pod, &on("NoExecute"), &no_load()), refused);
        assert_eq!(decide(&plain_pod, &on("PreferNoSchedule"), &no_load()), bind("a"));
        let equal = pod(json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}));
        assert_eq!(decide(&equal, &on("NoSchedule"), &no_load()), bind("a"));
        assert_eq!(decide(&equal, &on("NoExecute"), &no_load()), bind("a"));
        let other_value = pod(json!({"tolerations": [{"key": "dedicated", "value": "cpu"}]}));
        assert_eq!(decide(&other_value, &on("NoSchedule"), &no_load()), refused);
        let exists = pod(json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
        assert_eq!(decide(&exists, &on("NoExecute"), &no_load()), bind("a"));
        let wrong_effect =
            pod(json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(decide(&wrong_effect, &on("NoSchedule"), &no_load()), bind("a"));
        assert_eq!(decide(&wrong_effect, &on("NoExecute"), &no_load()), refused);
        // Every taint must be tolerated, not just one.
        let two = [node(
            "a",
            json!({"taints": [taint("dedicated", "gpu", "NoSchedule"), taint("zone", "", "NoSchedule")]}),
            json!({}),
        )];
        assert_eq!(
            decide(&equal, &two, &no_load()),
            Decision::Unschedulable("0/1 nodes are available: 1 node(s) had untolerated taint {zone: }.".into())
        );
    }

    #[test]
    fn the_lifecycle_taints_keep_pods_off_unready_nodes() {
        let nodes = [
            node(
                "a",
                json!({"taints": [taint("node.kubernetes.io/unreachable", "", "NoSchedule"),
                    taint("node.kubernetes.io/unreachable", "", "NoExecute")]}),
                json!({}),
            ),
            plain("b"),
        ];
        let load = HashMap::from([("b".to_string(), 9)]);
        assert_eq!(decide(&pod(json!({})), &nodes, &load), bind("b"));
    }

    #[test]
    fn node_selector_and_affinity() {
        let nodes = [
            node("a", json!({}), json!({"zone": "x", "cores": "4"})),
            node("b", json!({}), json!({"zone": "y", "cores": "16"})),
        ];
        let d = |spec: PodSpec| decide(&spec, &nodes, &no_load());
        assert_eq!(d(pod(json!({"nodeSelector": {"zone": "y"}}))), bind("b"));
        let expr = |key: &str, op: &str, values: &[&str]| json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]});
        assert_eq!(d(affinity(expr("zone", "In", &["y", "z"]))), bind("b"));
        assert_eq!(d(affinity(expr("zone", "NotIn", &["x"]))), bind("b"));
        assert_eq!(d(affinity(expr("cores", "Gt", &["8"]))), bind("b"));
        assert_eq!(d(affinity(expr("cores", "Lt", &["8"]))), bind("a"));
        let none = Decision::Unschedulable(
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.".into(),
        );
        assert_eq!(d(affinity(expr("cores", "Gt", &["not-a-number"]))), none);
        assert_eq!(
            d(affinity(
                json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]})
            )),
            bind("a")
        );
        assert_eq!(
            d(affinity(
                json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]})
            )),
            none
        );
        assert_eq!(d(affinity(json!({}))), none, "an empty term selects nothing");
        let by_name = json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]});
        assert_eq!(d(affinity(by_name)), bind("b"));
        let not_name = json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["a"]}]});
        assert_eq!(d(affinity(not_name)), bind("b"));
        // Terms are ORed, expressions within a term ANDed.
        let spec = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]},
                                      {"key": "cores", "operator": "Gt", "values": ["8"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["y"]}]}]}}}}),
        );
        assert_eq!(d(spec), bind("b"));
        // The selector and the affinity must both hold.
        let both = pod(json!({"nodeSelector": {"zone": "x"}, "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]}}}}));
        assert!(matches!(d(both), Decision::Unschedulable(_)));
    }

    #[test]
    fn the_message_counts_the_first_failing_filter_per_node_sorted() {
        let nodes = [
            node(
                "a",
                json!({"unschedulable": true, "taints": [taint("k", "v", "NoSchedule")]}),
                json!({}),
            ),
            node("b", json!({"taints": [taint("k", "v", "NoSchedule")]}), json!({})),
            node("c", json!({"taints": [taint("k", "v", "NoExecute")]}), json!({})),
            node("d", json!({}), json!({"zone": "x"})),
        ];
        let spec = pod(json!({"nodeSelector": {"zone": "y"}}));
        assert_eq!(
            decide(&spec, &nodes, &no_load()),
            Decision::Unschedulable(
                "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
                 2 node(s) had untolerated taint {k: v}, 1 node(s) were unschedulable."
                    .into()
            )
        );
    }

    #[test]
    fn no_nodes_and_deleted_nodes() {
        assert_eq!(
            decide(&pod(json!({})), &[], &no_load()),
            Decision::Unschedulable("no nodes available to schedule pods".into())
        );
        let mut going = plain("a");
        going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert_eq!(decide(&pod(json!({})), &[going, plain("b")], &no_load()), bind("b"));
    }
}
