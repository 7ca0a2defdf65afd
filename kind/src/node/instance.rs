//! One node: a network namespace on the cluster network plus its own
//! directory tree, and the pod sandboxes created on it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use super::NodeError;
use super::addr::Ipv4Cidr;
use super::cmd::run_checked;
use super::layout::{Layout, under};
use super::names;
use super::netns::Netns;
use super::plugins::InstalledPlugins;
use crate::cni::config::{Selection, select_network};
use crate::cni::{GeneratedConfig, Profile, ProfileConfig, Runner};

/// A node of the cluster network. Created by
/// [`ClusterNetwork::add_node`](super::ClusterNetwork::add_node), torn down
/// with its cluster.
#[derive(Debug)]
pub struct Node {
    pub(super) name: String,
    pub(super) index: u32,
    pub(super) layout: Layout,
    pub(super) root: PathBuf,
    pub(super) netns: Netns,
    pub(super) ip_cidr: Ipv4Cidr,
    pub(super) gateway: Ipv4Addr,
    pub(super) pod_cidr: Ipv4Cidr,
    pub(super) host_veth: String,
    pub(super) tag: String,
    pub(super) plugins: Option<InstalledPlugins>,
    pub(super) pods: Mutex<BTreeMap<String, Netns>>,
}

/// A pod sandbox: a network namespace pinned under the node's netns dir
/// (the layout's `cniNetnsDir`), with `lo` up and nothing else — the CNI
/// chain adds the rest.
#[derive(Debug, Clone)]
pub struct PodSandbox {
    /// The sandbox id (also the natural CNI container id).
    pub id: String,
    /// The namespace.
    pub netns: Netns,
}

impl PodSandbox {
    /// The netns path (`CNI_NETNS`).
    pub fn path(&self) -> &Path {
        self.netns.path()
    }

    /// A command that runs inside the sandbox.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.netns.command(program)
    }

    /// Runs `argv` inside the sandbox; its output when it exits 0.
    pub fn run(&self, argv: &[&str]) -> Result<Output, NodeError> {
        run_argv(&self.netns, argv)
    }
}

fn run_argv(ns: &Netns, argv: &[&str]) -> Result<Output, NodeError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| NodeError::Invalid("empty command line".to_owned()))?;
    let mut cmd = ns.command(program);
    cmd.args(args);
    Ok(run_checked(&mut cmd, &format!("in netns {}", ns.path().display()))?)
}

impl Node {
    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's index in its cluster (0-based; decides its addresses).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The directory layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The node's root dir (`<cluster root>/<name>`), its "/".
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An absolute node path inside the node's root
    /// (`/etc/cni/net.d` → `<root>/etc/cni/net.d`).
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        under(&self.root, node_path)
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The netns path.
    pub fn netns_path(&self) -> &Path {
        self.netns.path()
    }

