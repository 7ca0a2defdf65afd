//! Which CNI config file the runtime uses, and so which one we chain into
//! (istio-cni-agent.md §4.4): libcni's listing of `.conf`/`.conflist` files
//! in byte order, keeping only files libcni would load; CNI_CONF_NAME with
//! its `.conf`↔`.conflist` twin.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The names of the loadable configs in `dir`, in the runtime's priority
/// order (the first one is the network pods get). Each skipped file is
/// logged with its reason.
pub fn valid_configs(dir: &Path) -> Result<Vec<String>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("no networks found in {}: {e}", dir.display()))?;
    let mut names: Vec<(Vec<u8>, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let text = name.to_str()?.to_string();
            let ext = Path::new(&text).extension()?;
            (ext == "conf" || ext == "conflist").then(|| (name.as_bytes().to_vec(), text))
        })
        .collect();
    // Byte order, as Go's sort.Strings: `ZZZ` before `a`.
    names.sort();
    let mut valid = Vec::new();
    for (_, name) in names {
        let path = dir.join(&name);
        match check_file(&path) {
            Ok(()) => valid.push(name),
            Err(reason) => tracing::warn!(target: "cni-agent", "skipping CNI config {}: {reason}", path.display()),
        }
    }
    Ok(valid)
}

/// `<dir>/<name>`, or its twin when only that exists (`x.conf` for
/// `x.conflist` and back): Istio's own `.conf`→`.conflist` rename must not
/// lose a configured or pinned name.
pub fn resolve(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    let twin = if name.ends_with(".conf") {
        format!("{name}list")
    } else {
        name.strip_suffix("list").filter(|n| n.ends_with(".conf"))?.to_string()
    };
    let twin = dir.join(twin);
    twin.exists().then_some(twin)
}

/// Whether libcni would load the file (a directory or unreadable file is not a config).
pub fn check_file(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err("a directory".into());
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    if path.extension().is_some_and(|e| e == "conflist") {
        check_list(&obj)
    } else {
        check_plugin(&obj)
    }
}

/// libcni's ConfListFromBytes. A list without `plugins` is refused (libcni
/// 1.1; 1.3 would look for `<dir>/<name>/*.conf`, a layout we cannot chain
/// into anyway).
fn check_list(obj: &Map<String, Value>) -> Result<(), String> {
    match obj.get("name") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("\"name\" is not a string".into()),
        None => return Err("no \"name\"".into()),
    }
    optional_string(obj, "cniVersion")?;
    for key in ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"] {
        match obj.get(key) {
            None | Some(Value::Bool(_)) => {}
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {}
            Some(_) => return Err(format!("{key:?} is not a boolean")),
        }
    }
    let plugins = match obj.get("plugins") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        Some(Value::Array(_)) => return Err("\"plugins\" is empty".into()),
        Some(_) => return Err("\"plugins\" is not a list".into()),
        None => return Err("no \"plugins\"".into()),
    };
    for (i, p) in plugins.iter().enumerate() {
        let Value::Object(p) = p else {
            return Err(format!("plugin {i} is not an object"));
        };
        check_plugin(p).map_err(|e| format!("plugin {i}: {e}"))?;
    }
    Ok(())
}

/// The NetConf shape every plugin config must decode into, with a type.
fn check_plugin(obj: &Map<String, Value>) -> Result<(), String> {
    optional_string(obj, "cniVersion")?;
    optional_string(obj, "name")?;
    match optional_string(obj, "type")? {
        Some(t) if !t.is_empty() => {}
        _ => return Err("no \"type\"".into()),
    }
    match obj.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) if c.values().all(Value::is_boolean) => {}
        Some(_) => return Err("\"capabilities\" is not a map of booleans".into()),
    }
    for key in ["ipam", "dns"] {
        if !matches!(obj.get(key), None | Some(Value::Null) | Some(Value::Object(_))) {
            return Err(format!("{key:?} is not an object"));
        }
    }
    Ok(())
}

fn optional_string<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key:?} is not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_validity_and_twins() {
        let dir = std::env::temp_dir().join(format!("istio-cni-select-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("99-dir.conf")).unwrap();
        let files = [
            ("a.conf", r#"{"type":"bridge"}"#),
            ("ZZZ.conflist", r#"{"name":"z","plugins":[{"type":"ptp"}]}"#),
            ("00-empty.conf", ""),
            ("01-list.conflist", r#"{"name":"l","plugins":[]}"#),
            (
                "02-caps.conflist",
                r#"{"name":"l","plugins":[{"type":"p","capabilities":{"x":1}}]}"#,
            ),
            (
                "03-check.conflist",
                r#"{"name":"l","disableCheck":"yes","plugins":[{"type":"p"}]}"#,
            ),
            ("04-ok.json", r#"{"type":"bridge"}"#),
            ("05-ok.conflist.bak", r#"{"type":"bridge"}"#),
        ];
        for (n, t) in files {
            fs::write(dir.join(n), t).unwrap();
        }
        assert_eq!(valid_configs(&dir).unwrap(), ["ZZZ.conflist", "a.conf"]);
        assert_eq!(resolve(&dir, "a.conflist"), Some(dir.join("a.conf")));
        assert_eq!(resolve(&dir, "ZZZ.conf"), Some(dir.join("ZZZ.conflist")));
        assert_eq!(resolve(&dir, "a.conf"), Some(dir.join("a.conf")));
        assert_eq!(resolve(&dir, "b.conf"), None);
        assert_eq!(resolve(&dir, "04-ok.json"), Some(dir.join("04-ok.json")));
        fs::remove_dir_all(&dir).unwrap();
        assert!(valid_configs(&dir).unwrap_err().contains("no networks found"));
    }
}
