//! [`Provider`]: what a backend does for [`Cluster`](super::Cluster). Two
//! implementations: [`LocalCluster`] (the embedded cluster) and
//! [`RemoteProvider`](super::remote::RemoteProvider), a client of a real
//! cluster with its target's way to the nodes: Docker for kind and k3s
//! ([`DockerProvider`](super::docker::DockerProvider)), none for existing
//! clusters ([`ExistingProvider`](super::existing::ExistingProvider)). What
//! a target cannot do, its provider answers with
//! [`ClusterError::Unsupported`]; the defaults here are the answers most
//! providers share.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use tokio::runtime::Runtime;

use super::{ClusterError, LocalCluster, Reaper};

/// Both iptables backends' rules in a real node's pod netns (missing tools
/// are skipped): a node's plain `iptables-save` may be a wrapper that picks
/// the backend by the host's rules (kind's `iptables-wrapper`), not the pod's.
const BOTH_IPTABLES_SAVES: &str = "iptables-legacy-save 2>/dev/null; iptables-nft-save 2>/dev/null; true";

/// The runtime a provider's client and tasks live on: `threads` workers
/// named `name`.
pub(crate) fn new_runtime(threads: usize, name: &str) -> Result<Runtime, ClusterError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(ClusterError::create("runtime"))
}

/// A running cluster of one target.
pub(crate) trait Provider: Send + Sync {
    /// `local`, `kind`, `k3s` or `existing`.
    fn target(&self) -> &'static str;

    /// An admin client.
    fn client(&self) -> kube::Client;

    /// An admin kubeconfig usable from this machine.
    fn kubeconfig_path(&self) -> &Path;

    /// The runtime the client's connections live on.
    fn runtime(&self) -> &Runtime;

    /// The name pods use for a project image built as `tag`.
    fn image_ref(&self, tag: &str) -> String {
        tag.to_string()
    }

    /// `pod` as this target runs it.
    fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError>;

    /// A container's current log (through the API server by default).
    fn pod_logs(&self, namespace: &str, pod: &str, container: &str) -> Result<String, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let params = LogParams {
            container: Some(container.to_string()),
            ..LogParams::default()
        };
        self.runtime()
            .block_on(api.logs(pod, &params))
            .map_err(|source| ClusterError::Api {
                what: format!("logs of {namespace}/{pod} container {container}"),
                source,
            })
    }

    /// `argv` in a pod's network namespace, with the node's tools; its stdout.
    fn in_pod(&self, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError>;

    /// The iptables rules in a pod's netns (both backends' by default).
    fn iptables_save(&self, namespace: &str, pod: &str) -> Result<String, ClusterError> {
        self.in_pod(namespace, pod, &["sh", "-c", BOTH_IPTABLES_SAVES])
    }

    /// `argv` on a node; its stdout.
    fn node_exec(&self, node: &str, argv: &[&str]) -> Result<String, ClusterError>;

    /// The embedded cluster's own handles.
    fn local(&self) -> Result<&LocalCluster, ClusterError> {
        Err(ClusterError::Unsupported {
            target: self.target(),
            what: "local node, netns and API server handles",
            why: "its nodes are containers or machines, not namespaces of this process; use node_exec, in_pod and the client",
        })
    }

    /// A handle that tears the cluster down from another thread, where the
    /// target has one (dropping a real cluster's owner deletes it).
    fn reaper(&self) -> Option<Reaper> {
        None
    }

    /// Tears down what this run created, reporting what failed.
    fn delete(self: Box<Self>) -> Result<(), ClusterError>;
}