    /// The node's address on the cluster network (`eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip_cidr.addr()
    }

    /// The node's address with the cluster network prefix.
    pub fn ip_cidr(&self) -> Ipv4Cidr {
        self.ip_cidr
    }

    /// The cluster network gateway (the harness bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The node's pod CIDR.
    pub fn pod_cidr(&self) -> Ipv4Cidr {
        self.pod_cidr
    }

    /// The harness-side veth name.
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// The CNI config dir Istio is pointed at (the layout's `cniConfDir`).
    pub fn conf_dir(&self) -> PathBuf {
        self.host_path(self.layout.conf_dir())
    }

    /// The dir the runtime loads the primary network from (equal to
    /// [`Node::conf_dir`] except on OpenShift).
    pub fn runtime_conf_dir(&self) -> PathBuf {
        self.host_path(self.layout.runtime_conf_dir())
    }

    /// The CNI bin dirs (`CNI_PATH`), the layout's `cniBinDir` first.
    pub fn bin_dirs(&self) -> Vec<PathBuf> {
        self.layout.bin_dirs().iter().map(|d| self.host_path(d)).collect()
    }

    /// The first bin dir (where plugins are installed).
    pub fn bin_dir(&self) -> PathBuf {
        self.bin_dirs()
            .into_iter()
            .next()
            .unwrap_or_else(|| self.host_path("/opt/cni/bin"))
    }

    /// The sandbox netns dir (the layout's `cniNetnsDir`).
    pub fn netns_dir(&self) -> PathBuf {
        self.host_path(self.layout.netns_dir())
    }

    /// `/var/run/istio-cni` (agent run dir: kubeconfig, log socket).
    pub fn istio_run_dir(&self) -> PathBuf {
        self.host_path("/var/run/istio-cni")
    }

    /// `/var/lib/cni`: the runtime's result cache dir.
    pub fn cni_cache_dir(&self) -> PathBuf {
        self.host_path("/var/lib/cni")
    }

    /// host-local's data dir used by [`Node::profile`].
    pub fn ipam_data_dir(&self) -> PathBuf {
        self.host_path("/var/lib/cni/networks")
    }

    /// What was put into the bin dir (symlinks or copies, and from where).
    pub fn installed_plugins(&self) -> Option<&InstalledPlugins> {
        self.plugins.as_ref()
    }

    /// A profile for this node: its pod CIDR, host-local state under the
    /// node's tree, `eth0` as macvlan/ipvlan master.
    pub fn profile(&self, profile: Profile) -> ProfileConfig {
        ProfileConfig::new(profile, self.pod_cidr.trunc().to_string())
            .ipam_data_dir(self.ipam_data_dir())
            .master("eth0")
    }

    /// Writes a config into the runtime conf dir; returns its path.
    pub fn write_cni_config(&self, config: &GeneratedConfig) -> Result<PathBuf, NodeError> {
        let dir = self.runtime_conf_dir();
        config.write_to(&dir).map_err(|source| NodeError::Io {
            what: "writing CNI config into",
            path: dir,
            source,
        })
    }

    /// Chooses the node's network as its runtime would.
    pub fn select_network(&self) -> Result<Selection, crate::cni::SelectError> {
        select_network(&self.runtime_conf_dir())
    }

    /// A CNI runner for this node: its bin dirs, its cache dir, plugins run
    /// inside its netns.
    pub fn runner(&self) -> Runner {
        Runner::new(self.bin_dirs(), self.cni_cache_dir()).in_netns(self.netns.clone())
    }

    /// A command that runs inside the node netns (`setns` in the child; the
    /// mount namespace and `/sys` stay the caller's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.netns.command(program)
    }

    /// Runs `argv` inside the node netns; its output when it exits 0,
    /// otherwise an error with the command line and stderr.
    pub fn run(&self, argv: &[&str]) -> Result<Output, NodeError> {
        run_argv(&self.netns, argv)
    }

    /// Starts `argv` inside the node netns with stdout and stderr piped.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child, NodeError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| NodeError::Invalid("empty command line".to_owned()))?;
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NodeError::Io {
                what: "starting a process in node netns",
                path: PathBuf::from(program),
                source,
            })
    }

    fn pods(&self) -> MutexGuard<'_, BTreeMap<String, Netns>> {
        self.pods.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a pod sandbox netns (pinned at
    /// `<netns dir>/<cluster tag>-<node>-<id>`) with `lo` up.
    pub fn create_pod_netns(&self, id: &str) -> Result<PodSandbox, NodeError> {
        names::validate_pod_id(id).map_err(NodeError::Invalid)?;
        let mut pods = self.pods();
        if pods.contains_key(id) {
            return Err(NodeError::Invalid(format!(
                "pod sandbox {id:?} already exists on node {}",
                self.name
            )));
        }
        let dir = self.netns_dir();
        std::fs::create_dir_all(&dir).map_err(|source| NodeError::Io {
            what: "creating netns dir",
            path: dir.clone(),
            source,
        })?;
        let netns = Netns::create(&dir.join(names::pod_netns_name(&self.tag, &self.name, id)))?;
        if let Err(e) = run_argv(&netns, &["ip", "link", "set", "lo", "up"]) {
            let _ = netns.delete();
            return Err(e);
        }
        pods.insert(id.to_owned(), netns.clone());
        Ok(PodSandbox {
            id: id.to_owned(),
            netns,
        })
    }

    /// The sandbox with this id, if it exists.
    pub fn pod_netns(&self, id: &str) -> Option<PodSandbox> {
        self.pods().get(id).map(|netns| PodSandbox {
            id: id.to_owned(),
            netns: netns.clone(),
        })
    }

    /// The ids of the live sandboxes.
    pub fn pod_ids(&self) -> Vec<String> {
        self.pods().keys().cloned().collect()
    }

    /// Deletes a sandbox netns (unpins it; interfaces in it vanish once no
    /// process uses it). Deleting an unknown id is not an error.
    pub fn delete_pod_netns(&self, id: &str) -> Result<(), NodeError> {
        let removed = self.pods().remove(id);
        match removed {
            Some(netns) => Ok(netns.delete()?),
            None => Ok(()),
        }
    }

    /// Every pin file this node owns (its own and its sandboxes').
    pub(super) fn netns_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.netns.path().to_path_buf()];
        files.extend(self.pods().values().map(|n| n.path().to_path_buf()));
        files
    }

    /// Deletes the sandboxes and the node netns, then the node's tree.
    /// Returns what failed.
    pub(super) fn teardown(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let pods: Vec<(String, Netns)> = std::mem::take(&mut *self.pods()).into_iter().collect();
        for (id, netns) in pods {
            if let Err(e) = netns.delete() {
                errors.push(format!("node {}: pod sandbox {id}: {e}", self.name));
            }
        }
        if let Err(e) = self.netns.delete() {
            errors.push(format!("node {}: {e}", self.name));
        }
        match std::fs::remove_dir_all(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("node {}: removing {}: {e}", self.name, self.root.display())),
        }
        errors
    }
}
