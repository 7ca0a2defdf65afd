//! The harness's one cluster API: [`Cluster::create`] with a [`ClusterSpec`]
//! whose [`Target`] says where the cluster runs.
//!
//! - `local` (the default): the embedded cluster of Linux namespaces
//!   ([`LocalCluster`]); needs root or a user namespace, starts in
//!   milliseconds, and also gives node and netns handles ([`Cluster::local`]).
//! - `kind`, `k3s`: real clusters in Docker, driven through their CLIs
//!   ([`crate::backend`]); without the tools, `create` fails at once naming
//!   what to install. The tests that bring them up are behind `--features kind`.
//! - `existing`: a running cluster reached through a kubeconfig; never
//!   created nor deleted.
//!
//! What every target can do is on [`Cluster`]: a client, the kubeconfig,
//! waiting for pods, their logs, commands in a pod's netns
//! ([`Cluster::iptables_save`]) and on nodes. [`Cluster`] is a thin facade
//! over one provider per target (`provider.rs`); where a target cannot do
//! something, its provider says so in its error
//! ([`ClusterError::Unsupported`]); nothing silently does nothing. Dropping
//! a [`Cluster`] tears down what it created.

pub mod control;
mod docker;
mod error;
mod existing;
mod local;
mod membership;
pub mod node_shell;
mod provider;
mod reaper;
mod remote;
pub mod userns;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::wait::await_condition;

pub use error::{BoxError, ClusterError, CommandFailed, Leftover, Leftovers};
pub use local::LocalCluster;
pub use reaper::Reaper;
pub use remote::ClientError;

use crate::backend::images::ImageBuild;
use crate::backend::kind::PrimaryCni;
use crate::backend::versions::KubeVersion;
use crate::cni::Profile;
use crate::kubelet::heartbeat::Heartbeat;
use crate::kubelet::{Backoff, ImageTable};
use crate::node::{Layout, NodeSpec, NodeTaint};
use provider::Provider;

/// Where the cluster runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    /// The embedded cluster (namespaces and processes on this machine).
    #[default]
    Local,
    /// A kind cluster: 1 control plane + [`ClusterSpec::nodes`] workers.
    /// `KIND_CLUSTER_NAME` reuses a cluster, `KEEP_CLUSTER=1` keeps it.
    Kind {
        /// The cluster name (`kind --name`).
        name: String,
        /// The Kubernetes version (selects the pinned node image).
        k8s_version: KubeVersion,
        /// The primary CNI.
        cni: PrimaryCni,
        /// Images built on the host and loaded into the nodes.
        images: Vec<ImageBuild>,
    },
    /// k3s in Docker: a server and [`ClusterSpec::nodes`]` - 1` agents
    /// (the server runs pods too); flannel is the primary CNI.
    K3s {
        /// Names the Docker network and prefixes the containers.
        name: String,
        /// The API server port on `127.0.0.1`.
        api_port: u16,
        /// Images built on the host and imported into every node.
        images: Vec<ImageBuild>,
    },
    /// A running cluster; its nodes, CNI and version are what they are.
    Existing {
        /// Its kubeconfig (the current context is used).
        kubeconfig: PathBuf,
        /// A registry the cluster pulls from; images are pushed there.
        registry: Option<String>,
        /// Images to build and push (only with a registry).
        images: Vec<ImageBuild>,
        /// The image of the node shells through which commands reach its
        /// nodes; `None`: `ISTIO_CNI_NODE_SHELL_IMAGE`, else Debian's slim
        /// image ([`node_shell`]).
        node_shell_image: Option<String>,
    },
}

impl Target {
    /// kind with its defaults: cluster `istio-cni`, kindnet, the default
    /// Kubernetes version, the test image.
    pub fn kind() -> Target {
        let spec = crate::backend::kind::KindSpec::new("istio-cni");
        Target::Kind {
            name: spec.name,
            k8s_version: spec.k8s_version,
            cni: spec.cni,
            images: spec.images,
        }
    }

    /// k3s with its defaults: cluster `istio-cni-k3s`, API port 6550, the test image.
    pub fn k3s() -> Target {
        let spec = crate::backend::k3s::K3sSpec::new("istio-cni-k3s");
        Target::K3s {
            name: spec.name,
            api_port: spec.api_port,
            images: spec.images,
        }
    }

    /// The cluster of `kubeconfig`, no images.
    pub fn existing(kubeconfig: impl Into<PathBuf>) -> Target {
        Target::Existing {
            kubeconfig: kubeconfig.into(),
            registry: None,
            images: Vec::new(),
            node_shell_image: None,
        }
    }

