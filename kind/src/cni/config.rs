//! Network configuration files: parsing `.conflist` and `.conf` exactly as
//! libcni does, and choosing a node's network the way kubelet/containerd do.
//!
//! Selection ([`select_network`]): list the non-directory entries of the conf
//! dir whose extension is `.conf`, `.conflist` or `.json`; sort them by bytes;
//! load each in turn (`.conflist` as a list, the others as a single plugin
//! wrapped into a list); skip — with a reason — any that fails to parse or
//! has no plugins; the first that loads wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::json::canonical;
use super::version;

/// Extensions kubelet and containerd consider (libcni `ConfFiles`).
pub const CONF_EXTENSIONS: [&str; 3] = [".conf", ".conflist", ".json"];

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

    /// Loads a file: `.conflist` as a list (plus `<dir>/<name>/*.conf` unless
    /// `loadOnlyInlinedPlugins`), anything else as a single plugin.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("error reading {}: {e}", path.display()))?;
        let is_list = path.extension().is_some_and(|e| e == "conflist");
        let mut list = if is_list {
            let mut list = Self::parse_list(&bytes)?;
            if !list.load_only_inlined_plugins {
                let dir = path.parent().unwrap_or_else(|| Path::new("."));
                list.plugins.extend(plugins_from_dir(&dir.join(&list.name))?);
            }
            if list.plugins.is_empty() {
                return Err("no plugin configs found".to_owned());
            }
            list
        } else {
            Self::from_conf_bytes(&bytes)?
        };
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

/// libcni ≥ 1.2: plugins of list `<name>` stored as `<dir>/<name>/*.conf`.
fn plugins_from_dir(dir: &Path) -> Result<Vec<PluginConf>, String> {
    let files = conf_files_with(dir, &[".conf"])
        .map_err(|e| format!("failed to read plugin config files in {}: {e}", dir.display()))?;
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).map_err(|e| format!("error reading {}: {e}", f.display()))?;
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|e| format!("error parsing configuration: {e}"))?;
            PluginConf::from_value(&value)
        })
        .collect()
}

/// The candidate files of a conf dir, sorted by file-name bytes. A missing
/// dir has none.
pub fn conf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    conf_files_with(dir, &CONF_EXTENSIONS)
}

fn conf_files_with(dir: &Path, extensions: &[&str]) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if extensions.contains(&go_ext(&name.to_string_lossy())) {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Go's `filepath.Ext`: the suffix from the last dot (`.conf` for `.conf`).
fn go_ext(name: &str) -> &str {
    name.rfind('.').map_or("", |i| &name[i..])
}

/// A file passed over during selection, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedConfig {
    /// The file.
    pub path: PathBuf,
    /// Why it was not used.
    pub reason: String,
}

/// The outcome of choosing a node's network.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The chosen network.
    pub network: NetworkConfigList,
    /// Files before it that were invalid, in order.
    pub skipped: Vec<SkippedConfig>,
}

/// Why no network could be chosen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SelectError {
    /// The dir could not be read.
    #[error("reading CNI config dir {}: {reason}", dir.display())]
    ReadDir {
        /// The conf dir.
        dir: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// No candidate file loaded.
    #[error("no valid networks found in {}{}", dir.display(), describe_skipped(skipped))]
    NoNetworks {
        /// The conf dir.
        dir: PathBuf,
        /// Every candidate and why it was skipped.
        skipped: Vec<SkippedConfig>,
    },
}

fn describe_skipped(skipped: &[SkippedConfig]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s.path.display(), s.reason))
        .collect();
    format!(" (skipped {})", parts.join("; "))
}

/// Chooses the network of a conf dir as kubelet/containerd do: the first
/// file in byte order that loads and has plugins.
pub fn select_network(dir: &Path) -> Result<Selection, SelectError> {
    select_network_with(dir, |_| Ok(()))
}

