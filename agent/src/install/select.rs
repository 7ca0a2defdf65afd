//! Which CNI config file the runtime uses, and so which one we chain into:
//! libcni's listing of `.conf`/`.conflist` files in byte order, keeping only
//! files libcni would load; CNI_CONF_NAME with its `.conf`↔`.conflist` twin.
//!
//! Every read of a config file is bounded ([`read_config`]): the conf dir is
//! the node's, and a FIFO, a device or a huge file named `*.conflist` must
//! neither hang nor exhaust the agent. Such a file is not a valid config.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use istio_cni::bounded::{self, Limits, ReadError};
use serde_json::{Map, Value};

/// A CNI config file's bytes: a regular file of at most
/// [`Limits::CONFIG`], read within its timeout.
pub fn read_config(path: &Path) -> Result<Vec<u8>, ReadError> {
    bounded::read(path, Limits::CONFIG)
}

/// [`read_config`] as UTF-8 text.
pub fn read_config_text(path: &Path) -> Result<String, ReadError> {
    bounded::read_to_string(path, Limits::CONFIG)
}

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

/// Whether libcni would load the file (a directory, special, oversized or
/// unreadable file is not a config).
pub fn check_file(path: &Path) -> Result<(), String> {
    let bytes = read_config(path).map_err(|e| unreadable(&e))?;
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

/// Why a config could not be read, without the path (the caller names it).
fn unreadable(e: &ReadError) -> String {
    match e {
        ReadError::Io { source, .. } => source.to_string(),
        ReadError::NotRegular { kind, .. } => format!("not a regular file (a {kind})"),
        ReadError::TooLarge { max, .. } => format!("larger than the limit of {max} bytes"),
        ReadError::TimedOut { timeout, .. } => format!("not read within {timeout:?}"),
        ReadError::NotUtf8 { .. } => "not valid UTF-8".into(),
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

    /// A FIFO, a device and an oversized (otherwise valid) config sorting
    /// before the real primary are skipped promptly; the primary is chosen.
    #[test]
    fn special_and_oversized_files_are_skipped_not_read() {
        let dir = std::env::temp_dir().join(format!("istio-cni-select-special-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
        nix::unistd::mkfifo(&dir.join("00-fifo.conflist"), mode).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("01-zero.conflist")).unwrap();
        let pad = " ".repeat(Limits::CONFIG.max_bytes as usize);
        let big = format!(r#"{{"name":"big","plugins":[{{"type":"ptp"}}]}}{pad}"#);
        fs::write(dir.join("02-big.conflist"), big).unwrap();
        fs::write(
            dir.join("10-ptp.conflist"),
            r#"{"name":"k","plugins":[{"type":"ptp"}]}"#,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let scan = dir.clone();
        std::thread::spawn(move || tx.send(valid_configs(&scan)));
        let valid = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("scanning the conf dir still blocked after 10 s");
        assert_eq!(valid.unwrap(), ["10-ptp.conflist"]);
        assert_eq!(
            check_file(&dir.join("00-fifo.conflist")).unwrap_err(),
            "not a regular file (a FIFO)"
        );
        assert_eq!(
            check_file(&dir.join("01-zero.conflist")).unwrap_err(),
            "not a regular file (a character device)"
        );
        assert_eq!(
            check_file(&dir.join("02-big.conflist")).unwrap_err(),
            format!("larger than the limit of {} bytes", Limits::CONFIG.max_bytes)
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
