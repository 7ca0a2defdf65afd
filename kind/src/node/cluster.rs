//! The cluster network: a bridge in the harness namespace, one veth per node,
//! and the routes that make every node's pod CIDR reachable from everywhere.
//!
//! ```text
//!  harness netns ─ bridge <tag>b 10.250.0.1/24 ─┬─ <tag>v0 ══ eth0 10.250.0.10 (node 0 netns) ─ pods 10.251.0.0/24
//!                  10.251.N.0/24 via 10.250.0.(10+N)  └─ <tag>v1 ══ eth0 10.250.0.11 (node 1 netns) ─ pods 10.251.1.0/24
//! ```
//!
//! The harness namespace is the one of the thread that creates the cluster
//! (captured as a file descriptor, so later calls from other threads act on
//! the same namespace), or an explicit one from
//! [`ClusterConfig::harness_netns`]. Only the bridge, the veths and the pod
//! CIDR routes are created there; no other host interface is touched.
//! Every node netns has `eth0`, a default route via the gateway, IPv4
//! forwarding on, and a route to each other node's pod CIDR via that node.
//! A plan with an IPv6 side ([`AddressPlan::v6`]) adds the same in IPv6: a
//! gateway address on the bridge, one per node on `eth0`, a default route,
//! IPv6 forwarding, and the nodes' IPv6 pod ranges routed like the IPv4 ones.
//!
//! Nodes join and leave while the network is shared (kubelets hold it):
//! each node lives in a slot that is filled once and never moved, so a
//! `&Node` stays valid for the network's life; a removed node is torn down
//! and hidden, its slot not reused (so a node of the same name that joins
//! later gets a new address and pod CIDR). A network holds at most
//! [`MAX_NODES`] nodes over its life.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use super::NodeError;
use super::addr::AddressPlan;
use super::cmd::{CommandError, run_checked};
use super::instance::Node;
use super::layout::{Layout, under};
use super::names;
use super::netns::{self, Netns};
use super::plugins::{InstallMode, default_plugins_dir, install_plugins};

/// How to build a cluster network.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster root dir (nodes get `<root>/<node>`). `None`: a fresh dir
    /// under the system temp dir, removed on teardown. A given dir is kept;
    /// only what the cluster created inside it is removed.
    pub root: Option<PathBuf>,
    /// The namespace holding the bridge. `None`: the calling thread's.
    pub harness_netns: Option<PathBuf>,
    /// Addresses.
    pub plan: AddressPlan,
    /// Where the primary plugins come from (default `$CNI_PLUGINS_DIR` or
    /// `/usr/lib/cni`).
    pub plugins_dir: PathBuf,
    /// Symlink (default) or copy them into each node's bin dir.
    pub install_mode: InstallMode,
    /// Skip installing plugins (a test that provides its own).
    pub install_plugins: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            root: None,
            harness_netns: None,
            plan: AddressPlan::default(),
            plugins_dir: default_plugins_dir(),
            install_mode: InstallMode::Symlink,
            install_plugins: true,
        }
    }
}

/// A node to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node name (a DNS label).
    pub name: String,
    /// Its directory layout.
    pub layout: Layout,
    /// The taints its Node object registers with (kubelet's
    /// `--register-with-taints`); the network ignores them.
    pub taints: Vec<super::NodeTaint>,
    /// Labels its Node object registers with besides `kubernetes.io/hostname`
    /// and `kubernetes.io/os` (kubelet's `--node-labels`).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl NodeSpec {
    /// A node with the default layout, no taints, no extra labels.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            layout: Layout::Default,
            taints: Vec::new(),
            labels: Default::default(),
        }
    }

    /// Sets the layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Adds a taint to register with.
    pub fn taint(mut self, taint: super::NodeTaint) -> Self {
        self.taints.push(taint);
        self
    }

    /// Adds a label to register with.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// What teardown could not remove.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster teardown left things behind: {}", errors.join("; "))]
pub struct TeardownError {
    /// One entry per failure.
    pub errors: Vec<String>,
}

