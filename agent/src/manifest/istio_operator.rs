//! `IstioOperator` documents (istioctl's install files): what they say about
//! the CNI component, as a values document plus the `k8s` settings istioctl
//! applies to the DaemonSet.
//!
//! Read: `spec.components.cni` (`enabled`, `namespace`, `hub`, `tag`,
//! `label`, `k8s`), `spec.values.{cni,global,revision,ownerName,profile,
//! platform,compatibilityVersion}`, `spec.{hub,tag,profile,revision,namespace,
//! compatibilityVersion}`. Other components' sections are accepted and ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodSecurityContext, Probe, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::values::{self, str_at};

/// One IstioOperator, translated.
#[derive(Debug, Clone, Default)]
pub struct Operator {
    /// A values document (`cni.*`, `global.*`, ...), not yet descoped.
    pub values: Value,
    /// `spec.components.cni.k8s` (and `label`).
    pub overlay: K8sOverlay,
    /// `spec.components.cni.namespace`, else `spec.namespace`.
    pub namespace: Option<String>,
    /// `spec.components.cni.enabled`, when given.
    pub enabled: Option<bool>,
}

/// istioctl's Kubernetes settings for the component, applied to the
/// DaemonSet after rendering. Maps merge; everything else replaces.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct K8sOverlay {
    pub affinity: Option<Affinity>,
    /// Replaces container env entries of the same name, appends the others.
    pub env: Option<Vec<EnvVar>>,
    pub image_pull_policy: Option<String>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub pod_annotations: Option<BTreeMap<String, String>>,
    pub priority_class_name: Option<String>,
    pub readiness_probe: Option<Probe>,
    pub resources: Option<ResourceRequirements>,
    pub strategy: Option<DaemonSetUpdateStrategy>,
    pub tolerations: Option<Vec<Toleration>>,
    pub security_context: Option<PodSecurityContext>,
    /// Appended (same name: replaced).
    pub volumes: Option<Vec<Volume>>,
    /// Appended (same mount path: replaced).
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// `spec.components.cni.label`: extra DaemonSet and pod labels.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

impl K8sOverlay {
    /// `later` on top of `self` (a later IstioOperator file wins).
    pub fn merge(&mut self, later: K8sOverlay) {
        macro_rules! replace {
            ($($f:ident),*) => { $( if later.$f.is_some() { self.$f = later.$f; } )* };
        }
        replace!(
            affinity,
            image_pull_policy,
            priority_class_name,
            readiness_probe,
            resources,
            strategy,
            tolerations,
            security_context
        );
        for (mine, theirs) in [
            (&mut self.node_selector, later.node_selector),
            (&mut self.pod_annotations, later.pod_annotations),
        ] {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(BTreeMap::new).extend(theirs);
            }
        }
        upsert_all(&mut self.env, later.env, |a, b| a.name == b.name);
        upsert_all(&mut self.volumes, later.volumes, |a, b| a.name == b.name);
        upsert_all(&mut self.volume_mounts, later.volume_mounts, |a, b| {
            a.mount_path == b.mount_path
        });
        self.labels.extend(later.labels);
    }

    /// Applies the settings to the rendered DaemonSet.
    pub fn apply(&self, ds: &mut DaemonSet) {
        if !self.labels.is_empty() {
            ds.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(self.labels.clone());
        }
        let Some(spec) = ds.spec.as_mut() else { return };
        set_if_given(&mut spec.update_strategy, &self.strategy);
        let template = &mut spec.template;
        if !self.labels.is_empty() {
            let meta = template.metadata.get_or_insert_with(Default::default);
            meta.labels
                .get_or_insert_with(BTreeMap::new)
                .extend(self.labels.clone());
        }
        if let Some(a) = &self.pod_annotations {
            let meta = template.metadata.get_or_insert_with(Default::default);
            meta.annotations.get_or_insert_with(BTreeMap::new).extend(a.clone());
        }
        let Some(pod) = template.spec.as_mut() else { return };
        set_if_given(&mut pod.affinity, &self.affinity);
        if let Some(n) = &self.node_selector {
            pod.node_selector.get_or_insert_with(BTreeMap::new).extend(n.clone());
        }
        set_if_given(&mut pod.priority_class_name, &self.priority_class_name);
        set_if_given(&mut pod.tolerations, &self.tolerations);
        set_if_given(&mut pod.security_context, &self.security_context);
        upsert_all(&mut pod.volumes, self.volumes.clone(), |a, b| a.name == b.name);
        for c in pod.containers.iter_mut() {
            set_if_given(&mut c.image_pull_policy, &self.image_pull_policy);
            set_if_given(&mut c.readiness_probe, &self.readiness_probe);
            set_if_given(&mut c.resources, &self.resources);
            upsert_all(&mut c.env, self.env.clone(), |a, b| a.name == b.name);
            upsert_all(&mut c.volume_mounts, self.volume_mounts.clone(), |a, b| {
                a.mount_path == b.mount_path
            });
        }
    }
}

