//! kind and k3s: clusters whose nodes are Docker containers
//! ([`DockerNodes`]); commands on a node are `docker exec`, commands in a
//! pod run in its sandbox's netns on its node.

use super::remote::{Connection, NodeAccess, RemoteProvider};
use super::{ClusterError, ClusterSpec, Leftovers};
use crate::backend::docker::DockerNodes;
use crate::backend::env::PlanEnv;
use crate::backend::images::ImageBuild;
use crate::backend::k3s::{self, K3sSpec};
use crate::backend::kind::{self, KindSpec, PrimaryCni};
use crate::backend::versions::KubeVersion;

/// A running kind or k3s cluster.
pub(super) type DockerProvider = RemoteProvider<DockerNodes>;

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
    connect(kind::start(&kind_spec, &PlanEnv::detect_workspace())?, spec)
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
    connect(k3s::start(&k3s_spec, &PlanEnv::detect_workspace())?, spec)
}

/// The project's images are loaded into the nodes under their tags: no registry.
fn connect(nodes: DockerNodes, spec: &ClusterSpec) -> Result<DockerProvider, ClusterError> {
    let kubeconfig = nodes.kubeconfig().to_path_buf();
    RemoteProvider::connect(nodes, kubeconfig, spec.images.clone(), None)
}

impl NodeAccess for DockerNodes {
    fn target(&self) -> &'static str {
        self.backend()
    }

    /// `argv` in the pod's netns on its node (see [`DockerNodes::pod_exec`]).
    fn in_pod(&self, api: &Connection, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError> {
        let (node, uid) = api.placement(namespace, pod)?;
        self.pod_exec(&node, &uid, argv)
            .map(|out| out.stdout)
            .map_err(ClusterError::exec(argv, format!("in pod {namespace}/{pod}")))
    }

    fn node_exec(&self, _: &Connection, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        DockerNodes::node_exec(self, node, argv)
            .map(|out| out.stdout)
            .map_err(ClusterError::exec(argv, format!("on node {node}")))
    }

    fn delete(self, _: &Connection) -> Result<(), ClusterError> {
        DockerNodes::delete(self).map_err(|e| ClusterError::Teardown(Leftovers(vec![e.into()])))
    }
}
