//! The chart's values: defaults, layering (Helm's deep merge, `cni.`
//! descoping, `null` removes a key) and the typed [`Values`] the objects are
//! rendered from.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSetUpdateStrategy;
use k8s_openapi::api::core::v1::{Affinity, SELinuxOptions, SeccompProfile, Toleration};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::RepairMode;

/// Our image when nothing says otherwise: the tag `istio-cni-kind` builds
/// from `agent/Dockerfile`.
pub const DEFAULT_HUB: &str = "istio-cni-rs";
pub const DEFAULT_IMAGE: &str = "agent";
pub const DEFAULT_TAG: &str = "dev";

/// The effective values of the `istio-cni` chart (keys as in the chart).
/// `Values::default()` is the empty document; [`super::Manifest`] resolves the
/// chart defaults, the platform profile and the user's values into one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Values {
    pub hub: String,
    pub tag: String,
    pub variant: String,
    pub image: String,
    pub pull_policy: String,
    pub logging: Logging,
    /// Host dir of the CNI plugins.
    pub cni_bin_dir: String,
    /// Host dir of the CNI configs.
    pub cni_conf_dir: String,
    pub cni_conf_file_name: String,
    /// Only used in ambient mode; accepted for compatibility.
    pub cni_netns_dir: String,
    /// Only acts in ambient mode (docs/agent.md#istio-owned-conflist); accepted for compatibility.
    #[serde(rename = "istioOwnedCNIConfig")]
    pub istio_owned_cni_config: bool,
    #[serde(rename = "istioOwnedCNIConfigFileName")]
    pub istio_owned_cni_config_file_name: String,
    pub exclude_namespaces: Vec<String>,
    pub affinity: Option<Affinity>,
    pub daemon_set_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    pub chained: bool,
    pub provider: String,
    pub ambient: Ambient,
    pub repair: Repair,
    /// Ours: the not-ready taint the agent removes from its node once installed.
    pub taint: Taint,
    /// Ours: keep the plugin installed across a roll of the DaemonSet.
    pub safe_upgrade: SafeUpgrade,
    pub seccomp_profile: Option<SeccompProfile>,
    pub se_linux_options: Option<SELinuxOptions>,
    pub use_app_armor_annotation: bool,
    pub resources: Resources,
    pub resource_quotas: ResourceQuotas,
    pub tolerations: Vec<Toleration>,
    pub update_strategy: Option<DaemonSetUpdateStrategy>,
    pub termination_grace_period_seconds: Option<i64>,
    pub revision: String,
    pub owner_name: String,
    /// Extra agent env, written to the ConfigMap and the container.
    pub env: BTreeMap<String, String>,
    pub profile: String,
    pub platform: String,
    pub compatibility_version: String,
    pub global: Global,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Logging {
    pub level: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ambient {
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Repair {
    pub enabled: bool,
    pub label_pods: bool,
    pub delete_pods: bool,
    pub repair_pods: bool,
    pub init_container_name: String,
    pub broken_pod_label_key: String,
    pub broken_pod_label_value: String,
}

/// `taint.*` (docs/taint-and-safe-upgrade.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Taint {
    pub enabled: bool,
    /// The taint's key; nodes register with it (any effect).
    pub name: String,
}

/// `safeUpgrade.*` (docs/taint-and-safe-upgrade.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SafeUpgrade {
    pub enabled: bool,
}