/// Like [`select_network`], with an extra check on each loaded list (e.g.
/// [`crate::cni::Runner::validate`], as dockershim did: every plugin
/// binary present and supporting the version); a failing list is skipped.
pub fn select_network_with(
    dir: &Path,
    mut check: impl FnMut(&NetworkConfigList) -> Result<(), String>,
) -> Result<Selection, SelectError> {
    let files = conf_files(dir).map_err(|e| SelectError::ReadDir {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut skipped = Vec::new();
    for path in files {
        let outcome = NetworkConfigList::from_file(&path).and_then(|list| {
            if list.plugins.is_empty() {
                return Err(format!("CNI config list {} has no networks", list.name));
            }
            check(&list)?;
            Ok(list)
        });
        match outcome {
            Ok(network) => return Ok(Selection { network, skipped }),
            Err(reason) => skipped.push(SkippedConfig { path, reason }),
        }
    }
    Err(SelectError::NoNetworks {
        dir: dir.to_path_buf(),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("ick-conf-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

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
    fn selection_takes_first_valid_in_byte_order() {
        let dir = Scratch::new("select");
        dir.write("00-broken.conflist", "{not json");
        dir.write("01-empty.conflist", r#"{"name":"e","cniVersion":"1.0.0","plugins":[]}"#);
        dir.write("05-notes.txt", "ignored");
        dir.write("10-b.conflist", BRIDGE);
        dir.write("09-Z.conf", r#"{"cniVersion":"1.0.0","name":"upper","type":"ptp"}"#);
        dir.write("09-a.json", r#"{"cniVersion":"1.0.0","name":"lower","type":"ptp"}"#);
        std::fs::create_dir(dir.0.join("02-dir.conf")).unwrap();
        let sel = select_network(&dir.0).unwrap();
        // "09-Z" < "09-a" in byte order (uppercase first).
        assert_eq!(sel.network.name, "upper");
        assert_eq!(sel.network.source.as_deref(), Some(dir.0.join("09-Z.conf").as_path()));
        let skipped: Vec<_> = sel
            .skipped
            .iter()
            .map(|s| s.path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(skipped, ["00-broken.conflist", "01-empty.conflist"]);
        assert!(sel.skipped[0].reason.contains("error parsing configuration list"));
        assert!(sel.skipped[1].reason.contains("no plugins"));
    }

    #[test]
    fn selection_with_check_skips_rejected_lists() {
        let dir = Scratch::new("check");
        dir.write("10-a.conflist", BRIDGE);
        dir.write("20-b.conf", r#"{"cniVersion":"1.0.0","name":"b","type":"ptp"}"#);
        let sel = select_network_with(&dir.0, |l| {
            if l.name == "net1" {
                Err("plugin bridge missing".to_owned())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(sel.network.name, "b");
        assert_eq!(sel.skipped[0].reason, "plugin bridge missing");
    }

    #[test]
    fn nothing_valid_lists_every_reason() {
        let dir = Scratch::new("none");
        dir.write("a.conf", "[]");
        let err = select_network(&dir.0).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no valid networks found in"), "{text}");
        assert!(
            text.contains("a.conf: error parsing configuration: expected an object"),
            "{text}"
        );
        let err = select_network(&dir.0.join("missing")).unwrap_err();
        assert!(matches!(err, SelectError::NoNetworks { ref skipped, .. } if skipped.is_empty()));
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
        let list = NetworkConfigList::from_file(&dir.0.join("10-x.conflist")).unwrap();
        assert_eq!(list.plugin_types(), "a,b,c");
        dir.write("11-y.conflist", r#"{"cniVersion":"1.1.0","name":"y"}"#);
        let err = NetworkConfigList::from_file(&dir.0.join("11-y.conflist")).unwrap_err();
        assert_eq!(err, "no plugin configs found");
    }

    #[test]
    fn go_extension_semantics() {
        assert_eq!(go_ext("10-a.conflist"), ".conflist");
        assert_eq!(go_ext(".conf"), ".conf");
        assert_eq!(go_ext("noext"), "");
        assert_eq!(go_ext("a.conf.bak"), ".bak");
    }
}
