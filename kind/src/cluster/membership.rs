//! Nodes joining and leaving a running embedded cluster, and their
//! kubelets' heartbeats.
//!
//! A node joins as at start-up: its namespace and tree on the cluster
//! network, the primary CNI config, its Node object (with the taints and
//! labels it registers with), a Lease, a kubelet and a heartbeat. The
//! scheduler and the DaemonSet controller watch nodes, so it takes pods at
//! once. A node leaves as a deleted node does in Kubernetes: its Node object
//! goes first (nothing is scheduled or created there any more), then its
//! pods are deleted (the pod garbage collector's job for pods of vanished
//! nodes), its kubelet tears their sandboxes down, and the node's namespace,
//! veth and routes are removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use tokio::task::JoinHandle;

use super::local::LocalCluster;
use super::{ClusterError, IpFamily};
use crate::cni::{GeneratedConfig, Profile};
use crate::controllers::node_lifecycle::LEASE_NAMESPACE;
use crate::kubelet::heartbeat::{self, Heartbeat, Registration};
use crate::kubelet::{self, Backoff, ImageTable, NodeContext};
use crate::node::{Layout, Node, NodeError, NodeSpec};

/// How long a leaving node's kubelet gets to tear its pods down.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every node of a cluster is made of (from its `ClusterSpec`).
#[derive(Debug, Clone)]
pub(super) struct NodeTemplate {
    pub profile: Profile,
    pub single_conf: bool,
    pub ip_family: IpFamily,
    pub layout: Layout,
    pub images: ImageTable,
    pub backoff: Backoff,
    pub runtime_env: Vec<(String, String)>,
    pub heartbeat: Heartbeat,
    pub log_dir: std::path::PathBuf,
    pub pod_cgroups: Option<std::path::PathBuf>,
    /// The API server as pods reach it (`KUBERNETES_SERVICE_HOST`/`PORT`).
    pub in_cluster: Option<std::net::SocketAddr>,
}

impl NodeTemplate {
    /// The node's pod CIDRs by address family, IPv4's from the network plan.
    fn pod_cidrs(&self, node: &Node) -> Result<Vec<String>, String> {
        let v4 = node.pod_cidr().to_string();
        Ok(match self.ip_family {
            IpFamily::Ipv4 => vec![v4],
            IpFamily::Ipv6 => vec![pod_cidr_v6(node)?],
            IpFamily::DualStack => vec![v4, pod_cidr_v6(node)?],
        })
    }

    fn cni_config(&self, node: &Node) -> Result<GeneratedConfig, String> {
        let mut profile = node.profile(self.profile);
        match self.ip_family {
            IpFamily::Ipv4 => {}
            IpFamily::Ipv6 => profile.pod_cidr = pod_cidr_v6(node)?,
            IpFamily::DualStack => profile = profile.dual_stack(pod_cidr_v6(node)?),
        }
        if self.single_conf {
            profile = profile.single_conf();
        }
        profile.generate()
    }

    /// Writes the node's primary CNI config.
    pub fn write_cni_config(&self, node: &Node) -> Result<(), crate::cluster::BoxError> {
        let config = self.cni_config(node)?;
        node.write_cni_config(&config)?;
        Ok(())
    }
}

/// The node's IPv6 pod range (the cluster network has an IPv6 side when
/// the cluster's pods have IPv6 addresses).
fn pod_cidr_v6(node: &Node) -> Result<String, String> {
    node.pod_cidr_v6().map(str::to_owned).ok_or_else(|| {
        format!(
            "node {} has no IPv6 pod range: the cluster network is IPv4 only",
            node.name()
        )
    })
}

/// A node's running parts.
#[derive(Debug)]
pub(super) struct NodeTasks {
    kubelet: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    /// Set: the heartbeat skips its beats.
    silenced: Arc<AtomicBool>,
}

impl NodeTasks {
    pub fn abort(&self) {
        self.kubelet.abort();
        self.heartbeat.abort();
    }

    pub fn abort_handles(&self) -> [tokio::task::AbortHandle; 2] {
        [self.kubelet.abort_handle(), self.heartbeat.abort_handle()]
    }
}

fn node_error(node: &str, action: &'static str) -> impl FnOnce(crate::cluster::BoxError) -> ClusterError {
    let node = node.to_string();
    move |source| ClusterError::Node { node, action, source }
}

impl LocalCluster {
    /// Registers a node of the network and starts its kubelet and heartbeat.
    pub(super) fn start_node(&self, spec: &NodeSpec) -> Result<(), ClusterError> {
        let network = self
            .network
            .clone()
            .ok_or(ClusterError::NoSuchNode(spec.name.clone()))?;
        let node = network
            .node(&spec.name)
            .ok_or_else(|| ClusterError::NoSuchNode(spec.name.clone()))?;
        let registration = Registration {
            name: spec.name.clone(),
            ip: node.ip().to_string(),
            pod_cidrs: self
                .template
                .pod_cidrs(node)
                .map_err(|e| node_error(&spec.name, "registering")(e.into()))?,
            taints: spec.taints.clone(),
            labels: spec.labels.clone(),
        };
        self.block_on(heartbeat::register(&self.client, &registration))
            .map_err(|e| node_error(&spec.name, "registering")(e.into()))?;
        let t = &self.template;
        let ctx = Arc::new(NodeContext {
            network: network.clone(),
            node: spec.name.clone(),
            images: t.images.clone(),
            logs: self.logs.clone(),
            running: self.running.clone(),
            client: self.client.clone(),
            backoff: t.backoff,
            log_dir: t.log_dir.clone(),
            processes: self.processes.clone(),
            pod_cgroups: t.pod_cgroups.clone(),
            cni_env: t.runtime_env.clone(),
            in_cluster: t.in_cluster,
        });
        let silenced = Arc::new(AtomicBool::new(false));
        let runtime = self
            .runtime
            .as_ref()
            .ok_or(ClusterError::NoSuchNode(spec.name.clone()))?;
        let _guard = runtime.enter();
        let tasks = NodeTasks {
            kubelet: kubelet::start(ctx),
            heartbeat: tokio::spawn(heartbeat::run(
                self.client.clone(),
                registration,
                t.heartbeat.interval,
                silenced.clone(),
            )),
            silenced,
        };
        if let Ok(mut all) = self.node_tasks.lock() {
            all.insert(spec.name.clone(), tasks);
        } else {
            tasks.abort();
        }
        Ok(())
    }