/// `{requests,limits}: {resource: quantity}`; empty quantities are dropped when rendered.
pub type Resources = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceQuotas {
    pub enabled: bool,
    pub pods: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Global {
    /// Istio's registry; it does not carry this agent, so it never picks our image.
    pub hub: String,
    /// Istio's version; like `hub`, not used for our image.
    pub tag: String,
    pub variant: String,
    pub image_pull_policy: String,
    pub image_pull_secrets: Vec<String>,
    pub logging: Logging,
    pub log_as_json: bool,
    pub network_policy: NetworkPolicy,
    pub default_resources: Resources,
    pub native_nftables: bool,
    pub resource_scope: String,
    pub platform: String,
    pub profile: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkPolicy {
    pub enabled: bool,
}

impl Values {
    /// The repair controller's mode, in the agent's precedence
    /// (repairPods > deletePods > labelPods); `None` when repair is off.
    pub fn repair_mode(&self) -> Option<RepairMode> {
        let r = &self.repair;
        RepairMode::chosen(r.enabled, r.repair_pods, r.delete_pods, r.label_pods)
    }

    /// The container image: `image` verbatim when it has a `/`, else
    /// `<hub>/<image>:<tag>[-<variant>]` from the CNI keys only.
    pub fn image_ref(&self) -> String {
        if self.image.contains('/') {
            return self.image.clone();
        }
        let hub = non_empty(&self.hub, DEFAULT_HUB);
        let image = non_empty(&self.image, DEFAULT_IMAGE);
        let tag = non_empty(&self.tag, DEFAULT_TAG);
        if self.variant.is_empty() {
            format!("{hub}/{image}:{tag}")
        } else {
            format!("{hub}/{image}:{tag}-{}", self.variant)
        }
    }

    /// `logging.level`, else `global.logging.level`, else `info`.
    pub fn log_level(&self) -> &str {
        let level = non_empty(&self.logging.level, &self.global.logging.level);
        non_empty(level, "info")
    }

    /// `pullPolicy`, else `global.imagePullPolicy` (empty: the cluster's default).
    pub fn pull_policy(&self) -> &str {
        non_empty(&self.pull_policy, &self.global.image_pull_policy)
    }

    /// `resources`, or `global.defaultResources` when it is empty.
    pub fn effective_resources(&self) -> &Resources {
        let has_any = |r: &Resources| r.values().any(|m| m.values().any(|q| !q.is_empty()));
        if has_any(&self.resources) {
            &self.resources
        } else {
            &self.global.default_resources
        }
    }
}

fn non_empty<'a>(v: &'a str, fallback: &'a str) -> &'a str {
    if v.is_empty() { fallback } else { v }
}

/// The chart's defaults (HEAD), with our image instead of Istio's `install-cni`.
pub fn chart_defaults() -> Value {
    json!({
        "hub": DEFAULT_HUB,
        "tag": DEFAULT_TAG,
        "variant": "",
        "image": DEFAULT_IMAGE,
        "pullPolicy": "",
        "logging": {"level": ""},
        "cniBinDir": "/opt/cni/bin",
        "cniConfDir": "/etc/cni/net.d",
        "cniConfFileName": "",
        "cniNetnsDir": "/var/run/netns",
        "istioOwnedCNIConfig": false,
        "istioOwnedCNIConfigFileName": "",
        "excludeNamespaces": ["kube-system"],
        "affinity": {},
        "daemonSetLabels": {},
        "podAnnotations": {},
        "podLabels": {},
        "chained": true,
        "provider": "default",
        "ambient": {"enabled": false},
        "repair": {
            "enabled": true,
            "labelPods": false,
            "deletePods": false,
            "repairPods": true,
            "initContainerName": "istio-validation",
            "brokenPodLabelKey": "cni.istio.io/uninitialized",
            "brokenPodLabelValue": "true",
        },
        "taint": {"enabled": false, "name": crate::config::DEFAULT_NOT_READY_TAINT},
        "safeUpgrade": {"enabled": false},
        "useAppArmorAnnotation": true,
        "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
        "resourceQuotas": {"enabled": false, "pods": 5000},
        "tolerations": [
            {"effect": "NoSchedule", "operator": "Exists"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"effect": "NoExecute", "operator": "Exists"},
        ],
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "terminationGracePeriodSeconds": 30,
        "revision": "",
        "ownerName": "",
        "env": {},
        "global": {
            "logging": {"level": "info"},
            "logAsJson": false,
            "imagePullSecrets": [],
            "defaultResources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
            "nativeNftables": false,
            "resourceScope": "all",
            "networkPolicy": {"enabled": false},
        },
    })
}

/// Helm's merge: maps merge key by key, anything else (lists too) is replaced.
/// A `null` replaces as well and is removed later by [`strip_nulls`].
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Copies `cni.*` over the top level (the chart's `zzy_descope_legacy`:
/// within one document, `cni.x` wins over `x`).
pub fn descope(layer: &mut Value) {
    let Value::Object(map) = layer else { return };
    if let Some(cni) = map.remove("cni") {
        let mut top = Value::Object(std::mem::take(map));
        merge(&mut top, &cni);
        if let Value::Object(m) = top {
            *map = m;
        }
    }
}

/// Removes `null` map entries, recursively: the key and its default are gone.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// A string at a dotted path of a values tree ("" when absent).
pub(crate) fn str_at<'a>(tree: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(tree, |node, key| node.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// An empty values document.
pub(crate) fn empty() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descope_lets_cni_win_within_a_document() {
        let mut v =
            json!({"tag": "a", "cni": {"tag": "b", "repair": {"enabled": false}}, "repair": {"deletePods": true}});
        descope(&mut v);
        assert_eq!(v, json!({"tag": "b", "repair": {"enabled": false, "deletePods": true}}));
    }

    #[test]
    fn null_removes_the_default() {
        let mut v = chart_defaults();
        merge(
            &mut v,
            &json!({"excludeNamespaces": null, "repair": {"repairPods": null}}),
        );
        strip_nulls(&mut v);
        let values: Values = serde_json::from_value(v).unwrap_or_default();
        assert!(values.exclude_namespaces.is_empty());
        assert!(!values.repair.repair_pods);
        assert!(values.repair.enabled);
    }

    #[test]
    fn defaults_deserialize_to_the_chart_defaults() {
        let values: Values = match serde_json::from_value(chart_defaults()) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(values.repair_mode(), Some(RepairMode::Repair));
        assert_eq!(values.image_ref(), "istio-cni-rs/agent:dev");
        assert_eq!(values.log_level(), "info");
        assert_eq!(values.tolerations.len(), 3);
    }
}