/// Everything a cluster created, for leak checks after teardown.
#[derive(Debug, Clone)]
pub struct ClusterResources {
    /// The harness namespace.
    pub harness: Netns,
    /// The bridge.
    pub bridge: String,
    /// Harness-side veths.
    pub host_veths: Vec<String>,
    /// Namespace pin files (nodes and sandboxes).
    pub netns_files: Vec<PathBuf>,
    /// Node dirs.
    pub node_dirs: Vec<PathBuf>,
    /// The cluster root, when the cluster created it.
    pub owned_root: Option<PathBuf>,
    /// The dir holding the node namespace pins.
    pub netns_dir: PathBuf,
}

impl ClusterResources {
    /// What still exists: links in the harness netns, pin files or mounts,
    /// dirs. Empty after a clean teardown.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for link in std::iter::once(&self.bridge).chain(&self.host_veths) {
            let exists = self
                .harness
                .command("ip")
                .args(["link", "show", "dev", link])
                .output()
                .is_ok_and(|o| o.status.success());
            if exists {
                left.push(format!("link {link} in {}", self.harness.path().display()));
            }
        }
        for file in &self.netns_files {
            if file.exists() {
                left.push(format!("netns file {}", file.display()));
            }
            if netns::is_mounted(file) {
                left.push(format!("mount {}", file.display()));
            }
        }
        let dirs = self
            .node_dirs
            .iter()
            .chain(self.owned_root.as_ref())
            .chain([&self.netns_dir]);
        for dir in dirs {
            if dir.exists() {
                left.push(format!("dir {}", dir.display()));
            }
            for mount in netns::mounts_under(dir) {
                left.push(format!("mount {}", mount.display()));
            }
        }
        left.sort();
        left.dedup();
        left
    }
}

/// A cluster network and its nodes. Dropping it tears everything down
/// (errors are logged); [`ClusterNetwork::teardown`] reports them.
#[derive(Debug)]
pub struct ClusterNetwork {
    tag: String,
    root: PathBuf,
    owns_root: bool,
    harness: Netns,
    bridge: String,
    plan: AddressPlan,
    plugins_dir: PathBuf,
    install_mode: InstallMode,
    install_plugins: bool,
    nodes: Nodes,
    /// Serializes joins and removals (routes in every node change).
    changing: Mutex<()>,
    torn_down: AtomicBool,
}

/// Nodes one cluster network can have over its life.
pub const MAX_NODES: usize = 64;

/// The nodes of a network: the live ones (not removed) in creation order,
/// for iterating, indexing (`nodes[0]`), `first`, `len`. Each node sits in a
/// slot filled once and never moved, so references stay valid while nodes
/// join and leave.
#[derive(Debug, Default)]
pub struct Nodes {
    slots: Box<[OnceLock<Node>]>,
    /// Per slot: the node was removed (and torn down).
    removed: Box<[AtomicBool]>,
}

