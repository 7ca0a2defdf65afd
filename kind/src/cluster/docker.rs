//! The kind and k3s providers: clusters whose nodes are Docker containers
//! ([`DockerNodes`]); commands on a node are `docker exec`, commands in a
//! pod run in its sandbox's netns on its node.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use tokio::runtime::Runtime;

use super::provider::Provider;
use super::remote::Connection;
use super::{ClusterError, ClusterSpec, Leftovers};
use crate::backend::docker::DockerNodes;
use crate::backend::env::PlanEnv;
use crate::backend::images::ImageBuild;
use crate::backend::k3s::{self, K3sSpec};
use crate::backend::kind::{self, KindSpec, PrimaryCni};
use crate::backend::versions::KubeVersion;

/// A running kind or k3s cluster.
pub(super) struct DockerProvider {
    connection: Connection,
    /// Deletes the cluster on drop (unless kept or reused).
    nodes: DockerNodes,
}

impl DockerProvider {
    /// Starts a kind cluster: a control plane and `spec.nodes` workers.
    pub(super) fn start_kind(
        spec: &ClusterSpec,
        name: &str,
        k8s_version: KubeVersion,
        cni: PrimaryCni,
        images: &[ImageBuild],
    ) -> Result<DockerProvider, ClusterError> {
        let kind_spec = KindSpec {
            workers: spec.nodes.max(1),
            cni,
            k8s_version,
            images: images.to_vec(),
            ..KindSpec::new(name)
        };
        Self::connect(kind::start(&kind_spec, &PlanEnv::detect_workspace())?, spec)
    }

    /// Starts k3s: a server and `spec.nodes - 1` agents.
    pub(super) fn start_k3s(
        spec: &ClusterSpec,
        name: &str,
        api_port: u16,
        images: &[ImageBuild],
    ) -> Result<DockerProvider, ClusterError> {
        let k3s_spec = K3sSpec {
            agents: spec.nodes.max(1) - 1,
            api_port,
            images: images.to_vec(),
            ..K3sSpec::new(name)
        };
        Self::connect(k3s::start(&k3s_spec, &PlanEnv::detect_workspace())?, spec)
    }

    /// A client for the started cluster; a failure drops `nodes`, which
    /// deletes what was started.
    fn connect(nodes: DockerNodes, spec: &ClusterSpec) -> Result<DockerProvider, ClusterError> {
        let connection = Connection::open(nodes.kubeconfig().to_path_buf(), spec.images.clone(), None)?;
        Ok(DockerProvider { connection, nodes })
    }
}

impl Provider for DockerProvider {
    fn target(&self) -> &'static str {
        self.nodes.backend()
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

    fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        self.connection.runnable_pod(pod)
    }

    /// `argv` in the pod's netns on its node (see [`DockerNodes::pod_exec`]).
    fn in_pod(&self, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError> {
        let (node, uid) = self.connection.placement(namespace, pod)?;
        self.nodes
            .pod_exec(&node, &uid, argv)
            .map(|out| out.stdout)
            .map_err(ClusterError::exec(argv, format!("in pod {namespace}/{pod}")))
    }

    fn node_exec(&self, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        self.nodes
            .node_exec(node, argv)
            .map(|out| out.stdout)
            .map_err(ClusterError::exec(argv, format!("on node {node}")))
    }

    fn delete(self: Box<Self>) -> Result<(), ClusterError> {
        let DockerProvider { connection, nodes } = *self;
        drop(connection);
        nodes
            .delete()
            .map_err(|e| ClusterError::Teardown(Leftovers(vec![e.into()])))
    }
}
