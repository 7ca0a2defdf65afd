//! A node's CNI files as they are now, read the same way on every backend.
//!
//! What an uninstall must give back and what an install must have written
//! are files on the node: the CNI config dirs (every file's bytes) and the
//! plugin dir (the names in it). [`NodeFiles::capture`] reads them by node
//! path (`/etc/cni/net.d`): on the embedded cluster the node's dirs are
//! directories of this machine ([`Node::host_path`](istio_cni_kind::node::Node::host_path)),
//! on kind and k3s a shell on the node lists and prints them. Paths in every
//! message are node paths, so a failure reads the same on every backend.

use std::collections::{BTreeMap, BTreeSet};

use istio_cni::bounded::{self, Limits};
use istio_cni_kind::cluster::Cluster;

use crate::scenario::Stop;

/// Which of a node's dirs to read, as node paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDirs {
    /// CNI config dirs (the agent's and, where different, the runtime's).
    pub conf: Vec<String>,
    /// Dirs whose names are compared, not their bytes: the CNI plugin dir
    /// (plugins may be symlinks) first, then e.g. the agent's run dir.
    pub listed: Vec<String>,
}

/// One node's CNI files at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    pub node: String,
    /// Each config dir (node path) with every file's bytes.
    pub conf: Vec<(String, BTreeMap<String, Vec<u8>>)>,
    /// Each listed dir (the plugin dir first) with the names in it.
    pub listed: Vec<(String, BTreeSet<String>)>,
}

impl NodeFiles {
    /// Reads `dirs` on `node` now (a config dir listed twice is read once; a
    /// missing dir is empty).
    pub fn capture(cluster: &Cluster, node: &str, dirs: &NodeDirs) -> Result<NodeFiles, Stop> {
        let mut conf_dirs: Vec<&String> = Vec::new();
        for dir in &dirs.conf {
            if !conf_dirs.contains(&dir) {
                conf_dirs.push(dir);
            }
        }
        let reader = Reader::for_node(cluster, node)?;
        let mut conf = Vec::new();
        for dir in conf_dirs {
            conf.push((dir.clone(), reader.files(dir)?));
        }
        let mut listed = Vec::new();
        for dir in &dirs.listed {
            listed.push((dir.clone(), reader.names(dir)?));
        }
        Ok(NodeFiles {
            node: node.into(),
            conf,
            listed,
        })
    }

    /// The dirs this capture read.
    pub fn dirs(&self) -> NodeDirs {
        NodeDirs {
            conf: self.conf.iter().map(|(d, _)| d.clone()).collect(),
            listed: self.listed.iter().map(|(d, _)| d.clone()).collect(),
        }
    }

    /// The same dirs read again.
    pub fn again(&self, cluster: &Cluster) -> Result<NodeFiles, Stop> {
        NodeFiles::capture(cluster, &self.node, &self.dirs())
    }

    /// The files of the first config dir (the agent's).
    pub fn agent_conf(&self) -> &BTreeMap<String, Vec<u8>> {
        static EMPTY: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        self.conf.first().map_or(&EMPTY, |(_, files)| files)
    }

    /// The files of config dir `dir`, when it was read.
    pub fn conf_dir(&self, dir: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.conf.iter().find(|(d, _)| d == dir).map(|(_, files)| files)
    }

    /// Whether a `.conflist` of the agent's config dir lists the `istio-cni` plugin.
    pub fn has_chained_entry(&self) -> bool {
        self.agent_conf().iter().any(|(name, bytes)| {
            name.ends_with(".conflist") && String::from_utf8_lossy(bytes).contains("\"istio-cni\"")
        })
    }

    /// Every difference from `earlier`, one line each (empty: identical).
    pub fn diff(&self, earlier: &NodeFiles) -> Vec<String> {
        let mut out = Vec::new();
        for ((dir, now), (_, then)) in self.conf.iter().zip(&earlier.conf) {
            for (name, bytes) in then {
                match now.get(name) {
                    None => out.push(format!("{dir}: {name} is gone")),
                    Some(b) if b != bytes => out.push(format!("{dir}: {name} changed")),
                    Some(_) => {}
                }
            }
            for name in now.keys().filter(|n| !then.contains_key(*n)) {
                out.push(format!("{dir}: {name} was left behind"));
            }
        }
        for ((dir, now), (_, then)) in self.listed.iter().zip(&earlier.listed) {
            for name in now.difference(then) {
                out.push(format!("{dir}: {name} was left behind"));
            }
            for name in then.difference(now) {
                out.push(format!("{dir}: {name} is gone"));
            }
        }
        out
    }

