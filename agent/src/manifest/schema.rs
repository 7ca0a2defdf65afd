//! The keys Istio's `istio-cni` chart documents
//! (docs/agent.md#chart-values), and a checker that names every unknown or ill-typed key by its full
//! dotted path. Helm silently ignores typos; we refuse them, because a
//! misspelt `repair.deletePods` quietly changes which pods get touched.
//!
//! The checker also normalises scalars the chart would print as strings
//! (`tag: 1.24` is a YAML float) so the typed [`super::values::Values`]
//! deserialises plainly.

use k8s_openapi::api::apps::v1::DaemonSetUpdateStrategy;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodSecurityContext, Probe, ResourceRequirements, SELinuxOptions, SeccompProfile, Toleration,
    Volume, VolumeMount,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What a key holds.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Bool,
    /// Any scalar; numbers and booleans become strings.
    Str,
    Int,
    /// A list of scalars (a single scalar counts as a one-element list, as in the chart's `join`).
    StrList,
    /// A map of scalars (labels, annotations, env).
    StrMap,
    /// Checked by deserialising into a Kubernetes type.
    Typed(&'static str, fn(&Value) -> Result<(), String>),
    /// The chart's `resources`: `{requests,limits}: {name: quantity}`.
    Resources,
    /// A nested object whose known keys are those of the groups together.
    Obj(&'static [&'static [Field]]),
    /// Accepted and not read here (other Istio components' settings).
    Ignored,
    /// A key older charts had; the text says what replaced it.
    Removed(&'static str),
    /// A known key this renderer cannot honour; the text says why.
    Unsupported(&'static str),
}

/// One known key.
#[derive(Clone, Copy)]
pub(crate) struct Field(pub &'static str, pub Kind);

fn typed<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(v.clone())
        .map(drop)
        .map_err(|e| e.to_string())
}

const LOGGING: &[Field] = &[Field("level", Kind::Str)];

const AMBIENT: &[Field] = &[
    Field("enabled", Kind::Bool),
    Field(
        "enablementSelectors",
        Kind::Typed("a list of selectors", typed::<Vec<Value>>),
    ),
    Field("configDir", Kind::Str),
    Field("dnsCapture", Kind::Bool),
    Field("ipv6", Kind::Bool),
    Field("reconcileIptablesOnStartup", Kind::Bool),
    Field("shareHostNetworkNamespace", Kind::Bool),
    Field("enableAmbientDetectionRetry", Kind::Bool),
];

const REPAIR: &[Field] = &[
    Field("enabled", Kind::Bool),
    Field("hub", Kind::Str),
    Field("tag", Kind::Str),
    Field("labelPods", Kind::Bool),
    Field("deletePods", Kind::Bool),
    Field("repairPods", Kind::Bool),
    Field("initContainerName", Kind::Str),
    Field("brokenPodLabelKey", Kind::Str),
    Field("brokenPodLabelValue", Kind::Str),
];

/// Ours, beyond Istio's chart (docs/taint-and-safe-upgrade.md).
const TAINT: &[Field] = &[Field("enabled", Kind::Bool), Field("name", Kind::Str)];
const SAFE_UPGRADE: &[Field] = &[Field("enabled", Kind::Bool)];

const RESOURCE_QUOTAS: &[Field] = &[Field("enabled", Kind::Bool), Field("pods", Kind::Int)];

/// The chart's own keys: top level, and again under `cni.`.
pub(crate) const CNI: &[Field] = &[
    Field("hub", Kind::Str),
    Field("tag", Kind::Str),
    Field("variant", Kind::Str),
    Field("image", Kind::Str),
    Field("pullPolicy", Kind::Str),
    Field("logging", Kind::Obj(&[LOGGING])),
    Field("cniBinDir", Kind::Str),
    Field("cniConfDir", Kind::Str),
    Field("cniConfFileName", Kind::Str),
    Field("cniNetnsDir", Kind::Str),
    Field("istioOwnedCNIConfig", Kind::Bool),
    Field("istioOwnedCNIConfigFileName", Kind::Str),
    Field("excludeNamespaces", Kind::StrList),
    Field("affinity", Kind::Typed("an affinity", typed::<Affinity>)),
    Field("daemonSetLabels", Kind::StrMap),
    Field("podAnnotations", Kind::StrMap),
    Field("podLabels", Kind::StrMap),
    Field("chained", Kind::Bool),
    Field("provider", Kind::Str),
    Field("ambient", Kind::Obj(&[AMBIENT])),
    Field("repair", Kind::Obj(&[REPAIR])),
    Field("taint", Kind::Obj(&[TAINT])),
    Field("safeUpgrade", Kind::Obj(&[SAFE_UPGRADE])),
    Field(
        "seccompProfile",
        Kind::Typed("a seccomp profile", typed::<SeccompProfile>),
    ),
    Field(
        "seLinuxOptions",
        Kind::Typed("SELinux options", typed::<SELinuxOptions>),
    ),
    Field("useAppArmorAnnotation", Kind::Bool),
    Field("resources", Kind::Resources),
    Field("resourceQuotas", Kind::Obj(&[RESOURCE_QUOTAS])),
    Field(
        "tolerations",
        Kind::Typed("a list of tolerations", typed::<Vec<Toleration>>),
    ),
    Field(
        "updateStrategy",
        Kind::Typed("a DaemonSet update strategy", typed::<DaemonSetUpdateStrategy>),
    ),
    Field("terminationGracePeriodSeconds", Kind::Int),
    Field("revision", Kind::Str),
    Field("ownerName", Kind::Str),
    Field("env", Kind::StrMap),
    Field("logLevel", Kind::Removed("removed in Istio 1.23; use logging.level")),
    Field(
        "privileged",
        Kind::Removed("removed in Istio 1.22; the agent gets exactly the capabilities its repair mode needs"),
    ),
    Field(
        "rollingMaxUnavailable",
        Kind::Removed("removed in Istio 1.26; use updateStrategy.rollingUpdate.maxUnavailable"),
    ),
    Field(
        "cniNetworkConfig",
        Kind::Removed("removed in Istio 1.23; the plugin entry is generated"),
    ),
];

const NETWORK_POLICY: &[Field] = &[Field("enabled", Kind::Bool)];

/// `global.*`: the keys the CNI chart reads, then the ones only other Istio
/// charts read (a values file or IstioOperator shared by every component
/// carries them).
pub(crate) const GLOBAL: &[Field] = &[
    Field("hub", Kind::Str),
    Field("tag", Kind::Str),
    Field("variant", Kind::Str),
    Field("imagePullPolicy", Kind::Str),
    Field("imagePullSecrets", Kind::StrList),
    Field("logging", Kind::Obj(&[LOGGING])),
    Field("logAsJson", Kind::Bool),
    Field("networkPolicy", Kind::Obj(&[NETWORK_POLICY])),
    Field("defaultResources", Kind::Resources),
    Field("nativeNftables", Kind::Bool),
    Field("resourceScope", Kind::Str),
    Field("platform", Kind::Str),
    Field("profile", Kind::Str),
    Field("arch", Kind::Ignored),
    Field("autoscalingv2API", Kind::Ignored),
    Field("caAddress", Kind::Ignored),
    Field("caName", Kind::Ignored),
    Field("certSigners", Kind::Ignored),
    Field("configCluster", Kind::Ignored),
    Field("configValidation", Kind::Ignored),
    Field("defaultNodeSelector", Kind::Ignored),
    Field("defaultPodDisruptionBudget", Kind::Ignored),
    Field("defaultTolerations", Kind::Ignored),
    Field("externalIstiod", Kind::Ignored),
    Field("ipFamilies", Kind::Ignored),
    Field("ipFamilyPolicy", Kind::Ignored),
    Field("istioNamespace", Kind::Ignored),
    Field("istiod", Kind::Ignored),
    Field("jwtPolicy", Kind::Ignored),
    Field("meshID", Kind::Ignored),
    Field("meshNetworks", Kind::Ignored),
    Field("mountMtlsCerts", Kind::Ignored),
    Field("multiCluster", Kind::Ignored),
    Field("network", Kind::Ignored),
    Field("omitSidecarInjectorConfigMap", Kind::Ignored),
    Field("operatorManageWebhooks", Kind::Ignored),
    Field("pilotCertProvider", Kind::Ignored),
    Field("podDNSSearchNamespaces", Kind::Ignored),
    Field("priorityClassName", Kind::Ignored),
    Field("proxy", Kind::Ignored),
    Field("proxy_init", Kind::Ignored),
    Field("remotePilotAddress", Kind::Ignored),
    Field("sds", Kind::Ignored),
    Field("sts", Kind::Ignored),
    Field("tracer", Kind::Ignored),
    Field("trustBundleName", Kind::Ignored),
    Field("useMCP", Kind::Ignored),
    Field("waypoint", Kind::Ignored),
];

/// The sections and settings at the root of every values document: a values
/// file (and what `--set` paths address) and an IstioOperator's `spec.values`.
const VALUES_SECTIONS: &[Field] = &[
    Field("cni", Kind::Obj(&[CNI])),
    Field("global", Kind::Obj(&[GLOBAL])),
    Field("profile", Kind::Str),
    Field("platform", Kind::Str),
    Field("compatibilityVersion", Kind::Str),
];

/// What a values file refuses at its root, beyond the unknown keys.
const VALUES_ROOT: &[Field] = &[
    Field(
        "defaults",
        Kind::Removed("the chart refuses `defaults.*`; set the keys directly"),
    ),
    Field(
        "_internal_defaults_do_not_set",
        Kind::Removed("the chart's own defaults; set the keys directly"),
    ),
];

/// Every key at the root of a values file: the chart's keys, [`VALUES_SECTIONS`] and [`VALUES_ROOT`].
pub(crate) const VALUES: &[&[Field]] = &[CNI, VALUES_SECTIONS, VALUES_ROOT];

/// `spec.components.cni.k8s`: istioctl's Kubernetes settings for the DaemonSet.
pub(crate) const K8S: &[Field] = &[
    Field("affinity", Kind::Typed("an affinity", typed::<Affinity>)),
    Field("env", Kind::Typed("a list of env vars", typed::<Vec<EnvVar>>)),
    Field("imagePullPolicy", Kind::Str),
    Field("nodeSelector", Kind::StrMap),
    Field("podAnnotations", Kind::StrMap),
    Field("priorityClassName", Kind::Str),
    Field("readinessProbe", Kind::Typed("a probe", typed::<Probe>)),
    Field(
        "resources",
        Kind::Typed("resource requirements", typed::<ResourceRequirements>),
    ),
    Field(
        "strategy",
        Kind::Typed("a DaemonSet update strategy", typed::<DaemonSetUpdateStrategy>),
    ),
    Field(
        "tolerations",
        Kind::Typed("a list of tolerations", typed::<Vec<Toleration>>),
    ),
    Field(
        "securityContext",
        Kind::Typed("a pod security context", typed::<PodSecurityContext>),
    ),
    Field("volumes", Kind::Typed("a list of volumes", typed::<Vec<Volume>>)),
    Field(
        "volumeMounts",
        Kind::Typed("a list of volume mounts", typed::<Vec<VolumeMount>>),
    ),
    Field("hpaSpec", Kind::Unsupported("does not apply to a DaemonSet")),
    Field(
        "podDisruptionBudget",
        Kind::Unsupported("does not apply to a DaemonSet"),
    ),
    Field("replicaCount", Kind::Unsupported("does not apply to a DaemonSet")),
    Field("service", Kind::Unsupported("the CNI agent has no Service")),
    Field("serviceAnnotations", Kind::Unsupported("the CNI agent has no Service")),
    Field(
        "overlays",
        Kind::Unsupported("is not supported; use the k8s settings above, values or --set"),
    ),
];

const CNI_COMPONENT: &[Field] = &[
    Field("enabled", Kind::Bool),
    Field("namespace", Kind::Str),
    Field("hub", Kind::Str),
    Field("tag", Kind::Str),
    Field("label", Kind::StrMap),
    Field("k8s", Kind::Obj(&[K8S])),
];

const COMPONENTS: &[Field] = &[
    Field("cni", Kind::Obj(&[CNI_COMPONENT])),
    Field("base", Kind::Ignored),
    Field("pilot", Kind::Ignored),
    Field("ztunnel", Kind::Ignored),
    Field("ingressGateways", Kind::Ignored),
    Field("egressGateways", Kind::Ignored),
    Field("istiodRemote", Kind::Ignored),
];

/// `spec.values` beyond [`VALUES_SECTIONS`]: other charts' sections ignored.
const OPERATOR_VALUES: &[Field] = &[
    Field("revision", Kind::Str),
    Field("ownerName", Kind::Str),
    Field("base", Kind::Ignored),
    Field("defaultRevision", Kind::Ignored),
    Field("experimental", Kind::Ignored),
    Field("gatewayClasses", Kind::Ignored),
    Field("gateways", Kind::Ignored),
    Field("istio_cni", Kind::Ignored),
    Field("istiodRemote", Kind::Ignored),
    Field("meshConfig", Kind::Ignored),
    Field("pilot", Kind::Ignored),
    Field("revisionTags", Kind::Ignored),
    Field("sidecarInjectorWebhook", Kind::Ignored),
    Field("telemetry", Kind::Ignored),
    Field("ztunnel", Kind::Ignored),
];

const OPERATOR_SPEC: &[Field] = &[
    Field("profile", Kind::Str),
    Field("hub", Kind::Str),
    Field("tag", Kind::Str),
    Field("namespace", Kind::Str),
    Field("revision", Kind::Str),
    Field("compatibilityVersion", Kind::Str),
    Field("components", Kind::Obj(&[COMPONENTS])),
    Field("values", Kind::Obj(&[VALUES_SECTIONS, OPERATOR_VALUES])),
    Field("meshConfig", Kind::Ignored),
    Field("installPackagePath", Kind::Ignored),
    Field("resourceSuffix", Kind::Ignored),
    Field("unvalidatedValues", Kind::Ignored),
];

/// An `IstioOperator` document.
pub(crate) const OPERATOR: &[Field] = &[
    Field("apiVersion", Kind::Str),
    Field("kind", Kind::Str),
    Field("metadata", Kind::Ignored),
    Field("spec", Kind::Obj(&[OPERATOR_SPEC])),
    Field("status", Kind::Ignored),
];

/// Checks `value` (an object or null) against `fields`; every problem is
/// pushed as "`path` ...". Scalars under `Str` keys become strings.
pub(crate) fn check(value: &mut Value, fields: &[&[Field]], path: &str, problems: &mut Vec<String>) {
    let map = match value {
        Value::Null => return,
        Value::Object(map) => map,
        other => {
            problems.push(format!("`{}` must be a map, got {}", display(path), describe(other)));
            return;
        }
    };
    for (key, v) in map.iter_mut() {
        let full = join(path, key);
        match fields.iter().flat_map(|g| g.iter()).find(|f| f.0 == key) {
            Some(f) => check_kind(v, f.1, &full, problems),
            None => problems.push(unknown(&full, key, fields)),
        }
    }
}

/// Checks one value of a known key.
pub(crate) fn check_kind(v: &mut Value, kind: Kind, path: &str, problems: &mut Vec<String>) {
    if v.is_null() {
        // Helm: null removes the key (and its default).
        return;
    }
    let problem = match kind {
        Kind::Bool => (!v.is_boolean()).then(|| format!("must be true or false, got {}", describe(v))),
        Kind::Str => stringify(v).err(),
        Kind::Int => (!(v.is_i64() || v.is_u64())).then(|| format!("must be an integer, got {}", describe(v))),
        Kind::StrList => match v {
            Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .find_map(|(i, item)| stringify(item).err().map(|e| format!("[{i}] {e}"))),
            other => stringify(other).err(),
        },
        Kind::StrMap => str_map(v),
        Kind::Resources => resources(v),
        Kind::Typed(what, f) => f(v).err().map(|e| format!("must be {what}: {e}")),
        Kind::Obj(groups) => {
            check(v, groups, path, problems);
            None
        }
        Kind::Ignored => None,
        Kind::Removed(why) | Kind::Unsupported(why) => Some(why.to_string()),
    };
    if let Some(p) = problem {
        problems.push(format!("`{path}` {p}"));
    }
}

/// A scalar as the chart prints it; maps and lists are errors.
fn stringify(v: &mut Value) -> Result<(), String> {
    match v {
        Value::String(_) | Value::Null => Ok(()),
        Value::Bool(b) => {
            *v = Value::String(b.to_string());
            Ok(())
        }
        Value::Number(n) => {
            *v = Value::String(n.to_string());
            Ok(())
        }
        other => Err(format!("must be a string, got {}", describe(other))),
    }
}

fn str_map(v: &mut Value) -> Option<String> {
    match v {
        Value::Object(map) => map
            .iter_mut()
            .find_map(|(k, item)| stringify(item).err().map(|e| format!("entry {k:?} {e}"))),
        other => Some(format!("must be a map of strings, got {}", describe(other))),
    }
}

fn resources(v: &mut Value) -> Option<String> {
    let Value::Object(map) = v else {
        return Some(format!("must be a map with requests/limits, got {}", describe(v)));
    };
    for (k, inner) in map.iter_mut() {
        if k != "requests" && k != "limits" {
            return Some(format!("has unknown key {k:?} (requests, limits)"));
        }
        if inner.is_null() {
            continue;
        }
        if let Some(e) = str_map(inner) {
            return Some(format!("{k} {e}"));
        }
    }
    None
}

fn unknown(full: &str, key: &str, fields: &[&[Field]]) -> String {
    let best = fields
        .iter()
        .flat_map(|g| g.iter())
        .filter(|f| !matches!(f.1, Kind::Removed(_)))
        .map(|f| (edit_distance(&key.to_ascii_lowercase(), &f.0.to_ascii_lowercase()), f.0))
        .min();
    match best {
        Some((d, name)) if d <= 2.max(key.len() / 4) => {
            let parent = full.strip_suffix(key).unwrap_or("");
            format!("unknown key `{full}` (did you mean `{parent}{name}`?)")
        }
        _ => format!("unknown key `{full}`"),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() { "(document)" } else { path }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(mut v: Value) -> Vec<String> {
        let mut p = Vec::new();
        check(&mut v, VALUES, "", &mut p);
        p
    }

    #[test]
    fn typo_is_named_with_its_full_path_and_a_hint() {
        let p = problems(json!({"cni": {"repair": {"repairPod": true}}}));
        assert_eq!(
            p,
            ["unknown key `cni.repair.repairPod` (did you mean `cni.repair.repairPods`?)"]
        );
    }

    #[test]
    fn scalars_become_strings_and_bools_stay_strict() {
        let mut v = json!({"cni": {"tag": 1.24, "env": {"A": 1}}});
        let mut p = Vec::new();
        check(&mut v, VALUES, "", &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(v, json!({"cni": {"tag": "1.24", "env": {"A": "1"}}}));
        let p = problems(json!({"cni": {"chained": "false"}}));
        assert_eq!(p, ["`cni.chained` must be true or false, got \"false\""]);
    }

    #[test]
    fn removed_keys_say_what_replaced_them() {
        let p = problems(json!({"cni": {"logLevel": "debug"}}));
        assert_eq!(p, ["`cni.logLevel` removed in Istio 1.23; use logging.level"]);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