    /// Adds a node to the running cluster and returns once its kubelet runs
    /// and its Node object is `Ready` (with `spec`'s taints and labels).
    pub fn add_node(&self, spec: NodeSpec) -> Result<(), ClusterError> {
        let network = self
            .network
            .clone()
            .ok_or(ClusterError::NoSuchNode(spec.name.clone()))?;
        let node = network
            .join_node(spec.clone())
            .map_err(|e: NodeError| node_error(&spec.name, "joining the cluster network")(e.into()))?;
        let joined = self
            .template
            .write_cni_config(node)
            .map_err(node_error(&spec.name, "writing the primary CNI config"))
            .and_then(|()| {
                if matches!(self.template.profile, Profile::Macvlan | Profile::Ipvlan) {
                    super::local::route_l2_node(&network, &self.harness, node)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| self.start_node(&spec));
        if let Err(e) = joined {
            self.forget_node(&spec.name);
            let _ = network.remove_node(&spec.name);
            return Err(e);
        }
        Ok(())
    }

    /// Stops the node's kubelet and heartbeat and deletes its API objects.
    fn forget_node(&self, name: &str) {
        if let Some(tasks) = self.node_tasks.lock().ok().and_then(|mut all| all.remove(name)) {
            tasks.abort();
        }
        let nodes: Api<K8sNode> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let _ = self.block_on(async {
            let limit = Duration::from_secs(10);
            let _ = tokio::time::timeout(limit, nodes.delete(name, &DeleteParams::default())).await;
            tokio::time::timeout(limit, leases.delete(name, &DeleteParams::default())).await
        });
    }

    /// Removes a node from the running cluster: its Node object, then its
    /// pods (its kubelet tears their sandboxes down: CNI DEL, processes
    /// killed), then its namespace, veth, routes and tree.
    pub fn remove_node(&self, name: &str) -> Result<(), ClusterError> {
        let network = self
            .network
            .clone()
            .ok_or_else(|| ClusterError::NoSuchNode(name.to_string()))?;
        let node = network
            .node(name)
            .ok_or_else(|| ClusterError::NoSuchNode(name.to_string()))?;
        let nodes: Api<K8sNode> = Api::all(self.client.clone());
        let deleted = self.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), nodes.delete(name, &DeleteParams::default())).await
        });
        match deleted {
            Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => {}
            Ok(Err(e)) => return Err(node_error(name, "deleting the Node object")(e.into())),
            Err(e) => return Err(node_error(name, "deleting the Node object")(e.into())),
        }
        self.delete_pods_on(name)?;
        let deadline = Instant::now() + LEAVE_TIMEOUT;
        while !node.pod_ids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.forget_node(name);
        network
            .remove_node(name)
            .map_err(|e| node_error(name, "removing it from the cluster network")(e.into()))
    }

    /// Deletes every pod bound to `node` right away.
    fn delete_pods_on(&self, node: &str) -> Result<(), ClusterError> {
        let all: Api<Pod> = Api::all(self.client.clone());
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = self
            .block_on(all.list(&on_node))
            .map_err(|e| node_error(node, "listing its pods")(e.into()))?;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        for pod in pods {
            let ns = pod.metadata.namespace.unwrap_or_default();
            let name = pod.metadata.name.unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match self.block_on(api.delete(&name, &now)) {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(node_error(node, "deleting its pods")(e.into())),
            }
        }
        Ok(())
    }

    /// The directory layout nodes get unless their spec says otherwise
    /// (the cluster's `ClusterSpec::layout`).
    pub fn node_layout(&self) -> Layout {
        self.template.layout
    }

    /// Cuts the node's kubelet off from the API server as far as heartbeats
    /// go (its pods keep running): after the heartbeat grace the node lifecycle
    /// controller marks it `Ready=Unknown` and taints it `unreachable`.
    pub fn stop_heartbeat(&self, node: &str) -> Result<(), ClusterError> {
        self.silence(node, true)
    }

    /// Lets the node's heartbeat go on: it is `Ready` again on the next beat.
    pub fn resume_heartbeat(&self, node: &str) -> Result<(), ClusterError> {
        self.silence(node, false)
    }

    fn silence(&self, node: &str, silent: bool) -> Result<(), ClusterError> {
        let all = self
            .node_tasks
            .lock()
            .map_err(|_| ClusterError::NoSuchNode(node.to_string()))?;
        let tasks = all
            .get(node)
            .ok_or_else(|| ClusterError::NoSuchNode(node.to_string()))?;
        tasks.silenced.store(silent, Ordering::SeqCst);
        Ok(())
    }
}