    /// A unified diff of every config file from `earlier` to now (a file
    /// that appeared or went is diffed against nothing); unchanged files are
    /// named, not shown.
    pub fn diff_text(&self, earlier: &NodeFiles) -> String {
        let mut out = String::new();
        let mut same = Vec::new();
        for ((dir, now), (_, then)) in self.conf.iter().zip(&earlier.conf) {
            let names: BTreeSet<&String> = now.keys().chain(then.keys()).collect();
            for name in names {
                let text = |files: &BTreeMap<String, Vec<u8>>| {
                    files
                        .get(name)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                };
                let path = format!("{}/{name}", dir.trim_end_matches('/'));
                let label = |when: &str, present: bool| {
                    if present {
                        format!("{path} ({when})")
                    } else {
                        format!("{path} ({when}: absent)")
                    }
                };
                let diff = crate::failure::unified_diff(
                    &text(then),
                    &text(now),
                    (
                        &label("before", then.contains_key(name)),
                        &label("now", now.contains_key(name)),
                    ),
                );
                if diff.is_empty() {
                    same.push(path);
                } else {
                    out.push_str(&diff);
                    if !diff.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
        }
        if !same.is_empty() {
            out.push_str(&format!("unchanged: {}\n", same.join(", ")));
        }
        out
    }

    /// Every config file as text, for diagnostics.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (dir, files) in &self.conf {
            let dir = dir.trim_end_matches('/');
            for (name, bytes) in files {
                out.push_str(&format!("== {dir}/{name}\n{}\n", String::from_utf8_lossy(bytes)));
            }
            if files.is_empty() {
                out.push_str(&format!("== {dir} is empty\n"));
            }
        }
        out
    }
}

/// How one node's dirs are read.
enum Reader<'a> {
    /// The embedded node's dirs are under its root on this machine.
    Host(&'a istio_cni_kind::node::Node),
    /// A shell on the node (kind, k3s).
    Shell { cluster: &'a Cluster, node: &'a str },
}

/// Prints `<size> <name>` then the bytes, for every regular file of `$1`.
const PRINT_FILES: &str = r#"for f in "$1"/*; do [ -f "$f" ] || continue; printf '%s %s\n' "$(wc -c < "$f" | tr -d ' ')" "${f##*/}"; cat "$f"; done"#;

