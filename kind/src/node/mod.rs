//! Nodes: network namespaces with their own CNI directories, on a cluster network.
//!
//! - [`cluster`]: [`ClusterNetwork`] — the bridge in the harness namespace,
//!   nodes attached by veths, pod CIDR routes, teardown and leak checks.
//! - [`instance`]: [`Node`] — one node's netns and directory tree, commands
//!   inside it, pod sandboxes, its CNI runner and configs.
//! - [`layout`]: per-distribution CNI dirs (kind, GKE, k3s, k3d, MicroK8s,
//!   minikube, OpenShift).
//! - [`netns`]: namespaces pinned to files; running work inside them.
//! - [`cgroup`]: pod cgroups (`kubepods/pod<uid>`) where cgroup v2 is writable.
//! - [`addr`], [`names`], [`plugins`], [`cmd`]: address plan, unique names,
//!   plugin installation, command execution.

pub mod addr;
pub mod cgroup;
pub mod cluster;
pub mod cmd;
pub mod instance;
pub mod layout;
pub mod names;
pub mod netns;
pub mod plugins;
pub mod taint;

use std::path::PathBuf;

pub use addr::{AddressPlan, Ipv4Cidr};
pub use cluster::{ClusterConfig, ClusterNetwork, ClusterResources, MAX_NODES, NodeSpec, Nodes, TeardownError};
pub use instance::{Node, PodSandbox};
pub use layout::Layout;
pub use netns::{Netns, NetnsError};
pub use plugins::{InstallMode, InstalledPlugins};
pub use taint::{NodeTaint, TaintError};

/// Why a node or cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A name, id or request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The address plan does not fit.
    #[error(transparent)]
    Addr(#[from] addr::AddrError),
    /// An external command failed.
    #[error(transparent)]
    Command(#[from] cmd::CommandError),
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A node name or sandbox id is not acceptable.
    #[error(transparent)]
    Name(#[from] names::NameError),
    /// Installing the primary plugins failed.
    #[error(transparent)]
    Plugins(#[from] plugins::PluginsError),
}
