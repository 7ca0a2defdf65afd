//! What one plugin reads on stdin: libcni's `buildOneConfig`.
//!
//! The plugin's own object from the list, with `name` and `cniVersion` set to
//! the list's, `prevResult` when there is one, and — for ADD, DEL and CHECK —
//! `runtimeConfig` holding the capability arguments the plugin declared in
//! `capabilities`. Like libcni, `capabilities` itself is left in place. The
//! JSON is compact with sorted keys (Go's `json.Marshal` of a map).

use serde_json::{Map, Value};

use super::config::PluginConf;
use super::json::canonical;

/// Key under which GC receives the attachments to keep.
pub const GC_VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The pre-rename GC key libcni still injects for older plugins.
pub const GC_LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// The plugin's own object with the list's `name` and `cniVersion`.
fn plugin_object(network_name: &str, cni_version: &str, plugin: &PluginConf) -> Map<String, Value> {
    let mut obj = plugin.raw.clone();
    obj.insert("name".to_owned(), Value::String(network_name.to_owned()));
    obj.insert("cniVersion".to_owned(), Value::String(cni_version.to_owned()));
    obj
}

/// The stdin bytes for one plugin invocation: the plugin object with
/// `prevResult` and the `runtimeConfig` of its declared capabilities.
pub fn plugin_stdin(
    network_name: &str,
    cni_version: &str,
    plugin: &PluginConf,
    prev_result: Option<&Value>,
    capability_args: Option<&Map<String, Value>>,
) -> Vec<u8> {
    let mut obj = plugin_object(network_name, cni_version, plugin);
    if let Some(prev) = prev_result {
        obj.insert("prevResult".to_owned(), prev.clone());
    }
    if let Some(args) = capability_args {
        let runtime: Map<String, Value> = plugin
            .capabilities
            .iter()
            .filter(|(_, enabled)| **enabled)
            .filter_map(|(cap, _)| args.get(cap).map(|v| (cap.clone(), v.clone())))
            .collect();
        if !runtime.is_empty() {
            obj.insert("runtimeConfig".to_owned(), Value::Object(runtime));
        }
    }
    canonical(&Value::Object(obj)).into_bytes()
}

/// The stdin for GC: the plugin object with `name`, `cniVersion` and the
/// attachments to keep under both the current and the legacy key.
pub fn gc_stdin(network_name: &str, cni_version: &str, plugin: &PluginConf, valid: &[GcAttachment]) -> Vec<u8> {
    let mut obj = plugin_object(network_name, cni_version, plugin);
    let list = Value::Array(
        valid
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert("containerID".to_owned(), Value::String(a.container_id.clone()));
                m.insert("ifname".to_owned(), Value::String(a.ifname.clone()));
                Value::Object(m)
            })
            .collect(),
    );
    obj.insert(GC_VALID_ATTACHMENTS_KEY.to_owned(), list.clone());
    obj.insert(GC_LEGACY_ATTACHMENTS_KEY.to_owned(), list);
    canonical(&Value::Object(obj)).into_bytes()
}

/// The stdin for STATUS: the plugin object with `name` and `cniVersion`.
pub fn status_stdin(network_name: &str, cni_version: &str, plugin: &PluginConf) -> Vec<u8> {
    plugin_stdin(network_name, cni_version, plugin, None, None)
}

/// An attachment GC must keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GcAttachment {
    /// The container id.
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

impl GcAttachment {
    /// The attachment of `container_id` on `ifname`.
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        GcAttachment {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin(v: Value) -> PluginConf {
        PluginConf::from_value(&v).unwrap()
    }

    #[test]
    fn first_plugin_gets_name_and_version_only() {
        let p = plugin(json!({"type": "bridge", "name": "ignored", "cniVersion": "0.3.1", "bridge": "cni0"}));
        let stdin = plugin_stdin("kindnet", "1.0.0", &p, None, Some(&Map::new()));
        assert_eq!(
            String::from_utf8(stdin).unwrap(),
            r#"{"bridge":"cni0","cniVersion":"1.0.0","name":"kindnet","type":"bridge"}"#
        );
    }

    #[test]
    fn chained_plugin_gets_prev_result_and_declared_capabilities_only() {
        let p = plugin(json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}));
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]});
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        caps.insert("bandwidth".into(), json!({"ingressRate": 1}));
        caps.insert("ipRanges".into(), json!([]));
        let v: Value = serde_json::from_slice(&plugin_stdin("net", "1.0.0", &p, Some(&prev), Some(&caps))).unwrap();
        assert_eq!(v["prevResult"], prev);
        assert_eq!(
            v["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        // libcni leaves `capabilities` in place.
        assert_eq!(v["capabilities"]["portMappings"], true);
    }

    #[test]
    fn no_matching_capability_means_no_runtime_config() {
        let p = plugin(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        let v: Value = serde_json::from_slice(&plugin_stdin("net", "1.0.0", &p, None, None)).unwrap();
        assert!(v.get("runtimeConfig").is_none());
    }

    #[test]
    fn gc_request_carries_both_keys() {
        let p = plugin(json!({"type": "bridge"}));
        let stdin = gc_stdin("net", "1.1.0", &p, &[GcAttachment::new("c1", "eth0")]);
        assert_eq!(
            String::from_utf8(stdin).unwrap(),
            r#"{"cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}],"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"cniVersion":"1.1.0","name":"net","type":"bridge"}"#
        );
    }
}
