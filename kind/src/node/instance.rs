//! One node: a network namespace on the cluster network plus its own
//! directory tree, and the pod sandboxes created on it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::process::CommandExt;
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
    /// The node's IPv6 address and pod range, on a network with an IPv6 side.
    pub(super) v6: Option<(Ipv6Addr, String)>,
    pub(super) host_veth: String,
    pub(super) tag: String,
    pub(super) plugins: Option<InstalledPlugins>,
    pub(super) pods: Mutex<BTreeMap<String, Sandbox>>,
}

/// What the node keeps per sandbox: the netns, and once started the infra
/// ("pause") process holding it and the pod's cgroup.
#[derive(Debug)]
pub(super) struct Sandbox {
    netns: Netns,
    infra: Option<Child>,
    cgroup: Option<PathBuf>,
    /// A `hostNetwork` pod's: the netns is the node's, never unpinned here.
    host_network: bool,
}

impl Sandbox {
    /// Kills and reaps the infra process.
    fn stop_infra(&mut self) {
        if let Some(mut child) = self.infra.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }

    /// Stops the infra process, empties and removes the cgroup, unpins the netns.
    fn delete(mut self) -> Vec<String> {
        self.stop_infra();
        let mut errors = Vec::new();
        if let Some(dir) = self.cgroup.take()
            && let Err(e) = super::cgroup::remove_pod_cgroup(&dir)
        {
            errors.push(e.to_string());
        }
        if !self.host_network
            && let Err(e) = self.netns.delete()
        {
            errors.push(e.to_string());
        }
        errors
    }

    fn handle(&self, id: &str) -> PodSandbox {
        PodSandbox {
            id: id.to_owned(),
            netns: self.netns.clone(),
            infra_pid: self.infra.as_ref().map(Child::id),
            cgroup: self.cgroup.clone(),
            host_network: self.host_network,
        }
    }
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
    /// The infra ("pause") process holding the netns, once started
    /// ([`Node::start_pod_infra`]).
    pub infra_pid: Option<u32>,
    /// The pod's cgroup, when pod cgroups are enabled.
    pub cgroup: Option<PathBuf>,
    /// A `hostNetwork` pod's sandbox: `netns` is the node's (no CNI runs for it).
    pub host_network: bool,
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

    /// The node's IPv6 address on the cluster network, when it has an IPv6 side.
    pub fn ip_v6(&self) -> Option<Ipv6Addr> {
        self.v6.as_ref().map(|(ip, _)| *ip)
    }

