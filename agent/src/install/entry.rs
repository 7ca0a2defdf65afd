//! Our plugin entry (docs/agent.md#plugin-entry): Istio's keys, in Istio's
//! struct order, so the plugin of any version (and ours, `NetConf::parse`)
//! reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::Cause;
use crate::config::InstallSettings;

/// The `type` (and `name`) every Istio installer since 1.20 writes.
pub const PLUGIN_TYPE: &str = "istio-cni";
/// The standalone file's `cniVersion` (Istio's constant).
pub const STANDALONE_CNI_VERSION: &str = "0.3.1";

/// `{}`: Istio always emits empty `ipam` and `dns` objects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Empty {}

/// A Kubernetes LabelSelector as Go marshals it: empty parts omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// One item of AMBIENT_ENABLEMENT_SELECTOR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnablementSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// The entry, fields in Istio's struct order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Only in the standalone file: inside a list the list's version governs
    /// (libcni injects it into every plugin), so Istio drops it there.
    #[serde(rename = "cniVersion", skip_serializing_if = "Option::is_none")]
    pub cni_version: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    pub ipam: Empty,
    pub dns: Empty,
    pub plugin_log_level: String,
    pub cni_agent_run_dir: String,
    pub ambient_enabled: bool,
    /// `[]` when unset, never null.
    pub enablement_selectors: Vec<EnablementSelector>,
    /// null when empty (Istio HEAD).
    pub exclude_namespaces: Option<Vec<String>>,
    pub pod_namespace: String,
    pub native_nftables: bool,
    pub enable_ambient_detection_retry: bool,
    /// Ours (CNI_STATUS_CHECK); omitted when off so the entry stays Istio's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub status_check: bool,
}

impl Entry {
    /// The entry for these settings; `chained` drops `cniVersion`.
    pub fn build(settings: &InstallSettings, plugin_log_level: &str, chained: bool) -> Result<Entry, Cause> {
        let selectors = parse_selectors(&settings.ambient_enablement_selector)?;
        let exclude = settings.exclude_namespaces();
        Ok(Entry {
            cni_version: (!chained).then(|| STANDALONE_CNI_VERSION.to_string()),
            name: PLUGIN_TYPE.into(),
            plugin_type: PLUGIN_TYPE.into(),
            ipam: Empty {},
            dns: Empty {},
            plugin_log_level: plugin_log_level.into(),
            cni_agent_run_dir: settings.cni_agent_run_dir.to_string_lossy().into_owned(),
            ambient_enabled: settings.ambient_enabled,
            enablement_selectors: selectors,
            exclude_namespaces: (!exclude.is_empty()).then_some(exclude),
            pod_namespace: settings.pod_namespace.clone(),
            native_nftables: settings.native_nftables,
            enable_ambient_detection_retry: settings.enable_ambient_detection_retry,
            status_check: settings.status_check,
        })
    }

    /// As a JSON value, for comparing with an entry found in a file.
    pub fn to_value(&self) -> Value {
        // Serializing plain strings, bools and maps cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The entry's text: pretty with `indent` as the unit, lines after the
    /// first prefixed with `margin` (the column the entry starts at); compact
    /// when `indent` is None.
    pub fn render(&self, indent: Option<&str>, margin: &str) -> String {
        let Some(unit) = indent else {
            return serde_json::to_string(self).unwrap_or_default();
        };
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        if self.serialize(&mut ser).is_err() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&out);
        text.replace('\n', &format!("\n{margin}"))
    }

    /// The standalone file: 2-space indent and a trailing newline (Istio's golden shape).
    pub fn standalone_text(&self) -> String {
        let mut s = self.render(Some("  "), "");
        s.push('\n');
        s
    }
}

/// AMBIENT_ENABLEMENT_SELECTOR: a YAML list; empty gives `[]`, bad YAML is an error.
pub fn parse_selectors(yaml: &str) -> Result<Vec<EnablementSelector>, Cause> {
    if yaml.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: Option<Vec<EnablementSelector>> = serde_yaml::from_str(yaml)
        .map_err(|e| Cause::Setting(format!("AMBIENT_ENABLEMENT_SELECTOR is not a list of selectors: {e}")))?;
    Ok(parsed.unwrap_or_default())
}

/// Whether a JSON plugin object is an istio-cni entry (any version's format).
pub fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> InstallSettings {
        InstallSettings::from_flags(args)
    }

    const CHART_SELECTORS: &str = "- podSelector:\n    matchLabels: {istio.io/dataplane-mode: ambient}\n- podSelector:\n    matchExpressions:\n    - key: istio.io/dataplane-mode\n      operator: NotIn\n      values: [none]\n  namespaceSelector:\n    matchLabels: {istio.io/dataplane-mode: ambient}\n";

    #[test]
    fn standalone_is_struct_order_and_parses_in_the_plugin() {
        let mut s = settings(&[
            "--exclude-namespaces",
            " kube-system, ,istio-system",
            "--pod-namespace",
            "istio-system",
        ]);
        s.ambient_enablement_selector = CHART_SELECTORS.into();
        let e = Entry::build(&s, "debug", false).unwrap();
        let text = e.standalone_text();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  \""))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "cniVersion",
                "name",
                "type",
                "ipam",
                "dns",
                "plugin_log_level",
                "cni_agent_run_dir",
                "ambient_enabled",
                "enablement_selectors",
                "exclude_namespaces",
                "pod_namespace",
                "native_nftables",
                "enable_ambient_detection_retry"
            ]
        );
        let conf = istio_cni::cni::config::NetConf::parse(text.as_bytes()).unwrap();
        assert_eq!(conf.exclude_namespaces, ["kube-system", "istio-system"]);
        assert_eq!(conf.log_level.as_deref(), Some("debug"));
        assert_eq!(conf.pod_namespace, "istio-system");
        assert!(!conf.status_check);
        assert!(text.contains("\"operator\": \"NotIn\""), "{text}");
    }

    #[test]
    fn empty_lists_and_chained_shape() {
        let mut s = settings(&[]);
        s.status_check = true;
        let v = Entry::build(&s, "info", true).unwrap().to_value();
        assert_eq!(v["exclude_namespaces"], Value::Null);
        assert_eq!(v["enablement_selectors"], serde_json::json!([]));
        assert!(v.get("cniVersion").is_none());
        assert_eq!(v["status_check"], Value::Bool(true));
        assert!(is_ours(&v));
    }

    #[test]
    fn bad_selector_yaml_is_a_setting_error() {
        let s = settings(&["--ambient-enablement-selector", "podSelector: [oops"]);
        let err = Entry::build(&s, "info", true).unwrap_err().to_string();
        assert!(err.contains("AMBIENT_ENABLEMENT_SELECTOR"), "{err}");
    }

    #[test]
    fn unknown_selector_fields_are_ignored() {
        let mut s = settings(&[]);
        s.ambient_enablement_selector =
            "- podSelector:\n    matchLabels: {a: b}\n    futureField: 1\n  nodeSelector: {x: y}\n".into();
        let v = Entry::build(&s, "info", true).unwrap().to_value();
        assert_eq!(
            v["enablement_selectors"],
            serde_json::json!([{"podSelector": {"matchLabels": {"a": "b"}}}])
        );
    }

    #[test]
    fn render_indents_after_the_first_line() {
        let e = Entry::build(&settings(&[]), "info", true).unwrap();
        let text = e.render(Some("\t"), "\t\t");
        assert!(text.starts_with("{\n\t\t\t\"name\": \"istio-cni\""), "{text}");
        assert!(text.ends_with("\n\t\t}"), "{text}");
        assert!(!e.render(None, "").contains('\n'));
    }
}
