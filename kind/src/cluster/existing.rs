//! The `existing` target: a running cluster reached through its
//! kubeconfig. Nothing is created or deleted, and its nodes are out of reach.

use std::path::Path;

use super::remote::{Connection, NodeAccess, RemoteProvider};
use super::{ClusterError, ClusterSpec};
use crate::backend::env::PlanEnv;
use crate::backend::existing::{self, ExistingSpec};
use crate::backend::images::ImageBuild;

/// Why nothing runs on the nodes of an existing cluster.
const NO_NODE_ACCESS: &str = "the harness has no access to its nodes (kind and k3s run theirs in Docker); \
                              use a privileged hostNetwork/hostPID debug pod there";

/// The nodes of an existing cluster: out of the harness's reach.
pub(super) struct Unreachable;

/// A checked existing cluster.
pub(super) type ExistingProvider = RemoteProvider<Unreachable>;

/// Checks the cluster of `kubeconfig` (and pushes the images to
/// `registry`, when there is one).
pub(super) fn start(
    spec: &ClusterSpec,
    kubeconfig: &Path,
    registry: &Option<String>,
    images: &[ImageBuild],
) -> Result<ExistingProvider, ClusterError> {
    let existing = ExistingSpec {
        registry: registry.clone(),
        images: images.to_vec(),
        ..ExistingSpec::new(kubeconfig)
    };
    let context = existing::start(&existing, &PlanEnv::detect_workspace())?;
    RemoteProvider::connect(Unreachable, context.kubeconfig, spec.images.clone(), registry.clone())
}

impl NodeAccess for Unreachable {
    fn target(&self) -> &'static str {
        "existing"
    }

    fn in_pod(&self, _: &Connection, _: &str, _: &str, _: &[&str]) -> Result<String, ClusterError> {
        Err(ClusterError::Unsupported {
            target: self.target(),
            what: "running commands in a pod's netns",
            why: NO_NODE_ACCESS,
        })
    }

    fn node_exec(&self, _: &str, _: &[&str]) -> Result<String, ClusterError> {
        Err(ClusterError::Unsupported {
            target: self.target(),
            what: "running commands on nodes",
            why: NO_NODE_ACCESS,
        })
    }

    /// The cluster is left as it is.
    fn delete(self) -> Result<(), ClusterError> {
        Ok(())
    }
}
