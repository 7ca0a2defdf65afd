//! libcni's choice of a node's network, as kubelet and containerd make it:
//! list the non-directory entries of the conf dir whose extension is
//! `.conf`, `.conflist` or `.json`; sort them by bytes; load each in turn
//! (`.conflist` as a list, the others as a single plugin wrapped into a
//! list); skip — with a reason — any that fails to load or has no plugins;
//! the first that loads wins. Also the `CNI_CONF_NAME` twin rule.
//!
//! Files are read through a [`ReadFile`] the caller chooses: the node agent
//! passes its bounded reader (regular files only, size and time limits), the
//! embedded runtime [`read_regular`].

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::NetworkConfigList;

/// Extensions kubelet and containerd consider (libcni `ConfFiles`).
pub const RUNTIME_EXTENSIONS: [&str; 3] = [".conf", ".conflist", ".json"];

/// The largest config [`read_regular`] reads: far above any real one.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// How a config file is read: its bytes, or why not (naming the file).
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> Result<Vec<u8>, String>;

/// Reads a config file that is a regular file (symlinks followed) of at most
/// [`MAX_CONFIG_BYTES`]: a FIFO or device named `*.conf` is refused before it
/// is opened, so it neither blocks nor streams forever.
pub fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    let failed = |e: io::Error| format!("error reading {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(failed)?;
    if !meta.is_file() {
        return Err(format!("error reading {}: not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "error reading {}: larger than the limit of {MAX_CONFIG_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// `<dir>/<name>`, or its twin when only that exists (`x.conf` for
/// `x.conflist` and back): Istio's own `.conf`→`.conflist` rename must not
/// lose a configured or pinned `CNI_CONF_NAME`.
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

/// The files of a conf dir with one of `extensions` (Go's `filepath.Ext`
/// of the name), directories left out, sorted by file-name bytes (libcni's
/// `ConfFiles`). A missing dir is an error here (see [`select_network_with`]).
pub fn conf_files(dir: &Path, extensions: &[&str]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if extensions.contains(&go_ext(name.as_bytes())) {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Go's `filepath.Ext`: the suffix from the last dot (`.conf` for `.conf`),
/// on the name's bytes (a name need not be UTF-8); "" when not UTF-8.
fn go_ext(name: &[u8]) -> &str {
    let ext = name.iter().rposition(|&b| b == b'.').map_or(&name[..0], |i| &name[i..]);
    std::str::from_utf8(ext).unwrap_or("")
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
    select_network_with(dir, &RUNTIME_EXTENSIONS, &read_regular, |_| Ok(()))
}

/// Like [`select_network`], with the extensions to consider, how files are
/// read, and an extra check on each loaded list (e.g. the runner's, as
/// dockershim did: every plugin binary present and supporting the version);
/// a failing list is skipped. A missing dir has no networks.
pub fn select_network_with(
    dir: &Path,
    extensions: &[&str],
    read: ReadFile,
    mut check: impl FnMut(&NetworkConfigList) -> Result<(), String>,
) -> Result<Selection, SelectError> {
    let files = match conf_files(dir, extensions) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(SelectError::ReadDir {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut skipped = Vec::new();
    for path in files {
        let outcome = NetworkConfigList::load(&path, read).and_then(|list| {
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
    use crate::test_support::Scratch;

    const BRIDGE: &str = r#"{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"bridge","x-unknown":1},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;
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
        let sel = select_network_with(&dir.0, &RUNTIME_EXTENSIONS, &read_regular, |l| {
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
    fn go_extension_semantics() {
        assert_eq!(go_ext(b"10-a.conflist"), ".conflist");
        assert_eq!(go_ext(b".conf"), ".conf");
        assert_eq!(go_ext(b"noext"), "");
        assert_eq!(go_ext(b"a.conf.bak"), ".bak");
    }
    #[test]
    fn twins_resolve_both_ways() {
        let dir = Scratch::new("twins");
        dir.write("a.conf", "{}");
        dir.write("ZZZ.conflist", "{}");
        let d = &dir.0;
        assert_eq!(resolve(d, "a.conflist"), Some(d.join("a.conf")));
        assert_eq!(resolve(d, "ZZZ.conf"), Some(d.join("ZZZ.conflist")));
        assert_eq!(resolve(d, "a.conf"), Some(d.join("a.conf")));
        assert_eq!(resolve(d, "b.conf"), None);
        assert_eq!(resolve(d, "x.json"), None);
    }

    #[test]
    fn listing_keeps_the_extensions_asked_for_in_byte_order() {
        let dir = Scratch::new("listing");
        for name in ["b.json", "a.conflist", "Z.conf", ".conf", "c.conf.bak"] {
            dir.write(name, "{}");
        }
        let names = |exts: &[&str]| -> Vec<String> {
            conf_files(&dir.0, exts)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&RUNTIME_EXTENSIONS), [".conf", "Z.conf", "a.conflist", "b.json"]);
        assert_eq!(names(&[".conf", ".conflist"]), [".conf", "Z.conf", "a.conflist"]);
        assert_eq!(
            conf_files(&dir.0.join("missing"), &RUNTIME_EXTENSIONS)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn special_and_oversized_files_are_not_read() {
        let dir = Scratch::new("special");
        std::os::unix::fs::symlink("/dev/zero", dir.0.join("00-zero.conflist")).unwrap();
        let fifo = dir.0.join("02-fifo.conflist");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        let big = format!(
            r#"{{"name":"big","plugins":[{{"type":"ptp"}}]}}{}"#,
            " ".repeat(MAX_CONFIG_BYTES as usize)
        );
        dir.write("01-big.conflist", &big);
        dir.write("10-ptp.conflist", r#"{"name":"k","plugins":[{"type":"ptp"}]}"#);
        let sel = select_network(&dir.0).unwrap();
        assert_eq!(sel.network.name, "k");
        assert!(
            sel.skipped[0].reason.ends_with("00-zero.conflist: not a regular file"),
            "{:?}",
            sel.skipped
        );
        assert!(
            sel.skipped[1].reason.contains("larger than the limit"),
            "{:?}",
            sel.skipped
        );
        assert!(
            sel.skipped[2].reason.ends_with("02-fifo.conflist: not a regular file"),
            "{:?}",
            sel.skipped
        );
    }
}