/// Overrides `to` with `given` when the overlay gives a value.
fn set_if_given<T: Clone>(to: &mut Option<T>, given: &Option<T>) {
    if given.is_some() {
        to.clone_from(given);
    }
}

/// Puts each of `items` (if given) into the list in `list`, created if
/// absent: an entry `same` matches is replaced, the others are appended.
fn upsert_all<T>(list: &mut Option<Vec<T>>, items: Option<Vec<T>>, same: impl Fn(&T, &T) -> bool) {
    let Some(items) = items else { return };
    let list = list.get_or_insert_with(Vec::new);
    for item in items {
        match list.iter_mut().find(|x| same(x, &item)) {
            Some(slot) => *slot = item,
            None => list.push(item),
        }
    }
}

/// Sets a string at `path` of `layer` unless it is empty.
fn put(layer: &mut Value, path: &[&str], v: &str) {
    if v.is_empty() {
        return;
    }
    let mut patch = Value::String(v.to_string());
    for key in path.iter().rev() {
        let mut m = Map::new();
        m.insert((*key).to_string(), patch);
        patch = Value::Object(m);
    }
    values::merge(layer, &patch);
}

/// Translates one IstioOperator document, already checked against
/// [`super::schema::OPERATOR`].
pub fn translate(doc: &Value) -> Result<Operator, String> {
    let api_version = str_at(doc, &["apiVersion"]);
    let kind = str_at(doc, &["kind"]);
    if kind != "IstioOperator" || !api_version.starts_with("install.istio.io/") {
        return Err(format!(
            "not an IstioOperator (apiVersion {api_version:?}, kind {kind:?}); Helm values go to --values"
        ));
    }
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let mut layer = values::empty();
    if let Some(v) = spec.get("values") {
        values::merge(&mut layer, v);
    }
    // istioctl turns these spec fields into values; the specific field wins.
    put(&mut layer, &["global", "hub"], str_at(&spec, &["hub"]));
    put(&mut layer, &["global", "tag"], str_at(&spec, &["tag"]));
    put(&mut layer, &["profile"], str_at(&spec, &["profile"]));
    put(&mut layer, &["revision"], str_at(&spec, &["revision"]));
    put(
        &mut layer,
        &["compatibilityVersion"],
        str_at(&spec, &["compatibilityVersion"]),
    );
    put(
        &mut layer,
        &["cni", "hub"],
        str_at(&spec, &["components", "cni", "hub"]),
    );
    put(
        &mut layer,
        &["cni", "tag"],
        str_at(&spec, &["components", "cni", "tag"]),
    );
    // The owning-resource label names the IstioOperator, as istioctl does.
    if str_at(&layer, &["ownerName"]).is_empty() {
        put(&mut layer, &["ownerName"], str_at(doc, &["metadata", "name"]));
    }

    let cni = spec.get("components").and_then(|c| c.get("cni"));
    let mut overlay = match cni.and_then(|c| c.get("k8s")) {
        Some(k8s) if !k8s.is_null() => {
            K8sOverlay::deserialize(k8s).map_err(|e| format!("spec.components.cni.k8s: {e}"))?
        }
        _ => K8sOverlay::default(),
    };
    if let Some(Value::Object(labels)) = cni.and_then(|c| c.get("label")) {
        overlay.labels = labels
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
    }
    let namespace = [
        str_at(&spec, &["components", "cni", "namespace"]),
        str_at(&spec, &["namespace"]),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .map(String::from);
    let enabled = cni.and_then(|c| c.get("enabled")).and_then(Value::as_bool);
    Ok(Operator {
        values: layer,
        overlay,
        namespace,
        enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_fields_become_values() {
        let op = translate(&json!({
            "apiVersion": "install.istio.io/v1alpha1",
            "kind": "IstioOperator",
            "metadata": {"name": "control-plane"},
            "spec": {
                "hub": "docker.io/istio",
                "tag": "1.26.0",
                "components": {"cni": {"enabled": true, "namespace": "kube-system", "tag": "mine"}},
                "values": {"cni": {"repair": {"deletePods": true}}},
            },
        }));
        let op = match op {
            Ok(op) => op,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            op.values,
            json!({
                "global": {"hub": "docker.io/istio", "tag": "1.26.0"},
                "cni": {"repair": {"deletePods": true}, "tag": "mine"},
                "ownerName": "control-plane",
            })
        );
        assert_eq!(op.namespace.as_deref(), Some("kube-system"));
        assert_eq!(op.enabled, Some(true));
    }

    #[test]
    fn other_kinds_are_refused() {
        let err = translate(&json!({"apiVersion": "v1", "kind": "ConfigMap"}));
        assert!(err.is_err_and(|e| e.contains("not an IstioOperator")));
    }
}
