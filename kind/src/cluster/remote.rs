//! The real-cluster provider: a kube client for the cluster's kubeconfig
//! on a runtime of its own, the project's images as that cluster names
//! them, and the target's own way to its nodes ([`NodeAccess`]: kind and k3s
//! through Docker, existing clusters none).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::runtime::Runtime;

use super::ClusterError;
use super::provider::{Provider, new_runtime};
use crate::kubelet::ImageTable;

/// What a real target offers on its nodes.
pub(super) trait NodeAccess: Send + Sync {
    /// `kind`, `k3s` or `existing`.
    fn target(&self) -> &'static str;

    /// `argv` in the netns of `pod` (found through `api`); its stdout.
    fn in_pod(&self, api: &Connection, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError>;

    /// `argv` on `node`; its stdout.
    fn node_exec(&self, api: &Connection, node: &str, argv: &[&str]) -> Result<String, ClusterError>;

    /// Deletes what this run started (while the connection still serves).
    fn delete(self, api: &Connection) -> Result<(), ClusterError>;
}

/// A running kind, k3s or existing cluster.
pub(super) struct RemoteProvider<N> {
    connection: Connection,
    /// For kind and k3s: deletes the cluster on drop (unless kept or reused).
    nodes: N,
}

impl<N: NodeAccess> RemoteProvider<N> {
    /// A client for the started cluster; a failure drops `nodes`, which
    /// deletes what was started.
    pub(super) fn connect(
        nodes: N,
        kubeconfig: PathBuf,
        images: ImageTable,
        registry: Option<String>,
    ) -> Result<RemoteProvider<N>, ClusterError> {
        let connection = Connection::open(kubeconfig, images, registry)?;
        Ok(RemoteProvider { connection, nodes })
    }
}

impl<N: NodeAccess> Provider for RemoteProvider<N> {
    fn target(&self) -> &'static str {
        self.nodes.target()
    }

    fn client(&self) -> kube::Client {
        self.connection.client.clone()
    }

    fn kubeconfig_path(&self) -> &Path {
        &self.connection.kubeconfig
    }

    fn runtime(&self) -> &Runtime {
        &self.connection.runtime
    }

    fn image_ref(&self, tag: &str) -> String {
        self.connection.image_ref(tag)
    }

    fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        self.connection.runnable_pod(pod)
    }

    fn in_pod(&self, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError> {
        self.nodes.in_pod(&self.connection, namespace, pod, argv)
    }

    fn node_exec(&self, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        self.nodes.node_exec(&self.connection, node, argv)
    }

    fn delete(self: Box<Self>) -> Result<(), ClusterError> {
        let RemoteProvider { connection, nodes } = *self;
        nodes.delete(&connection)
    }
}

/// A client of a real cluster.
pub(super) struct Connection {
    kubeconfig: PathBuf,
    client: kube::Client,
    /// The spec's image table: what each image runs (see [`ImageTable::remote_pod`]).
    images: ImageTable,
    /// Where the cluster pulls the project's images from (existing clusters).
    registry: Option<String>,
    // Declared last: dropped after the client whose tasks run on it.
    runtime: Runtime,
}

impl Connection {
    /// A client for `kubeconfig`'s current context.
    fn open(kubeconfig: PathBuf, images: ImageTable, registry: Option<String>) -> Result<Connection, ClusterError> {
        let runtime = new_runtime(1, "cluster-client")?;
        let client = runtime
            .block_on(client_for(&kubeconfig))
            .map_err(ClusterError::create("client"))?;
        Ok(Connection {
            kubeconfig,
            client,
            images,
            registry,
            runtime,
        })
    }

    /// kind and k3s load the project's images into their nodes under their
    /// tags; an existing cluster pulls them from its registry when one was given.
    fn image_ref(&self, tag: &str) -> String {
        image_ref(self.registry.as_deref(), tag)
    }

    /// `pod` with every container running what the image table maps it to,
    /// from the test image.
    fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        let image = self.image_ref(crate::backend::images::TEST_IMAGE);
        Ok(self.images.remote_pod(pod, &image)?)
    }

    /// A client of the cluster.
    pub(super) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Runs `work` on the connection's runtime.
    pub(super) fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// The node a pod is bound to, and its UID.
    pub(super) fn placement(&self, namespace: &str, pod: &str) -> Result<(String, String), ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let object = self
            .runtime
            .block_on(api.get(pod))
            .map_err(|source| ClusterError::Api {
                what: format!("pod {namespace}/{pod}"),
                source,
            })?;
        let node = object.spec.and_then(|s| s.node_name);
        match (node, object.metadata.uid) {
            (Some(node), Some(uid)) => Ok((node, uid)),
            _ => Err(ClusterError::PodNotScheduled {
                pod: format!("{namespace}/{pod}"),
            }),
        }
    }
}

/// `tag` as pulled from `registry` (`registry.example:5000/team` +
/// `istio-cni-rs/test:dev`), or as loaded (no registry).
pub fn image_ref(registry: Option<&str>, tag: &str) -> String {
    match registry {
        Some(r) => format!("{}/{tag}", r.trim_end_matches('/')),
        None => tag.to_string(),
    }
}

/// Why no client could be made for a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The file cannot be read or parsed.
    #[error("{}: {source}", path.display())]
    Read {
        /// The kubeconfig.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Its current context cannot be turned into a client configuration.
    #[error("{}: {source}", path.display())]
    Config {
        /// The kubeconfig.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client cannot be built from it (TLS, proxy settings).
    #[error(transparent)]
    Client(#[from] kube::Error),
}

async fn client_for(kubeconfig: &Path) -> Result<kube::Client, ClientError> {
    let path = || kubeconfig.to_path_buf();
    let file = Kubeconfig::read_from(kubeconfig).map_err(|source| ClientError::Read { path: path(), source })?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|source| ClientError::Config { path: path(), source })?;
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::image_ref;

    #[test]
    fn images_come_from_the_registry_when_there_is_one() {
        assert_eq!(image_ref(None, "istio-cni-rs/test:dev"), "istio-cni-rs/test:dev");
        assert_eq!(
            image_ref(Some("reg.example:5000/team/"), "istio-cni-rs/agent:dev"),
            "reg.example:5000/team/istio-cni-rs/agent:dev"
        );
    }
}
