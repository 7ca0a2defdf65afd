//! libcni's result cache: `<cache dir>/results/<network>-<container id>-<ifname>`,
//! one JSON document per attachment:
//! `{"kind":"cniCacheV1","containerId","config" (base64 of the list bytes),
//! "ifName","networkName","netns","cniArgs":[[k,v]],"capabilityArgs","result"}`
//! (the last four omitted when empty, as Go's `omitempty` does).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::json::canonical;

/// The cache format marker.
pub const CACHE_KIND: &str = "cniCacheV1";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    /// Container id.
    pub container_id: String,
    /// The list bytes the attachment was made with.
    pub config: Vec<u8>,
    /// Interface name.
    pub ifname: String,
    /// Network name.
    pub network_name: String,
    /// Netns path (empty when none).
    pub netns: String,
    /// `CNI_ARGS` pairs.
    pub cni_args: Vec<(String, String)>,
    /// Capability arguments.
    pub capability_args: Map<String, Value>,
    /// The final ADD result.
    pub result: Option<Value>,
}

/// The cache file of an attachment; all three parts must be non-empty.
pub fn cache_file(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> Result<PathBuf, String> {
    if network.is_empty() || container_id.is_empty() || ifname.is_empty() {
        return Err(format!(
            "cache file path requires network name ({network:?}), container ID ({container_id:?}), and interface name ({ifname:?})"
        ));
    }
    Ok(cache_dir
        .join("results")
        .join(format!("{network}-{container_id}-{ifname}")))
}

impl CacheEntry {
    /// The JSON document.
    pub fn to_json(&self) -> String {
        let mut obj = Map::new();
        obj.insert("kind".into(), Value::String(CACHE_KIND.into()));
        obj.insert("containerId".into(), Value::String(self.container_id.clone()));
        obj.insert("config".into(), Value::String(STANDARD.encode(&self.config)));
        obj.insert("ifName".into(), Value::String(self.ifname.clone()));
        obj.insert("networkName".into(), Value::String(self.network_name.clone()));
        if !self.netns.is_empty() {
            obj.insert("netns".into(), Value::String(self.netns.clone()));
        }
        if !self.cni_args.is_empty() {
            let pairs = self
                .cni_args
                .iter()
                .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), Value::String(v.clone())]))
                .collect();
            obj.insert("cniArgs".into(), Value::Array(pairs));
        }
        if !self.capability_args.is_empty() {
            obj.insert("capabilityArgs".into(), Value::Object(self.capability_args.clone()));
        }
        if let Some(result) = self
            .result
            .as_ref()
            .filter(|r| r.as_object().is_some_and(|o| !o.is_empty()))
        {
            obj.insert("result".into(), result.clone());
        }
        canonical(&Value::Object(obj))
    }

    /// Parses a cache document; anything but a `cniCacheV1` object is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("cache file is not JSON: {e}"))?;
        let obj = v.as_object().ok_or("cache file is not a JSON object")?;
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != CACHE_KIND {
            return Err(format!("cache file has wrong kind {kind:?}"));
        }
        let string = |key: &str| obj.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let config = match obj.get("config") {
            Some(Value::String(s)) => STANDARD
                .decode(s)
                .map_err(|e| format!("cache file has a bad base64 config: {e}"))?,
            _ => Vec::new(),
        };
        let mut cni_args = Vec::new();
        if let Some(Value::Array(pairs)) = obj.get("cniArgs") {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(v)]) => cni_args.push((k.clone(), v.clone())),
                    _ => return Err(format!("cache file has a bad cniArgs entry {pair}")),
                }
            }
        }
        Ok(Self {
            container_id: string("containerId"),
            config,
            ifname: string("ifName"),
            network_name: string("networkName"),
            netns: string("netns"),
            cni_args,
            capability_args: obj
                .get("capabilityArgs")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            result: obj.get("result").cloned().filter(|r| !r.is_null()),
        })
    }
}

/// Writes an entry (creating `results/` with mode 0700, the file 0600).
pub fn write(path: &Path, entry: &CacheEntry) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    file.write_all(entry.to_json().as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Reads an entry; `Ok(None)` when the file does not exist.
pub fn read(path: &Path) -> Result<Option<CacheEntry>, String> {
    match std::fs::read(path) {
        Ok(bytes) => CacheEntry::from_json(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Removes an entry; a missing file is fine.
pub fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

/// Every valid entry under `<cache dir>/results`, sorted by file name,
/// optionally only those of one container (libcni `GetCachedAttachments`).
pub fn list(cache_dir: &Path, container_id: Option<&str>) -> Vec<CacheEntry> {
    let Ok(entries) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|bytes| CacheEntry::from_json(&bytes).ok())
        .filter(|e| container_id.is_none_or(|id| e.container_id == id))
        .filter(|e| !e.ifname.is_empty() && !e.network_name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> CacheEntry {
        CacheEntry {
            container_id: "c1".into(),
            config: br#"{"name":"n"}"#.to_vec(),
            ifname: "eth0".into(),
            network_name: "n".into(),
            netns: "/run/netns/p".into(),
            cni_args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: Map::new(),
            result: Some(json!({"cniVersion": "1.0.0"})),
        }
    }

    #[test]
    fn document_matches_libcni_format() {
        assert_eq!(
            entry().to_json(),
            r#"{"cniArgs":[["IgnoreUnknown","1"]],"config":"eyJuYW1lIjoibiJ9","containerId":"c1","ifName":"eth0","kind":"cniCacheV1","netns":"/run/netns/p","networkName":"n","result":{"cniVersion":"1.0.0"}}"#
        );
        let back = CacheEntry::from_json(entry().to_json().as_bytes()).unwrap();
        assert_eq!(back, entry());
    }

    #[test]
    fn empty_fields_are_omitted() {
        let e = CacheEntry {
            netns: String::new(),
            cni_args: vec![],
            result: None,
            ..entry()
        };
        let text = e.to_json();
        for key in ["netns", "cniArgs", "capabilityArgs", "result"] {
            assert!(!text.contains(key), "{key} in {text}");
        }
    }

    #[test]
    fn wrong_kind_or_bad_json_is_rejected() {
        assert!(
            CacheEntry::from_json(br#"{"kind":"other"}"#)
                .unwrap_err()
                .contains("wrong kind")
        );
        assert!(CacheEntry::from_json(b"x").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn path_needs_all_parts() {
        assert_eq!(
            cache_file(Path::new("/var/lib/cni"), "n", "c", "eth0").unwrap(),
            PathBuf::from("/var/lib/cni/results/n-c-eth0")
        );
        assert!(cache_file(Path::new("/x"), "", "c", "eth0").is_err());
    }

    #[test]
    fn write_read_list_remove() {
        let dir = std::env::temp_dir().join(format!("ick-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = cache_file(&dir, "n", "c1", "eth0").unwrap();
        write(&path, &entry()).unwrap();
        assert_eq!(read(&path).unwrap(), Some(entry()));
        assert_eq!(list(&dir, None).len(), 1);
        assert_eq!(list(&dir, Some("c1")).len(), 1);
        assert!(list(&dir, Some("c2")).is_empty());
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
