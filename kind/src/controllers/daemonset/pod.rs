//! A daemon pod made from a DaemonSet's template for one node, and the
//! template's revision hash that tells current pods from old ones.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::nodes::with_daemon_tolerations;

/// The label with the template's revision hash.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The (deprecated, still set) label with the DaemonSet's generation.
pub const GENERATION_LABEL: &str = "pod-template-generation";

/// A short, label-safe hash of the DaemonSet's pod template: equal
/// templates give equal hashes, so a pod's label says whether it is current.
pub fn revision_hash(ds: &DaemonSet) -> String {
    // Serializing a typed template gives the same bytes for the same value.
    crate::controllers::owned::short_hash(&ds.spec.as_ref().map(|s| &s.template))
}

/// The pod spec of `ds`'s template as it runs on `node`: the daemon
/// tolerations added and required node affinity pinned to the node (as the
/// real controller does), plus `nodeName` set, because this cluster's
/// scheduler does not read node affinity.
pub fn spec_for(ds: &DaemonSet, node: &str) -> PodSpec {
    let mut spec = template_spec(ds);
    spec.tolerations = Some(with_daemon_tolerations(&spec));
    let pin = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![pin.clone()]);
    }
    spec.node_name = Some(node.to_string());
    spec
}

/// The template's pod spec (empty when the DaemonSet has none).
pub fn template_spec(ds: &DaemonSet) -> PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default()
}

/// A new daemon pod of `ds` for `node` (named by the server from
/// `generateName`), owned by `ds`.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .unwrap_or_default();
    let mut labels = template.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert(GENERATION_LABEL.into(), ds.metadata.generation.unwrap_or(1).to_string());
    let owner = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: ds.name_any(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template.annotations,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(spec_for(ds, node)),
        status: None,
    }
}

/// The DaemonSet a pod's controller reference names: (name, uid).
pub fn controller_of(pod: &Pod) -> Option<(&str, &str)> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .filter(|o| o.kind == "DaemonSet" && o.api_version == "apps/v1")
        .map(|o| (o.name.as_str(), o.uid.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(template: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u1", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template}
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_for_a_node() {
        let d = ds(
            json!({"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}}),
        );
        let hash = revision_hash(&d);
        assert_eq!(hash.len(), 10);
        let p = new_pod(&d, "node-1", &hash);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["metadata"]["generateName"], "agent-");
        assert_eq!(
            v["metadata"]["labels"],
            json!({"app": "agent", REVISION_LABEL: hash, GENERATION_LABEL: "3"})
        );
        assert_eq!(
            v["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u1",
                "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(v["spec"]["nodeName"], "node-1");
        let term = &v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0];
        assert_eq!(
            term["matchExpressions"][0]["key"], "zone",
            "the template's expressions are kept"
        );
        assert_eq!(
            term["matchFields"],
            json!([{"key": "metadata.name", "operator": "In", "values": ["node-1"]}])
        );
        assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 6);
        assert_eq!(controller_of(&p), Some(("agent", "u1")));
    }

    #[test]
    fn the_hash_follows_the_template() {
        let a = ds(json!({"spec": {"containers": [{"name": "c", "image": "i:1"}]}}));
        let b = ds(json!({"spec": {"containers": [{"name": "c", "image": "i:2"}]}}));
        assert_eq!(revision_hash(&a), revision_hash(&a.clone()));
        assert_ne!(revision_hash(&a), revision_hash(&b));
        assert!(revision_hash(&a).bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