    /// `local`, `kind`, `k3s` or `existing`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Kind { .. } => "kind",
            Target::K3s { .. } => "k3s",
            Target::Existing { .. } => "existing",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Where (the local embedded cluster by default).
    pub target: Target,
    /// Nodes that run pods (kind: workers; k3s: server + agents; ignored by `existing`).
    pub nodes: u32,
    /// The primary CNI every node runs (local; kind's is [`Target::Kind`]'s `cni`).
    pub profile: Profile,
    /// Write the primary config as a single `.conf` instead of a `.conflist` (local).
    pub single_conf: bool,
    /// The nodes' CNI directory layout, kind's by default (local).
    pub layout: Layout,
    /// Container images as local executables (local; remote backends load
    /// the images of their [`Target`] variant).
    pub images: ImageTable,
    /// kubelet's crash-loop and sandbox-retry backoff (local; real kubelets
    /// use their own).
    pub backoff: Backoff,
    /// The pods' address families (local): IPv4 (default), IPv6 single-stack
    /// or dual-stack, through host-local ranges in the primary CNI config.
    /// With IPv6 pods the cluster network gets an IPv6 side (routes between
    /// nodes, an API listener on its gateway); pods are given the API server
    /// at an address of the primary family (IPv6 only for `Ipv6`).
    pub ip_family: IpFamily,
    /// The environment of the nodes' container runtime (local), which every
    /// CNI plugin it runs inherits on top of this process's (as containerd's
    /// environment reaches its plugins): e.g. a `PATH` whose `iptables` is a
    /// legacy-only install.
    pub runtime_env: Vec<(String, String)>,
    /// The taints every node registers with (local; kubelet's
    /// `--register-with-taints`). Nodes added later bring their own.
    pub node_taints: Vec<NodeTaint>,
    /// How often kubelets renew their node Lease and how long a silent node
    /// stays `Ready` (local; Kubernetes' 10 s and 40 s by default).
    pub heartbeat: Heartbeat,
    /// A loopback listener bound before this process entered a network
    /// namespace of its own (local; `istio-cni-cluster up` as an ordinary
    /// user): the API server serves it too, and listens on the same address
    /// in the current namespace, so the kubeconfig's one URL works from both.
    pub api_listener: Option<Arc<TcpListener>>,
}

/// Which addresses pods get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IpFamily {
    /// One IPv4 address.
    #[default]
    Ipv4,
    /// One IPv6 address (`fd0a:<cluster>:<node>::/64`).
    Ipv6,
    /// An IPv4 and an IPv6 address.
    DualStack,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            target: Target::Local,
            nodes: 1,
            profile: Profile::Ptp,
            single_conf: false,
            layout: Layout::Default,
            images: ImageTable::new(),
            backoff: Backoff::default(),
            ip_family: IpFamily::Ipv4,
            runtime_env: Vec::new(),
            node_taints: Vec::new(),
            heartbeat: Heartbeat::default(),
            api_listener: None,
        }
    }
}

impl ClusterSpec {
    /// Local-only settings a remote backend cannot honour are refused rather
    /// than ignored.
    fn check_remote(&self) -> Result<(), ClusterError> {
        let target = self.target.name();
        let refuse = |setting: String| Err(ClusterError::LocalOnly { setting, target });
        if self.profile != Profile::Ptp {
            return refuse(format!("profile {:?}", self.profile));
        }
        if self.single_conf {
            return refuse("single_conf".into());
        }
        if self.layout != Layout::Default {
            return refuse(format!("layout {:?}", self.layout));
        }
        if self.ip_family != IpFamily::Ipv4 {
            return refuse(format!("ip_family {:?}", self.ip_family));
        }
        if !self.runtime_env.is_empty() {
            return refuse("runtime_env".into());
        }
        if !self.node_taints.is_empty() {
            return refuse("node_taints".into());
        }
        if self.heartbeat != Heartbeat::default() {
            return refuse("heartbeat".into());
        }
        if self.api_listener.is_some() {
            return refuse("api_listener".into());
        }
        Ok(())
    }
}

/// A running cluster on one of the targets.
pub struct Cluster {
    provider: Box<dyn Provider>,
}

impl Cluster {
    /// Creates (kind, k3s), validates (existing) or builds (local) the
    /// cluster, and returns once its API server answers and its nodes are
    /// ready. Real-cluster targets check their tools first and fail at once
    /// when one is missing.
    pub fn create(spec: ClusterSpec) -> Result<Cluster, ClusterError> {
        if spec.target != Target::Local {
            spec.check_remote()?;
        }
        let provider: Box<dyn Provider> = match &spec.target {
            Target::Local => Box::new(LocalCluster::create(spec)?),
            Target::Kind {
                name,
                k8s_version,
                cni,
                images,
            } => Box::new(docker::start_kind(&spec, name, *k8s_version, *cni, images)?),
            Target::K3s { name, api_port, images } => Box::new(docker::start_k3s(&spec, name, *api_port, images)?),
            Target::Existing {
                kubeconfig,
                registry,
                images,
                node_shell_image,
            } => Box::new(existing::start(
                &spec,
                kubeconfig,
                registry,
                images,
                node_shell_image.clone(),
            )?),
        };
        Ok(Cluster { provider })
    }

