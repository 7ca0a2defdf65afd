//! Network configuration: parsing `.conflist` and `.conf` exactly as libcni
//! does (`ConfListFromBytes`, `ConfFromBytes`, `ConfListFromConf`), and
//! loading a file of a conf dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::json::canonical;
use crate::select::{ReadFile, conf_files};
use crate::version;

/// One plugin entry of a list, as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// `type`: the binary to run.
    pub plugin_type: String,
    /// `name`, when the entry has one (libcni overrides it with the list's).
    pub name: Option<String>,
    /// `capabilities` (runtime features the plugin accepts in `runtimeConfig`).
    pub capabilities: BTreeMap<String, bool>,
    /// The entry as JSON, every key kept (unknown keys are passed through).
    pub raw: Map<String, Value>,
}

impl PluginConf {
    /// Parses one plugin object with libcni's checks: an object whose
    /// `type` is a non-empty string, `name`/`cniVersion` strings,
    /// `capabilities` a map of booleans, `ipam`/`dns` objects (`dns` with
    /// string lists) — the shape of Go's `types.PluginConf`.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| format!("error parsing configuration: expected an object, got {}", kind(value)))?;
        let string_field = |key: &str| -> Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!(
                    "error parsing configuration: {key:?} must be a string, got {}",
                    kind(other)
                )),
            }
        };
        let plugin_type = string_field("type")?.unwrap_or_default();
        let name = string_field("name")?;
        string_field("cniVersion")?;
        let mut capabilities = BTreeMap::new();
        match obj.get("capabilities") {
            None | Some(Value::Null) => {}
            Some(Value::Object(caps)) => {
                for (k, v) in caps {
                    let enabled = v.as_bool().ok_or_else(|| {
                        format!(
                            "error parsing configuration: capability {k:?} must be a boolean, got {}",
                            kind(v)
                        )
                    })?;
                    capabilities.insert(k.clone(), enabled);
                }
            }
            Some(other) => {
                return Err(format!(
                    "error parsing configuration: \"capabilities\" must be an object, got {}",
                    kind(other)
                ));
            }
        }
        for key in ["ipam", "dns"] {
            match obj.get(key) {
                None | Some(Value::Null) | Some(Value::Object(_)) => {}
                Some(other) => {
                    return Err(format!(
                        "error parsing configuration: {key:?} must be an object, got {}",
                        kind(other)
                    ));
                }
            }
        }
        if let Some(Value::Object(dns)) = obj.get("dns") {
            check_dns(dns)?;
        }
        if plugin_type.is_empty() {
            return Err("error parsing configuration: missing 'type'".to_owned());
        }
        Ok(Self {
            plugin_type,
            name,
            capabilities,
            raw: obj.clone(),
        })
    }
}

