//! The real-cluster backends behind [`Cluster`](super::Cluster): kind and
//! k3s ([`DockerCluster`]) and existing clusters, with a kube client on a
//! runtime of their own.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::runtime::Runtime;

use super::{Backend, ClusterError, ClusterSpec, create_err};
use crate::backend::docker::DockerCluster;
use crate::backend::env::PlanEnv;
use crate::backend::existing::{ExistingCluster, ExistingSpec};
use crate::backend::k3s::{self, K3sSpec};
use crate::backend::kind::{self, KindSpec};
use crate::kubelet::ImageTable;

/// A kind, k3s or existing cluster, reached through [`Cluster::remote`](super::Cluster::remote).
pub struct RemoteCluster {
    handle: Handle,
    kubeconfig: PathBuf,
    client: kube::Client,
    /// The spec's image table: what each image runs (see [`ImageTable::remote_pod`]).
    images: ImageTable,
    /// Where an existing cluster pulls the project's images from.
    registry: Option<String>,
    // Declared last: dropped after the client whose tasks run on it.
    runtime: Runtime,
}

/// What was started.
enum Handle {
    Docker(DockerCluster),
    Existing(ExistingCluster),
}

/// Why nothing runs on the nodes of an existing cluster.
const EXISTING_NODES: &str = "the harness has no access to its nodes (kind and k3s run theirs in Docker); \
                              use a privileged hostNetwork/hostPID debug pod there";

impl RemoteCluster {
    /// Starts (or validates) the cluster of `spec.backend`, which must not be local.
    pub(super) fn create(spec: &ClusterSpec) -> Result<RemoteCluster, ClusterError> {
        let env = PlanEnv::detect_workspace();
        let nodes = spec.nodes.max(1);
        let handle = match &spec.backend {
            Backend::Local => return Err(ClusterError::Create("the local backend is not remote".into())),
            Backend::Kind {
                name,
                k8s_version,
                cni,
                images,
            } => {
                let kind_spec = KindSpec {
                    workers: nodes,
                    cni: *cni,
                    k8s_version: *k8s_version,
                    images: images.clone(),
                    ..KindSpec::new(name.clone())
                };
                Handle::Docker(kind::start(&kind_spec, &env)?)
            }
            Backend::K3s { name, api_port, images } => {
                let k3s_spec = K3sSpec {
                    agents: nodes - 1,
                    api_port: *api_port,
                    images: images.clone(),
                    ..K3sSpec::new(name.clone())
                };
                Handle::Docker(k3s::start(&k3s_spec, &env)?)
            }
            Backend::Existing {
                kubeconfig,
                registry,
                images,
            } => {
                let existing = ExistingSpec {
                    registry: registry.clone(),
                    images: images.clone(),
                    ..ExistingSpec::new(kubeconfig.clone())
                };
                Handle::Existing(ExistingCluster::start(&existing, &env)?)
            }
        };
        let kubeconfig = match &handle {
            Handle::Docker(docker) => crate::backend::RealCluster::kubeconfig(docker).to_path_buf(),
            Handle::Existing(existing) => existing.kubeconfig.clone(),
        };
        // From here on, a failure drops `handle`, which deletes what was created.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("cluster-client")
            .build()
            .map_err(|e| create_err("runtime")(e.to_string()))?;
        let client = runtime
            .block_on(client_for(&kubeconfig))
            .map_err(create_err("client"))?;
        let registry = match &spec.backend {
            Backend::Existing { registry, .. } => registry.clone(),
            _ => None,
        };
        Ok(RemoteCluster {
            handle,
            kubeconfig,
            client,
            images: spec.images.clone(),
            registry,
            runtime,
        })
    }

    /// `kind`, `k3s` or `existing`.
    pub fn backend(&self) -> &'static str {
        match &self.handle {
            Handle::Docker(docker) => docker.backend(),
            Handle::Existing(_) => "existing",
        }
    }

    /// The kind/k3s cluster (node containers, logs export), if it is one.
    pub fn docker(&self) -> Option<&DockerCluster> {
        match &self.handle {
            Handle::Docker(docker) => Some(docker),
            Handle::Existing(_) => None,
        }
    }

    /// The name pods use for a project image built as `tag`: kind and k3s
    /// load it into their nodes under its tag; an existing cluster pulls it
    /// from its registry when one was given.
    pub fn image_ref(&self, tag: &str) -> String {
        image_ref(self.registry.as_deref(), tag)
    }

    /// `pod` with every container running what the image table maps it to,
    /// from the test image.
    pub fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        let image = self.image_ref(crate::backend::images::TEST_IMAGE);
        self.images.remote_pod(pod, &image).map_err(ClusterError::Pod)
    }

    /// An admin client (the kubeconfig's current context).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The kubeconfig (written under `target/kind/<cluster>/` for kind and
    /// k3s; the given one for existing clusters).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs async work on the client's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// A container's current log, through the API.
    pub fn pod_logs(&self, namespace: &str, pod: &str, container: &str) -> Result<String, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let params = LogParams {
            container: Some(container.to_string()),
            ..LogParams::default()
        };
        self.block_on(api.logs(pod, &params))
            .map_err(|e| ClusterError::Api(format!("logs of {namespace}/{pod} container {container}: {e}")))
    }

    /// `argv` in the pod's netns on its node (see [`DockerCluster::pod_exec`]).
    pub fn in_pod(&self, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError> {
        let docker = self.docker().ok_or(ClusterError::Unsupported {
            backend: "existing",
            what: "running commands in a pod's netns",
            why: EXISTING_NODES,
        })?;
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let object = self
            .block_on(api.get(pod))
            .map_err(|e| ClusterError::Api(format!("pod {namespace}/{pod}: {e}")))?;
        let node = object.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let (Some(node), Some(uid)) = (node, object.metadata.uid.as_deref()) else {
            return Err(ClusterError::Pod(format!("pod {namespace}/{pod} is not scheduled yet")));
        };
        docker
            .pod_exec(node, uid, argv)
            .map(|out| out.stdout)
            .map_err(|e| ClusterError::Exec(format!("{argv:?} in pod {namespace}/{pod}: {e}")))
    }

    /// `argv` on a node container.
    pub fn node_exec(&self, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        let docker = self.docker().ok_or(ClusterError::Unsupported {
            backend: "existing",
            what: "running commands on nodes",
            why: EXISTING_NODES,
        })?;
        docker
            .node_exec(node, argv)
            .map(|out| out.stdout)
            .map_err(|e| ClusterError::Exec(format!("{argv:?} on node {node}: {e}")))
    }

    /// Deletes a kind/k3s cluster now (unless kept or reused); an existing
    /// cluster is left as it is.
    pub(super) fn delete(self) -> Result<(), ClusterError> {
        match self.handle {
            Handle::Docker(docker) => docker.delete().map_err(|e| ClusterError::Teardown(e.to_string())),
            Handle::Existing(_) => Ok(()),
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

async fn client_for(kubeconfig: &Path) -> Result<kube::Client, String> {
    let file = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
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