    /// `local`, `kind`, `k3s` or `existing`.
    pub fn target(&self) -> &'static str {
        self.provider.target()
    }

    /// The embedded cluster's own handles (nodes with their netns and CNI
    /// dirs, the API server with its tokens and faults, pod netns paths),
    /// or why this target has none.
    pub fn local(&self) -> Result<&LocalCluster, ClusterError> {
        self.provider.local()
    }

    /// The name pods use for a project image built as `tag`
    /// ([`AGENT_IMAGE`](crate::backend::images::AGENT_IMAGE), the test
    /// image): the tag itself on the embedded cluster, kind and k3s (loaded
    /// into the nodes); prefixed with an existing cluster's registry.
    pub fn image_ref(&self, tag: &str) -> String {
        self.provider.image_ref(tag)
    }

    /// `pod` as this target runs it. The embedded cluster runs it as is
    /// (its image table maps images to local programs); a real cluster gets
    /// every container running the same program and arguments from the
    /// project's test image ([`ImageTable::remote_pod`]), so one pod spec
    /// means the same processes everywhere.
    pub fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        self.provider.runnable_pod(pod)
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.provider.client()
    }

    /// An admin kubeconfig for this machine (kubectl, tests).
    pub fn kubeconfig_path(&self) -> &Path {
        self.provider.kubeconfig_path()
    }

    /// Runs async work (kube calls) on the cluster's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.provider.runtime().block_on(f)
    }

    /// Waits until `ready` holds for the pod, returning it: a watch on the
    /// pod (`await_condition`), started again when it fails (an API server
    /// restarting) until `timeout`; then the error shows the pod as last seen.
    pub fn wait_for_pod(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        ready: impl Fn(&Pod) -> bool,
    ) -> Result<Pod, ClusterError> {
        const REWATCH: Duration = Duration::from_millis(200);
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let ready = |pod: Option<&Pod>| pod.is_some_and(&ready);
        let watch = async {
            loop {
                if let Ok(Some(pod)) = await_condition(api.clone(), name, &ready).await {
                    return pod;
                }
                tokio::time::sleep(REWATCH).await;
            }
        };
        // The timer is made inside the runtime (it needs its clock).
        let watched = self.block_on(async { tokio::time::timeout(timeout, watch).await });
        watched.map_err(|_| {
            let last = self.block_on(api.get_opt(name));
            ClusterError::PodNotReady {
                pod: format!("{namespace}/{name}"),
                timeout,
                last_seen: format!("{last:?}"),
            }
        })
    }

    /// A container's current log.
    pub fn pod_logs(&self, namespace: &str, pod: &str, container: &str) -> Result<String, ClusterError> {
        self.provider.pod_logs(namespace, pod, container)
    }

    /// The log of a container's previous instance: the one that last
    /// terminated, once kubelet has restarted it (its current log may then
    /// still be empty). Through the API, on every target.
    pub fn previous_pod_logs(&self, namespace: &str, pod: &str, container: &str) -> Result<String, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let params = kube::api::LogParams {
            container: Some(container.to_string()),
            previous: true,
            ..Default::default()
        };
        self.block_on(api.logs(pod, &params))
            .map_err(|source| ClusterError::Api {
                what: format!("previous logs of {namespace}/{pod} container {container}"),
                source,
            })
    }

    /// Runs `argv` in a pod's network namespace (with the node's tools, as
    /// the CNI plugin does); its stdout. Not on `existing` clusters.
    pub fn in_pod(&self, namespace: &str, pod: &str, argv: &[&str]) -> Result<String, ClusterError> {
        self.provider.in_pod(namespace, pod, argv)
    }

    /// `iptables-save` in a pod's network namespace: the rules the CNI
    /// plugin programmed.
    ///
    /// A real node's plain `iptables-save` may be a wrapper that picks the
    /// backend by the host's rules (kind's `iptables-wrapper`), not by the
    /// pod's, so there both backends are dumped: the plugin chose one of them
    /// in the pod netns (legacy only where legacy already had rules).
    pub fn iptables_save(&self, namespace: &str, pod: &str) -> Result<String, ClusterError> {
        self.provider.iptables_save(namespace, pod)
    }

    /// Runs `argv` on a node (local: in its netns; kind/k3s: `docker exec`;
    /// existing: in a node shell, [`node_shell`]); its stdout.
    pub fn node_exec(&self, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        self.provider.node_exec(node, argv)
    }

    /// Adds a node to the running cluster (local only): it registers with
    /// `spec`'s taints and labels, is `Ready` when this returns, and takes
    /// pods at once (the DaemonSets' too).
    pub fn add_node(&self, spec: NodeSpec) -> Result<(), ClusterError> {
        self.provider.local()?.add_node(spec)
    }

    /// Removes a node from the running cluster (local only): its Node
    /// object, its pods (torn down by its kubelet), then the node itself.
    pub fn remove_node(&self, name: &str) -> Result<(), ClusterError> {
        self.provider.local()?.remove_node(name)
    }

    /// A handle that tears a local cluster down from another thread while
    /// its owner is stuck; `None` for real clusters (their owner's drop deletes them).
    pub fn reaper(&self) -> Option<Reaper> {
        self.provider.reaper()
    }

    /// Tears the cluster down now (local: everything it created; kind/k3s:
    /// the cluster unless kept or reused; existing: nothing to delete) and
    /// reports what failed, which dropping it cannot.
    pub fn delete(self) -> Result<(), ClusterError> {
        self.provider.delete()
    }
}
