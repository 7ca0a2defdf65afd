//! The `existing` provider: a running cluster reached through its
//! kubeconfig. Nothing is created or deleted, and its nodes are out of reach.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use tokio::runtime::Runtime;

use super::provider::Provider;
use super::remote::Connection;
use super::{ClusterError, ClusterSpec};
use crate::backend::env::PlanEnv;
use crate::backend::existing::{self, ExistingSpec};
use crate::backend::images::ImageBuild;

/// Why nothing runs on the nodes of an existing cluster.
const NO_NODE_ACCESS: &str = "the harness has no access to its nodes (kind and k3s run theirs in Docker); \
                              use a privileged hostNetwork/hostPID debug pod there";

/// A checked existing cluster.
pub(super) struct ExistingProvider {
    connection: Connection,
}

impl ExistingProvider {
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
        let connection = Connection::open(context.kubeconfig, spec.images.clone(), registry.clone())?;
        Ok(ExistingProvider { connection })
    }
}

impl Provider for ExistingProvider {
    fn target(&self) -> &'static str {
        "existing"
    }

    fn client(&self) -> kube::Client {
        self.connection.client()
    }

    fn kubeconfig_path(&self) -> &Path {
        self.connection.kubeconfig_path()
    }

    fn runtime(&self) -> &Runtime {
        self.connection.runtime()
    }

    fn image_ref(&self, tag: &str) -> String {
        self.connection.image_ref(tag)
    }

    fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        self.connection.runnable_pod(pod)
    }

    fn in_pod(&self, _: &str, _: &str, _: &[&str]) -> Result<String, ClusterError> {
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
    fn delete(self: Box<Self>) -> Result<(), ClusterError> {
        Ok(())
    }
}
