//! The `existing` target: a running cluster reached through its
//! kubeconfig. Nothing is created or deleted but node shells, through
//! which commands reach its nodes ([`NodeShells`]).

use std::path::Path;

use super::node_shell::NodeShells;
use super::remote::{Connection, NodeAccess, RemoteProvider};
use super::{ClusterError, ClusterSpec};
use crate::backend::env::PlanEnv;
use crate::backend::existing::{self, ExistingSpec};
use crate::backend::images::ImageBuild;

/// The nodes of an existing cluster, reached through node shells.
pub(super) type Nodes = NodeShells;

/// A checked existing cluster.
pub(super) type ExistingProvider = RemoteProvider<Nodes>;

/// Checks the cluster of `kubeconfig` (and pushes the images to
/// `registry`, when there is one).
pub(super) fn start(
    spec: &ClusterSpec,
    kubeconfig: &Path,
    registry: &Option<String>,
    images: &[ImageBuild],
    node_shell_image: Option<String>,
) -> Result<ExistingProvider, ClusterError> {
    let existing = ExistingSpec {
        registry: registry.clone(),
        images: images.to_vec(),
        ..ExistingSpec::new(kubeconfig)
    };
    let context = existing::start(&existing, &PlanEnv::detect_workspace())?;
    RemoteProvider::connect(
        NodeShells::new(node_shell_image),
        context.kubeconfig,
        spec.images.clone(),
        registry.clone(),
    )
}

impl NodeAccess for NodeShells {
    fn target(&self) -> &'static str {
        "existing"
    }

    fn in_pod(&self, api: &Connection, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError> {
        let (node, uid) = api.placement(namespace, pod)?;
        self.pod_exec(api, &node, &uid, argv)
    }

    fn node_exec(&self, api: &Connection, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        NodeShells::node_exec(self, api, node, argv)
    }

    /// The cluster is left as it is, but for the node shells this run started.
    fn delete(self, api: &Connection) -> Result<(), ClusterError> {
        NodeShells::delete(&self, api)
    }
}