impl Nodes {
    fn with_capacity(n: usize) -> Nodes {
        Nodes {
            slots: (0..n).map(|_| OnceLock::new()).collect(),
            removed: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Every node ever added, removed ones too, with its slot.
    fn all(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.slots.iter().map_while(OnceLock::get).enumerate()
    }

    /// The live nodes.
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.all()
            .filter(|(i, _)| !self.removed[*i].load(Ordering::SeqCst))
            .map(|(_, n)| n)
    }

    /// The first (oldest) live node.
    pub fn first(&self) -> Option<&Node> {
        self.iter().next()
    }

    /// The `i`-th live node.
    pub fn get(&self, i: usize) -> Option<&Node> {
        self.iter().nth(i)
    }

    /// How many live nodes.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No live node.
    pub fn is_empty(&self) -> bool {
        self.first().is_none()
    }
}

impl std::ops::Index<usize> for Nodes {
    type Output = Node;
    fn index(&self, i: usize) -> &Node {
        match self.get(i) {
            Some(node) => node,
            None => panic!("node index {i} out of range for {} nodes", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a Nodes {
    type Item = &'a Node;
    type IntoIter = Box<dyn Iterator<Item = &'a Node> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

fn ip(ns: &Netns, args: &[&str]) -> Result<(), CommandError> {
    let mut cmd = ns.command("ip");
    cmd.args(args);
    run_checked(&mut cmd, &format!("in netns {}", ns.path().display())).map(drop)
}

impl ClusterNetwork {
    /// Creates the bridge (with the gateway address) in the harness netns.
    pub fn create(config: ClusterConfig) -> Result<Self, NodeError> {
        config.plan.validate()?;
        let tag = names::next_cluster_tag();
        let harness = match &config.harness_netns {
            Some(path) => Netns::open(path)?,
            None => Netns::current()?,
        };
        let (root, owns_root) = match &config.root {
            Some(root) => (root.clone(), false),
            None => (std::env::temp_dir().join(format!("istio-cni-kind-{tag}")), true),
        };
        let netns_dir = root.join(format!("netns-{tag}"));
        std::fs::create_dir_all(&netns_dir).map_err(|source| NodeError::Io {
            what: "creating cluster dir",
            path: netns_dir.clone(),
            source,
        })?;
        let cluster = Self {
            bridge: names::bridge_name(&tag),
            tag,
            root,
            owns_root,
            harness,
            plan: config.plan,
            plugins_dir: config.plugins_dir,
            install_mode: config.install_mode,
            install_plugins: config.install_plugins,
            nodes: Nodes::with_capacity(MAX_NODES),
            changing: Mutex::new(()),
            torn_down: AtomicBool::new(false),
        };
        if let Err(e) = cluster.check_plan_is_free() {
            let _ = cluster.teardown_all();
            return Err(e);
        }
        let gateway = cluster.plan.gateway_cidr().to_string();
        let bridge = cluster.bridge.clone();
        let made = ip(&cluster.harness, &["link", "add", &bridge, "type", "bridge"])
            .and_then(|()| ip(&cluster.harness, &["addr", "add", &gateway, "dev", &bridge]))
            .and_then(|()| match &cluster.plan.v6 {
                // nodad: the address is usable at once (a listener binds it
                // right away) instead of tentative for a second or two.
                Some(v6) => ip(
                    &cluster.harness,
                    &["addr", "add", &format!("{}/64", v6.gateway()), "dev", &bridge, "nodad"],
                ),
                None => Ok(()),
            })
            .and_then(|()| ip(&cluster.harness, &["link", "set", &bridge, "up"]));
        if let Err(e) = made {
            let _ = cluster.teardown_all();
            return Err(e.into());
        }
        Ok(cluster)
    }

    /// Refuses an address plan that is already in use in the harness netns
    /// (an address in the node subnet, or a route inside the pod range):
    /// another cluster, or a host network, would collide with this one.
    fn check_plan_is_free(&self) -> Result<(), NodeError> {
        let query = |args: &[&str]| -> Result<String, NodeError> {
            let mut cmd = self.harness.command("ip");
            cmd.args(args);
            let out = run_checked(&mut cmd, &format!("in netns {}", self.harness.path().display()))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let subnet = self.plan.node_subnet.trunc().to_string();
        let used = query(&["-o", "-4", "addr", "show", "to", &subnet])?;
        if !used.is_empty() {
            return Err(NodeError::Invalid(format!(
                "node subnet {subnet} is already in use in the harness netns ({}); pick another AddressPlan or a private harness netns",
                used.lines()
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let pods = self.plan.pod_supernet.trunc().to_string();
        let routed = query(&["-4", "route", "show", "root", &pods])?;
        if !routed.is_empty() {
            return Err(NodeError::Invalid(format!(
                "pod range {pods} is already routed in the harness netns ({}); pick another AddressPlan or a private harness netns",
                routed.lines().next().unwrap_or("")
            )));
        }
        if let Some(v6) = &self.plan.v6 {
            let network = format!("{}/64", v6.network);
            let used = query(&["-o", "-6", "addr", "show", "to", &network])?;
            let pods = format!("{}/32", v6.pods);
            let routed = query(&["-6", "route", "show", "root", &pods])?;
            if !used.is_empty() || !routed.is_empty() {
                return Err(NodeError::Invalid(format!(
                    "IPv6 cluster network {network} or pod range {pods} is already in use in the harness netns; pick another AddressPlan or a private harness netns"
                )));
            }
        }
        Ok(())
    }

    /// Adds a node: its tree and plugins, its netns, its veth on the bridge,
    /// addresses, forwarding and routes (in it, in every other node, and in
    /// the harness).
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<&Node, NodeError> {
        self.join_node(spec)
    }

    /// [`ClusterNetwork::add_node`] on a shared network (its kubelets
    /// running): a node joining the running cluster.
    pub fn join_node(&self, spec: NodeSpec) -> Result<&Node, NodeError> {
        let _changing = self.changing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.torn_down.load(Ordering::SeqCst) {
            return Err(NodeError::Invalid("the cluster network is torn down".to_owned()));
        }
        names::validate_node_name(&spec.name)?;
        if self.nodes().iter().any(|n| n.name == spec.name) {
            return Err(NodeError::Invalid(format!("node {:?} already exists", spec.name)));
        }
        let slot = self.nodes.slots.iter().position(|s| s.get().is_none()).ok_or_else(|| {
            NodeError::Invalid(format!(
                "a cluster network holds at most {MAX_NODES} nodes over its life (removed ones count)"
            ))
        })?;
        let index = u32::try_from(slot).map_err(|_| NodeError::Invalid("too many nodes".to_owned()))?;
        let ip_addr = self.plan.node_ip(index)?;
        let ip_cidr = super::addr::Ipv4Cidr::new(ip_addr, self.plan.node_subnet.prefix())?;
        let pod_cidr = self.plan.pod_cidr(index)?;
        let v6 = match (&self.plan.v6, self.plan.node_ip_v6(index)) {
            (Some(plan), Some(ip)) => Some((ip, plan.pod_cidr(index)?)),
            _ => None,
        };
        let root = self.root.join(&spec.name);
        if root.exists() {
            return Err(NodeError::Invalid(format!(
                "node dir {} already exists; pick another cluster root",
                root.display()
            )));
        }
        for dir in spec.layout.dirs() {
            let path = under(&root, dir);
            std::fs::create_dir_all(&path).map_err(|source| NodeError::Io {
                what: "creating node dir",
                path,
                source,
            })?;
        }
        let netns_path = self.netns_dir().join(names::node_netns_name(&self.tag, &spec.name));
        let netns = match Netns::create(&netns_path) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e.into());
            }
        };
        let mut node = Node {
            name: spec.name,
            index,
            layout: spec.layout,
            root,
            netns,
            ip_cidr,
            gateway: self.plan.gateway,
            pod_cidr,
            v6,
            host_veth: names::host_veth_name(&self.tag, index),
            tag: self.tag.clone(),
            plugins: None,
            pods: Default::default(),
        };
        match self.wire_node(&mut node) {
            Ok(()) => Ok(self.nodes.slots[slot].get_or_init(|| node)),
            Err(e) => {
                self.unwire(&node);
                let _ = node.teardown();
                Err(e)
            }
        }
    }

    /// Removes a node: its sandboxes, netns, veth, tree, and the routes to
    /// its pods everywhere. Its processes must be gone (the kubelet's job).
    pub fn remove_node(&self, name: &str) -> Result<(), TeardownError> {
        let _changing = self.changing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let found = self
            .nodes
            .all()
            .find(|(i, n)| n.name == name && !self.nodes.removed[*i].load(Ordering::SeqCst));
        let Some((slot, node)) = found else {
            return Err(TeardownError {
                errors: vec![format!("no node {name:?}")],
            });
        };
        self.nodes.removed[slot].store(true, Ordering::SeqCst);
        let mut errors = self.unwire(node);
        errors.extend(node.teardown());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TeardownError { errors })
        }
    }

    /// Deletes `node`'s veth and every route to its pods; what failed.
    fn unwire(&self, node: &Node) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = ip(&self.harness, &["link", "del", &node.host_veth])
            && !e.stderr.contains("Cannot find device")
        {
            errors.push(e.to_string());
        }
        let cidrs = std::iter::once(node.pod_cidr.trunc().to_string()).chain(node.pod_cidr_v6().map(str::to_owned));
        for cidr in cidrs {
            let _ = ip(&self.harness, &["route", "del", &cidr]);
            for other in self.nodes().iter().filter(|o| o.name != node.name) {
                let _ = ip(&other.netns, &["route", "del", &cidr]);
            }
        }
        errors
    }

    fn wire_node(&self, node: &mut Node) -> Result<(), NodeError> {
        if self.install_plugins {
            let installed = install_plugins(&self.plugins_dir, &node.bin_dir(), self.install_mode)?;
            node.plugins = Some(installed);
        }
        let ns_path = node.netns.path().to_string_lossy().into_owned();
        let veth = node.host_veth.clone();
        ip(&node.netns, &["link", "set", "lo", "up"])?;
        ip(
            &self.harness,
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns_path,
            ],
        )?;
        ip(&self.harness, &["link", "set", &veth, "master", &self.bridge])?;
        ip(&self.harness, &["link", "set", &veth, "up"])?;
        ip(&node.netns, &["addr", "add", &node.ip_cidr.to_string(), "dev", "eth0"])?;
        ip(&node.netns, &["link", "set", "eth0", "up"])?;
        ip(
            &node.netns,
            &[
                "route",
                "add",
                "default",
                "via",
                &self.plan.gateway.to_string(),
                "dev",
                "eth0",
            ],
        )?;
        enable_sysctl(
            &node.netns,
            "/proc/sys/net/ipv4/ip_forward",
            "enabling net.ipv4.ip_forward in netns",
        )?;
        let cidr = node.pod_cidr.trunc().to_string();
        let via = node.ip_cidr.addr().to_string();
        for other in self.nodes() {
            ip(&other.netns, &["route", "replace", &cidr, "via", &via, "dev", "eth0"])?;
            ip(
                &node.netns,
                &[
                    "route",
                    "replace",
                    &other.pod_cidr.trunc().to_string(),
                    "via",
                    &other.ip_cidr.addr().to_string(),
                    "dev",
                    "eth0",
                ],
            )?;
        }
        ip(
            &self.harness,
            &["route", "replace", &cidr, "via", &via, "dev", &self.bridge],
        )?;
        if let (Some(plan), Some((addr, cidr))) = (&self.plan.v6, &node.v6) {
            self.wire_node_v6(node, plan.gateway(), *addr, cidr)?;
        }
        Ok(())
    }

    /// The IPv6 side of [`Self::wire_node`]: the node's address and default
    /// route via the gateway, forwarding (its pods' traffic passes through
    /// it), and its pod range routed via it in the harness and every other
    /// node, as for IPv4.
    fn wire_node_v6(&self, node: &Node, gateway: Ipv6Addr, addr: Ipv6Addr, cidr: &str) -> Result<(), NodeError> {
        ip(
            &node.netns,
            &["addr", "add", &format!("{addr}/64"), "dev", "eth0", "nodad"],
        )?;
        ip(
            &node.netns,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
                "dev",
                "eth0",
            ],
        )?;
        enable_sysctl(
            &node.netns,
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "enabling net.ipv6.conf.all.forwarding in netns",
        )?;
        let via = addr.to_string();
        for other in self.nodes() {
            let Some((other_addr, other_cidr)) = &other.v6 else {
                continue;
            };
            ip(
                &other.netns,
                &["-6", "route", "replace", cidr, "via", &via, "dev", "eth0"],
            )?;
            ip(
                &node.netns,
                &[
                    "-6",
                    "route",
                    "replace",
                    other_cidr,
                    "via",
                    &other_addr.to_string(),
                    "dev",
                    "eth0",
                ],
            )?;
        }
        ip(
            &self.harness,
            &["-6", "route", "replace", cidr, "via", &via, "dev", &self.bridge],
        )?;
        Ok(())
    }

    /// The live nodes (not removed), in creation order.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// Every node ever added, removed ones too.
    fn all_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.all().map(|(_, n)| n)
    }

    /// A live node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The cluster root dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The per-cluster tag all names derive from.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The bridge's name (in the harness netns).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The harness netns.
    pub fn harness_netns(&self) -> &Netns {
        &self.harness
    }

    /// The address plan.
    pub fn plan(&self) -> &AddressPlan {
        &self.plan
    }

    /// Where node namespace pins live.
    pub fn netns_dir(&self) -> PathBuf {
        self.root.join(format!("netns-{}", self.tag))
    }

    /// What the cluster has created so far, for leak checks.
    pub fn resources(&self) -> ClusterResources {
        ClusterResources {
            harness: self.harness.clone(),
            bridge: self.bridge.clone(),
            host_veths: self.all_nodes().map(|n| n.host_veth.clone()).collect(),
            netns_files: self.all_nodes().flat_map(Node::netns_files).collect(),
            node_dirs: self.all_nodes().map(|n| n.root.clone()).collect(),
            owned_root: self.owns_root.then(|| self.root.clone()),
            netns_dir: self.netns_dir(),
        }
    }

    /// Tears everything down — sandboxes, nodes (netns, veth, tree), routes,
    /// bridge, dirs — and reports what could not be removed.
    pub fn teardown(self) -> Result<(), TeardownError> {
        let errors = self.teardown_all();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TeardownError { errors })
        }
    }

