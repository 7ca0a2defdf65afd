//! Which CNI config file the runtime uses, and so which one we chain into:
//! libcni's listing of `.conf`/`.conflist` files in byte order, keeping only
//! files libcni would load; CNI_CONF_NAME with its `.conf`↔`.conflist` twin.
//! The listing, the parsing and the twin rule are the shared `cni_spec`
//! crate's; this module adds Istio's extensions and the bounded reads.
//!
//! Every read of a config file is bounded ([`read_config`]): the conf dir is
//! the node's, and a FIFO, a device or a huge file named `*.conflist` must
//! neither hang nor exhaust the agent. Such a file is not a valid config.

use std::path::Path;

use cni_spec::config::NetworkConfigList;
use cni_spec::select::conf_files;
use istio_cni::bounded::{self, Limits, ReadError};

pub use cni_spec::select::resolve;

/// The extensions Istio's installer lists (not `.json`, which kubelet and
/// containerd also accept: Istio never chains into such a file).
pub const EXTENSIONS: [&str; 2] = [".conf", ".conflist"];

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
/// logged with its reason; a name that is not UTF-8 cannot be configured or
/// pinned, so it is passed over.
pub fn valid_configs(dir: &Path) -> Result<Vec<String>, String> {
    let files = conf_files(dir, &EXTENSIONS).map_err(|e| format!("no networks found in {}: {e}", dir.display()))?;
    let mut valid = Vec::new();
    for path in files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        match check_file(&path) {
            Ok(()) => valid.push(name.to_owned()),
            Err(reason) => tracing::warn!(target: "cni-agent", "skipping CNI config {}: {reason}", path.display()),
        }
    }
    Ok(valid)
}

/// Whether libcni would load the file (a directory, special, oversized or
/// unreadable file is not a config). A list must carry its plugins inline:
/// libcni 1.2+ would also look in `<dir>/<name>/*.conf`, a layout we cannot
/// chain into.
pub fn check_file(path: &Path) -> Result<(), String> {
    let bytes = read_config(path).map_err(|e| unreadable(&e))?;
    NetworkConfigList::from_file_bytes(path, &bytes).map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn byte_order_validity_and_twins() {
        let dir = testkit::Scratch::new("select");
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
        fs::remove_dir_all(&dir).unwrap();
        assert!(valid_configs(&dir).unwrap_err().contains("no networks found"));
    }

    /// The checks are libcni's own parsing (shared with the embedded
    /// runtime): an unparsable `cniVersions`, a `dns` of the wrong shape and
    /// a list without inline plugins are not configs; Go's extension rule
    /// lists a file named just `.conf`.
    #[test]
    fn validity_is_libcnis_parsing() {
        let dir = testkit::Scratch::new("select-libcni");
        fs::create_dir_all(dir.join("10-inline-only")).unwrap();
        let files = [
            (
                "00-versions.conflist",
                r#"{"name":"v","cniVersions":["x"],"plugins":[{"type":"p"}]}"#,
            ),
            (
                "01-dns.conflist",
                r#"{"name":"d","plugins":[{"type":"p","dns":{"nameservers":"10.96.0.10"}}]}"#,
            ),
            ("10-inline-only.conflist", r#"{"name":"10-inline-only"}"#),
            ("10-inline-only/a.conf", r#"{"type":"ptp"}"#),
            (".conf", r#"{"type":"bridge"}"#),
            (
                "20-ok.conflist",
                r#"{"name":"ok","cniVersions":["1.0.0"],"plugins":[{"type":"p"}]}"#,
            ),
        ];
        for (n, t) in files {
            fs::write(dir.join(n), t).unwrap();
        }
        assert_eq!(valid_configs(&dir).unwrap(), [".conf", "20-ok.conflist"]);
        let reason = check_file(&dir.join("00-versions.conflist")).unwrap_err();
        assert!(reason.contains("invalid version \"x\""), "{reason}");
        assert!(
            check_file(&dir.join("01-dns.conflist"))
                .unwrap_err()
                .contains("dns.nameservers")
        );
        assert!(
            check_file(&dir.join("10-inline-only.conflist"))
                .unwrap_err()
                .contains("no plugins in list")
        );
    }

    #[test]
    fn twins_are_the_shared_rule() {
        let dir = testkit::Scratch::new("select-twins");
        for (n, t) in [
            ("a.conf", r#"{"type":"bridge"}"#),
            ("ZZZ.conflist", "{}"),
            ("04-ok.json", "{}"),
        ] {
            fs::write(dir.join(n), t).unwrap();
        }
        assert_eq!(resolve(&dir, "a.conflist"), Some(dir.join("a.conf")));
        assert_eq!(resolve(&dir, "ZZZ.conf"), Some(dir.join("ZZZ.conflist")));
        assert_eq!(resolve(&dir, "a.conf"), Some(dir.join("a.conf")));
        assert_eq!(resolve(&dir, "b.conf"), None);
        assert_eq!(resolve(&dir, "04-ok.json"), Some(dir.join("04-ok.json")));
    }

    /// A FIFO, a device and an oversized (otherwise valid) config sorting
    /// before the real primary are skipped promptly; the primary is chosen.
    #[test]
    fn special_and_oversized_files_are_skipped_not_read() {
        let dir = testkit::Scratch::new("select-special");
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
        let scan = dir.to_path_buf();
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
    }
}