    /// The node's IPv6 pod range (`fd0a:…:<index>::/64`), when the cluster
    /// network has an IPv6 side.
    pub fn pod_cidr_v6(&self) -> Option<&str> {
        self.v6.as_ref().map(|(_, cidr)| cidr.as_str())
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
    /// inside its netns with its `/var/run` as their `/run` (what a node
    /// agent's hostPath mounts there, e.g. `/var/run/istio-cni`, is where
    /// the config it writes says).
    pub fn runner(&self) -> Runner {
        let runner = Runner::new(self.bin_dirs(), self.cni_cache_dir()).in_netns(self.netns.clone());
        let run = self.host_path("/var/run");
        if run.is_dir() {
            runner.with_node_run(run)
        } else {
            runner
        }
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

    fn pods(&self) -> MutexGuard<'_, BTreeMap<String, Sandbox>> {
        self.pods.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a pod sandbox netns (pinned at
    /// `<netns dir>/<cluster tag>-<node>-<id>`) with `lo` up.
    pub fn create_pod_netns(&self, id: &str) -> Result<PodSandbox, NodeError> {
        self.add_sandbox(id, false, || {
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
            Ok(netns)
        })
    }

    /// The sandbox of a `hostNetwork` pod: the node's own netns (no netns
    /// of its own, no CNI), so its processes see the node's interfaces and
    /// address. Deleting it leaves the node's netns alone.
    pub fn create_host_sandbox(&self, id: &str) -> Result<PodSandbox, NodeError> {
        self.add_sandbox(id, true, || Ok(self.netns.clone()))
    }

    /// Records a new sandbox `id` in the netns `netns` makes.
    fn add_sandbox(
        &self,
        id: &str,
        host_network: bool,
        netns: impl FnOnce() -> Result<Netns, NodeError>,
    ) -> Result<PodSandbox, NodeError> {
        names::validate_pod_id(id)?;
        let mut pods = self.pods();
        if pods.contains_key(id) {
            return Err(NodeError::Invalid(format!(
                "pod sandbox {id:?} already exists on node {}",
                self.name
            )));
        }
        let sandbox = Sandbox {
            netns: netns()?,
            infra: None,
            cgroup: None,
            host_network,
        };
        let handle = sandbox.handle(id);
        pods.insert(id.to_owned(), sandbox);
        Ok(handle)
    }

    /// Starts the sandbox's infra process, as container runtimes start the
    /// pause container once CNI ADD is done: a long-lived `sleep infinity`
    /// (argv[0] `pause`) in the pod netns, in its own process group, so that
    /// every pod has a process that holds its netns from before its
    /// containers start until after they are gone. With `cgroup`, that pod
    /// cgroup is created and the process joins it. Returns its pid.
    pub fn start_pod_infra(&self, id: &str, cgroup: Option<PathBuf>) -> Result<u32, NodeError> {
        let mut pods = self.pods();
        let sandbox = pods
            .get_mut(id)
            .ok_or_else(|| NodeError::Invalid(format!("no pod sandbox {id:?} on node {}", self.name)))?;
        if let Some(child) = &sandbox.infra {
            return Ok(child.id());
        }
        let mut cmd = sandbox.netns.command("sleep");
        cmd.arg0("pause")
            .arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(dir) = &cgroup {
            let io = |what| {
                move |source| NodeError::Io {
                    what,
                    path: dir.clone(),
                    source,
                }
            };
            match std::fs::create_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io("creating pod cgroup")(e)),
                _ => {}
            }
            sandbox.cgroup = Some(dir.clone());
            super::cgroup::join_on_exec(&mut cmd, dir).map_err(io("joining pod cgroup"))?;
        }
        let child = cmd.spawn().map_err(|source| NodeError::Io {
            what: "starting the infra (pause) process in",
            path: sandbox.netns.path().to_path_buf(),
            source,
        })?;
        let pid = child.id();
        sandbox.infra = Some(child);
        Ok(pid)
    }

    /// Kills and reaps the sandbox's infra process (runtimes stop the pause
    /// container before CNI DEL). Unknown ids and stopped sandboxes are fine.
    pub fn stop_pod_infra(&self, id: &str) {
        if let Some(sandbox) = self.pods().get_mut(id) {
            sandbox.stop_infra();
        }
    }

    /// The sandbox with this id, if it exists.
    pub fn pod_netns(&self, id: &str) -> Option<PodSandbox> {
        self.pods().get(id).map(|sandbox| sandbox.handle(id))
    }

    /// The ids of the live sandboxes.
    pub fn pod_ids(&self) -> Vec<String> {
        self.pods().keys().cloned().collect()
    }

    /// Deletes a sandbox: stops its infra process, kills what is left in
    /// its cgroup and removes it, and unpins the netns (interfaces in it
    /// vanish once no process uses it). Deleting an unknown id is not an error.
    pub fn delete_pod_netns(&self, id: &str) -> Result<(), NodeError> {
        let removed = self.pods().remove(id);
        let errors = removed.map(Sandbox::delete).unwrap_or_default();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Invalid(format!(
                "deleting pod sandbox {id:?} on node {}: {}",
                self.name,
                errors.join("; ")
            )))
        }
    }

    /// Every pin file this node owns (its own and its sandboxes').
    pub(super) fn netns_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.netns.path().to_path_buf()];
        files.extend(
            self.pods()
                .values()
                .filter(|s| !s.host_network)
                .map(|s| s.netns.path().to_path_buf()),
        );
        files
    }

    /// Deletes the sandboxes and the node netns, then the node's tree.
    /// Returns what failed.
    pub(super) fn teardown(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let pods: Vec<(String, Sandbox)> = std::mem::take(&mut *self.pods()).into_iter().collect();
        for (id, sandbox) in pods {
            for e in sandbox.delete() {
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