impl<'a> Reader<'a> {
    fn for_node(cluster: &'a Cluster, node: &'a str) -> Result<Reader<'a>, Stop> {
        match cluster.local() {
            Ok(local) => local
                .node(node)
                .map(Reader::Host)
                .ok_or_else(|| Stop::Fail(format!("no node {node} in the cluster"))),
            Err(_) => Ok(Reader::Shell { cluster, node }),
        }
    }

    /// Regular files (and symlinks to them) of `dir` with their bytes.
    fn files(&self, dir: &str) -> Result<BTreeMap<String, Vec<u8>>, Stop> {
        match self {
            Reader::Host(node) => {
                let host = node.host_path(dir);
                let mut out = BTreeMap::new();
                for entry in std::fs::read_dir(&host).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if !path.is_file() {
                        continue;
                    }
                    // A file removed between the listing and the read is not there.
                    match bounded::read(&path, Limits::CONFIG) {
                        Ok(bytes) => {
                            out.insert(entry.file_name().to_string_lossy().into_owned(), bytes);
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            return Err(Stop::Fail(format!("{}: reading {dir}: {e}", node.name())));
                        }
                    }
                }
                Ok(out)
            }
            Reader::Shell { cluster, node } => {
                let out = cluster
                    .node_exec(node, &["sh", "-c", PRINT_FILES, "sh", dir])
                    .map_err(|e| Stop::Fail(format!("{node}: reading {dir}: {e}")))?;
                parse_printed(&out).map_err(|why| Stop::Fail(format!("{node}: reading {dir}: {why}")))
            }
        }
    }

    /// The names in `dir` (empty when it is missing).
    fn names(&self, dir: &str) -> Result<BTreeSet<String>, Stop> {
        match self {
            Reader::Host(node) => Ok(std::fs::read_dir(node.host_path(dir))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Reader::Shell { cluster, node } => {
                let out = cluster
                    .node_exec(node, &["sh", "-c", r#"ls -1A "$1" 2>/dev/null || true"#, "sh", dir])
                    .map_err(|e| Stop::Fail(format!("{node}: listing {dir}: {e}")))?;
                Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
            }
        }
    }
}

/// [`PRINT_FILES`]'s output as name → bytes.
fn parse_printed(text: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut rest = text.as_bytes();
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("a file header without its newline")?;
        let header = String::from_utf8_lossy(&rest[..end]).into_owned();
        let (size, name) = header
            .split_once(' ')
            .ok_or_else(|| format!("a file header {header:?} without a size"))?;
        let size: usize = size
            .parse()
            .map_err(|_| format!("a file header {header:?} without a size"))?;
        rest = &rest[end + 1..];
        if rest.len() < size {
            return Err(format!("{name}: {size} bytes announced, {} printed", rest.len()));
        }
        out.insert(name.to_string(), rest[..size].to_vec());
        rest = &rest[size..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(conf: &[(&str, &str)], bin: &[&str]) -> NodeFiles {
        NodeFiles {
            node: "n".into(),
            conf: vec![(
                "/etc/cni/net.d".into(),
                conf.iter()
                    .map(|(n, b)| (n.to_string(), b.as_bytes().to_vec()))
                    .collect(),
            )],
            listed: vec![("/opt/cni/bin".into(), bin.iter().map(|s| s.to_string()).collect())],
        }
    }

    #[test]
    fn differences_name_each_file_by_its_node_path() {
        let before = files(&[("10-a.conflist", "a"), ("20-b.conf", "b")], &["ptp"]);
        assert!(before.diff(&before).is_empty());
        let after = files(
            &[("10-a.conflist", "a2"), ("YYY-istio-cni.conf", "{}")],
            &["ptp", "istio-cni"],
        );
        let mut diff = after.diff(&before);
        diff.sort();
        assert_eq!(
            diff,
            [
                "/etc/cni/net.d: 10-a.conflist changed",
                "/etc/cni/net.d: 20-b.conf is gone",
                "/etc/cni/net.d: YYY-istio-cni.conf was left behind",
                "/opt/cni/bin: istio-cni was left behind",
            ]
        );
        assert!(before.text().contains("== /etc/cni/net.d/10-a.conflist\na\n"));
        let text = after.diff_text(&before);
        assert!(
            text.contains("--- /etc/cni/net.d/10-a.conflist (before)\n+++ /etc/cni/net.d/10-a.conflist (now)\n"),
            "{text}"
        );
        assert!(text.contains("\n-a\n") && text.contains("\n+a2\n"), "{text}");
        assert!(text.contains("/etc/cni/net.d/20-b.conf (now: absent)"), "{text}");
        assert!(text.contains("+++ /etc/cni/net.d/YYY-istio-cni.conf (now)"), "{text}");
    }

    #[test]
    fn the_chained_entry_counts_in_a_conflist_only() {
        assert!(files(&[("10-k.conflist", r#"{"plugins":[{"type":"istio-cni"}]}"#)], &[]).has_chained_entry());
        assert!(!files(&[("YYY-istio-cni.conf", r#"{"type":"istio-cni"}"#)], &[]).has_chained_entry());
    }

    #[test]
    fn printed_files_parse_by_their_sizes() {
        let printed = "3 a.conf\nabc5 b.conflist\nx\ny\n\n0 empty\n";
        let parsed = parse_printed(printed).unwrap();
        assert_eq!(parsed["a.conf"], b"abc");
        assert_eq!(parsed["b.conflist"], b"x\ny\n\n");
        assert_eq!(parsed["empty"], b"");
        assert!(parse_printed("9 short\nabc").unwrap_err().contains("9 bytes announced"));
        assert!(parse_printed("nosize\n").is_err());
        assert!(parse_printed("").unwrap().is_empty());
    }
}