fn check_dns(dns: &Map<String, Value>) -> Result<(), String> {
    for (key, v) in dns {
        let ok = match key.as_str() {
            "nameservers" | "search" | "options" => {
                v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
            }
            "domain" => v.is_null() || v.is_string(),
            _ => true,
        };
        if !ok {
            return Err(format!(
                "error parsing configuration: dns.{key} has the wrong type ({})",
                kind(v)
            ));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A network configuration list: what a runtime executes for one attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network name.
    pub name: String,
    /// The negotiated spec version (see [`version::negotiate`]); may be empty
    /// for a `.conf` without `cniVersion` (treated as 0.1.0).
    pub cni_version: String,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `disableGC`.
    pub disable_gc: bool,
    /// `loadOnlyInlinedPlugins`.
    pub load_only_inlined_plugins: bool,
    /// The plugins, in execution order.
    pub plugins: Vec<PluginConf>,
    /// The list's bytes (the file, or the synthesized list for a `.conf`);
    /// stored in the result cache.
    pub bytes: Vec<u8>,
    /// The file it was loaded from, if any.
    pub source: Option<PathBuf>,
}

impl NetworkConfigList {
    /// Parses a configuration list (libcni `NetworkConfFromBytes`). Plugins
    /// are required here; [`NetworkConfigList::from_file`] also accepts lists
    /// whose plugins live in `<dir>/<name>/*.conf`.
    pub fn from_list_bytes(bytes: &[u8]) -> Result<Self, String> {
        let list = Self::parse_list(bytes)?;
        if list.plugins.is_empty() {
            return Err("error parsing configuration list: no plugins in list".to_owned());
        }
        Ok(list)
    }

    fn parse_list(bytes: &[u8]) -> Result<Self, String> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| format!("error parsing configuration list: {e}"))?;
        let obj = raw.as_object().ok_or_else(|| {
            format!(
                "error parsing configuration list: expected an object, got {}",
                kind(&raw)
            )
        })?;
        let name = match obj.get("name") {
            None => return Err("error parsing configuration list: no name".to_owned()),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "error parsing configuration list: invalid name type ({})",
                    kind(other)
                ));
            }
        };
        let mut cni_version = match obj.get("cniVersion") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "error parsing configuration list: invalid cniVersion type ({})",
                    kind(other)
                ));
            }
        };
        if let Some(raw_versions) = obj.get("cniVersions") {
            let arr = raw_versions.as_array().ok_or_else(|| {
                format!(
                    "error parsing configuration list: invalid type for cniVersions ({})",
                    kind(raw_versions)
                )
            })?;
            let mut versions = Vec::new();
            for (i, v) in arr.iter().enumerate() {
                let s = v.as_str().ok_or_else(|| {
                    format!(
                        "error parsing configuration list: invalid type for cniVersions index {i} ({})",
                        kind(v)
                    )
                })?;
                versions.push(s.to_owned());
            }
            let chosen = version::negotiate(&cni_version, &versions)
                .map_err(|e| format!("error parsing configuration list: {e}"))?;
            if let Some(v) = chosen {
                cni_version = v;
            }
        }
        let read_bool = |key: &str| -> Result<bool, String> {
            match obj.get(key) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    other => Err(format!(
                        "error parsing configuration list: invalid value {other:?} for {key}"
                    )),
                },
                Some(other) => Err(format!(
                    "error parsing configuration list: invalid type ({}) for {key}",
                    kind(other)
                )),
            }
        };
        let disable_check = read_bool("disableCheck")?;
        let disable_gc = read_bool("disableGC")?;
        let load_only_inlined_plugins = read_bool("loadOnlyInlinedPlugins")?;
        let mut plugins = Vec::new();
        match obj.get("plugins") {
            None if load_only_inlined_plugins => {
                return Err(
                    "error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key"
                        .to_owned(),
                );
            }
            None => {}
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err("error parsing configuration list: no plugins in list".to_owned());
                }
                for (i, item) in items.iter().enumerate() {
                    plugins.push(
                        PluginConf::from_value(item).map_err(|e| format!("failed to parse plugin config {i}: {e}"))?,
                    );
                }
            }
            Some(other) => {
                return Err(format!(
                    "error parsing configuration list: invalid 'plugins' type ({})",
                    kind(other)
                ));
            }
        }
        Ok(Self {
            name,
            cni_version,
            disable_check,
            disable_gc,
            load_only_inlined_plugins,
            plugins,
            bytes: bytes.to_vec(),
            source: None,
        })
    }

    /// Parses a single-plugin `.conf` and wraps it into a list (libcni
    /// `ConfFromBytes` + `ConfListFromConf`): the list takes the plugin's
    /// `name` and `cniVersion` (empty when absent).
    pub fn from_conf_bytes(bytes: &[u8]) -> Result<Self, String> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| format!("error parsing configuration: {e}"))?;
        let plugin = PluginConf::from_value(&raw)?;
        let version = plugin.raw.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        let wrapped = json!({
            "name": plugin.name.clone().unwrap_or_default(),
            "cniVersion": version,
            "plugins": [Value::Object(plugin.raw.clone())],
        });
        Self::from_list_bytes(canonical(&wrapped).as_bytes())
    }

    /// Parses a file's bytes by its name: a `.conflist` as a list (its
    /// plugins inline), anything else as a single plugin.
    pub fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Self, String> {
        let mut list = if is_list(path) {
            Self::from_list_bytes(bytes)?
        } else {
            Self::from_conf_bytes(bytes)?
        };
        list.source = Some(path.to_path_buf());
        Ok(list)
    }

    /// Loads a file as libcni does: `.conflist` as a list (plus
    /// `<dir>/<name>/*.conf` unless `loadOnlyInlinedPlugins`), anything else
    /// as a single plugin. Every file is read with `read`.
    pub fn load(path: &Path, read: ReadFile) -> Result<Self, String> {
        let bytes = read(path)?;
        if !is_list(path) {
            return Self::from_file_bytes(path, &bytes);
        }
        let mut list = Self::parse_list(&bytes)?;
        if !list.load_only_inlined_plugins {
            let dir = path.parent().unwrap_or_else(|| Path::new("."));
            list.plugins.extend(plugins_from_dir(&dir.join(&list.name), read)?);
        }
        if list.plugins.is_empty() {
            return Err("no plugin configs found".to_owned());
        }
        list.source = Some(path.to_path_buf());
        Ok(list)
    }

    /// The plugin types in order, for messages (`bridge,portmap`).
    pub fn plugin_types(&self) -> String {
        self.plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn is_list(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "conflist")
}