    /// The same teardown through a shared handle, once: for a cluster whose
    /// owner is stuck (a scenario the runner gave up on) while others still
    /// hold the network. Nodes stay listed, with nothing left behind them.
    pub fn teardown_shared(&self) -> Result<(), TeardownError> {
        let errors = self.teardown_all();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TeardownError { errors })
        }
    }

    fn teardown_all(&self) -> Vec<String> {
        let _changing = self.changing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        let mut errors = Vec::new();
        // Removed nodes were torn down when they left.
        for node in self.nodes() {
            if let Err(e) = ip(&self.harness, &["link", "del", &node.host_veth]) {
                if !e.stderr.contains("Cannot find device") {
                    errors.push(e.to_string());
                }
            }
            // The route disappears with the bridge anyway; delete it first so
            // it never points at a vanished node.
            let _ = ip(&self.harness, &["route", "del", &node.pod_cidr.trunc().to_string()]);
            if let Some(cidr) = node.pod_cidr_v6() {
                let _ = ip(&self.harness, &["route", "del", cidr]);
            }
            errors.extend(node.teardown());
        }
        if let Err(e) = ip(&self.harness, &["link", "del", &self.bridge]) {
            if !e.stderr.contains("Cannot find device") {
                errors.push(e.to_string());
            }
        }
        let netns_dir = self.netns_dir();
        let dir = if self.owns_root { self.root.clone() } else { netns_dir };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
        }
        errors
    }
}

impl Drop for ClusterNetwork {
    fn drop(&mut self) {
        let errors = self.teardown_all();
        if !errors.is_empty() {
            tracing::warn!(errors = %errors.join("; "), "cluster network teardown left things behind");
        }
    }
}

/// Writes `1` to the sysctl `file` inside `ns` (a thread enters it and
/// writes: `/proc/sys/net` shows the namespace of the opening thread);
/// `what` names the step in the error.
fn enable_sysctl(ns: &Netns, file: &'static str, what: &'static str) -> Result<(), NodeError> {
    let path = ns.path().to_path_buf();
    ns.run(move || std::fs::write(file, "1"))?
        .map_err(|source| NodeError::Io { what, path, source })
}