/// libcni ≥ 1.2: plugins of list `<name>` stored as `<dir>/<name>/*.conf`.
fn plugins_from_dir(dir: &Path, read: ReadFile) -> Result<Vec<PluginConf>, String> {
    let files = match conf_files(dir, &[".conf"]) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("failed to read plugin config files in {}: {e}", dir.display())),
    };
    files
        .iter()
        .map(|f| {
            let bytes = read(f)?;
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|e| format!("error parsing configuration: {e}"))?;
            PluginConf::from_value(&value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::read_regular;
    use crate::test_support::Scratch;

    const BRIDGE: &str = r#"{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"bridge","x-unknown":1},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;
    #[test]
    fn list_parses_with_unknown_keys_kept() {
        let list = NetworkConfigList::from_list_bytes(BRIDGE.as_bytes()).unwrap();
        assert_eq!(list.name, "net1");
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(list.plugin_types(), "bridge,portmap");
        assert_eq!(list.plugins[0].raw["x-unknown"], 1);
        assert_eq!(list.plugins[1].capabilities.get("portMappings"), Some(&true));
        assert_eq!(list.bytes, BRIDGE.as_bytes());
    }

    #[test]
    fn list_errors_match_libcni() {
        let cases = [
            ("{", "error parsing configuration list"),
            (r#"{"plugins":[{"type":"a"}]}"#, "no name"),
            (r#"{"name":1,"plugins":[{"type":"a"}]}"#, "invalid name type"),
            (
                r#"{"name":"n","cniVersion":1,"plugins":[{"type":"a"}]}"#,
                "invalid cniVersion type",
            ),
            (r#"{"name":"n","plugins":[]}"#, "no plugins in list"),
            (r#"{"name":"n"}"#, "no plugins in list"),
            (r#"{"name":"n","plugins":{}}"#, "invalid 'plugins' type"),
            (
                r#"{"name":"n","plugins":[{"name":"x"}]}"#,
                "failed to parse plugin config 0: error parsing configuration: missing 'type'",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"a","capabilities":{"x":"yes"}}]}"#,
                "capability \"x\" must be a boolean",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"a","ipam":[]}]}"#,
                "\"ipam\" must be an object",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"a","dns":{"nameservers":"1.1.1.1"}}]}"#,
                "dns.nameservers",
            ),
            (
                r#"{"name":"n","disableCheck":"maybe","plugins":[{"type":"a"}]}"#,
                "invalid value \"maybe\" for disableCheck",
            ),
            (r#"{"name":"n","loadOnlyInlinedPlugins":true}"#, "no 'plugins' key"),
        ];
        for (input, want) in cases {
            let err = NetworkConfigList::from_list_bytes(input.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{input}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn lenient_booleans_and_version_negotiation() {
        let list = NetworkConfigList::from_list_bytes(
            br#"{"name":"n","cniVersion":"0.4.0","cniVersions":["1.0.0","2.0.0"],"disableCheck":"TRUE","disableGC":false,"plugins":[{"type":"a"}]}"#,
        )
        .unwrap();
        assert!(list.disable_check);
        assert!(!list.disable_gc);
        assert_eq!(list.cni_version, "1.0.0");
    }

    #[test]
    fn single_conf_is_wrapped_like_conf_list_from_conf() {
        let list = NetworkConfigList::from_conf_bytes(
            br#"{"cniVersion":"0.4.0","name":"mynet","type":"bridge","bridge":"cni0"}"#,
        )
        .unwrap();
        assert_eq!(list.name, "mynet");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(
            String::from_utf8(list.bytes).unwrap(),
            r#"{"cniVersion":"0.4.0","name":"mynet","plugins":[{"bridge":"cni0","cniVersion":"0.4.0","name":"mynet","type":"bridge"}]}"#
        );
        // No name, no version: both empty, as libcni does.
        let list = NetworkConfigList::from_conf_bytes(br#"{"type":"bridge"}"#).unwrap();
        assert_eq!((list.name.as_str(), list.cni_version.as_str()), ("", ""));
        assert!(
            NetworkConfigList::from_conf_bytes(br#"{"name":"x"}"#)
                .unwrap_err()
                .contains("missing 'type'")
        );
    }

    #[test]
    fn non_inlined_plugins_are_loaded_from_the_network_dir() {
        let dir = Scratch::new("noninlined");
        dir.write(
            "10-x.conflist",
            r#"{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"a"}]}"#,
        );
        std::fs::create_dir(dir.0.join("x")).unwrap();
        dir.write("x/20-c.conf", r#"{"type":"c"}"#);
        dir.write("x/10-b.conf", r#"{"type":"b"}"#);
        let list = NetworkConfigList::load(&dir.0.join("10-x.conflist"), &read_regular).unwrap();
        assert_eq!(list.plugin_types(), "a,b,c");
        dir.write("11-y.conflist", r#"{"cniVersion":"1.1.0","name":"y"}"#);
        let err = NetworkConfigList::load(&dir.0.join("11-y.conflist"), &read_regular).unwrap_err();
        assert_eq!(err, "no plugin configs found");
    }

    #[test]
    fn file_bytes_are_parsed_by_extension_with_inline_plugins_only() {
        let path = Path::new("/etc/cni/net.d/10-x.conflist");
        let list = NetworkConfigList::from_file_bytes(path, BRIDGE.as_bytes()).unwrap();
        assert_eq!(list.source.as_deref(), Some(path));
        let err = NetworkConfigList::from_file_bytes(path, br#"{"name":"x"}"#).unwrap_err();
        assert!(err.contains("no plugins in list"), "{err}");
        let conf = NetworkConfigList::from_file_bytes(Path::new("a.json"), br#"{"name":"x","type":"ptp"}"#).unwrap();
        assert_eq!(conf.plugin_types(), "ptp");
    }
}
