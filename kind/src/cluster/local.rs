//! The `local` backend, an embedded cluster: an API server, nodes made of network namespaces
//! with a real primary CNI, one kubelet-lite per node and a scheduler, all
//! behind one handle whose drop removes everything it created.
//!
//! Layout: a private "harness" network namespace holds the cluster bridge,
//! so clusters never touch the host's network nor each other. The API server
//! listens on host loopback (for tests and kubectl) and on the bridge
//! gateway inside the harness namespace (for processes on the nodes).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::error::{BoxError, CommandFailed, Leftover, Leftovers};
use super::membership::{NodeTasks, NodeTemplate};
use super::provider::{Provider, new_runtime};
use super::{ClusterError, ClusterSpec, IpFamily};
use crate::apiserver::{ApiServer, ApiServerOptions};
use crate::cni::Profile;
use crate::controllers::node_lifecycle::NodeMonitor;
use crate::controllers::{ControllerManager, ControllerOptions};
use crate::kubelet::{self, PodLogs, Running, Streaming};
use crate::node::addr::Ipv6Plan;
use crate::node::cgroup::ClusterCgroup;
use crate::node::{AddressPlan, ClusterConfig, ClusterNetwork, Ipv4Cidr, Netns, Node, NodeSpec, Nodes};

/// A running embedded cluster (the `local` backend), reached through
/// [`Cluster::local`](super::Cluster::local).
pub struct LocalCluster {
    pub(super) runtime: Option<Runtime>,
    api: Option<ApiServer>,
    pub(super) network: Option<Arc<ClusterNetwork>>,
    pub(super) harness: Netns,
    root: PathBuf,
    kubeconfig: PathBuf,
    pub(super) client: kube::Client,
    pub(super) logs: PodLogs,
    /// Each running container's main process, for exec and port-forward.
    pub(super) running: Running,
    /// The controllers.
    tasks: Vec<JoinHandle<()>>,
    /// Each node's kubelet and heartbeat, by node name.
    pub(super) node_tasks: Arc<Mutex<HashMap<String, NodeTasks>>>,
    /// What every node (also one joining later) is made of.
    pub(super) template: NodeTemplate,
    pub(super) processes: Arc<Mutex<HashSet<i32>>>,
    gateway_url: String,
    cgroup: Option<ClusterCgroup>,
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// The n-th cluster of this process gets its own pod range (10.251/16 for the
/// first, then 10.151/16 ... 10.249/16): clusters run side by side (the
/// scenario runner), and tools that find a pod by its IP through `/proc`
/// (Istio's repair controller) must not see another cluster's pod with the
/// same address.
///
/// A cluster whose pods have IPv6 addresses gets an IPv6 side too, unique
/// per cluster in the same way: pods in `fd0a:<150+n>:<node>::/64`, the
/// cluster network (bridge and nodes) in `fd0b:<150+n>::/64`.
fn address_plan(n: u32, family: IpFamily) -> AddressPlan {
    let mut plan = AddressPlan::default();
    let k = n % 100;
    if k != 0
        && let Ok(range) = Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 150 + k as u8, 0, 0), 16)
    {
        plan.pod_supernet = range;
    }
    if family != IpFamily::Ipv4 {
        let group = 150 + k as u16;
        plan.v6 = Some(Ipv6Plan {
            network: Ipv6Addr::new(0xfd0b, group, 0, 0, 0, 0, 0, 0),
            pods: Ipv6Addr::new(0xfd0a, group, 0, 0, 0, 0, 0, 0),
        });
    }
    plan
}

/// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`): an address
/// of the cluster's primary family. Kubernetes gives every pod the
/// `kubernetes` Service's ClusterIP, which comes from the primary (first)
/// service range: IPv6 in an IPv6-only cluster, IPv4 in a dual-stack one
/// whose ranges list IPv4 first (as this harness's node `podCIDRs` do, and
/// kind's dual-stack default). The IPv6 side of a dual-stack cluster is
/// still served (pods may use it), but not advertised.
fn in_cluster_address(family: IpFamily, v4: SocketAddr, v6: Option<SocketAddr>) -> SocketAddr {
    match (family, v6) {
        (IpFamily::Ipv6, Some(v6)) => v6,
        _ => v4,
    }
}

/// The API server's loopback listener here and, when `outer` was bound in
/// the namespace this process left, that one too: the same address in both
/// namespaces, so one URL reaches the server from either. An `outer` that
/// is in this namespace already (its address is taken here) is the only one.
fn loopback_listeners(outer: Option<&TcpListener>) -> Result<(TcpListener, Option<TcpListener>), ClusterError> {
    let listener = || ClusterError::create("API listener");
    let Some(outer) = outer else {
        return Ok((TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(listener())?, None));
    };
    let outer = outer.try_clone().map_err(listener())?;
    let addr = outer.local_addr().map_err(listener())?;
    if !addr.ip().is_loopback() {
        return Err(ClusterError::create("API listener")(format!(
            "the given API listener is on {addr}, not on a loopback address"
        )));
    }
    match TcpListener::bind(addr) {
        Ok(here) => Ok((here, Some(outer))),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok((outer, None)),
        Err(e) => Err(listener()(e)),
    }
}

/// Tries of [`claim_root_dir`] before it gives up.
const ROOT_DIR_TRIES: u32 = 64;

/// A new, empty `istio-cni-cluster-<pid>-<n>` under `tmp` with the next
/// free `n` of `counter`, and that `n`. A directory of that name left by a
/// process that had this pid before (killed before its cleanup) is not
/// ours: it is passed over, never reused or removed (it once made `up`
/// fail with "harness.netns: File exists").
fn claim_root_dir(tmp: &Path, pid: u32, counter: &AtomicU32) -> std::io::Result<(u32, PathBuf)> {
    let mut last = None;
    for _ in 0..ROOT_DIR_TRIES {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let root = tmp.join(format!("istio-cni-cluster-{pid}-{n}"));
        match std::fs::create_dir(&root) {
            Ok(()) => return Ok((n, root)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(root),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{ROOT_DIR_TRIES} cluster directories up to {} already exist (left by earlier processes of this pid?)",
            last.map(|p| p.display().to_string()).unwrap_or_default()
        ),
    ))
}

impl LocalCluster {
    /// Creates the cluster and returns once the API server answers and every
    /// node's kubelet is watching.
    pub(super) fn create(spec: ClusterSpec) -> Result<LocalCluster, ClusterError> {
        let (n, root) = claim_root_dir(&std::env::temp_dir(), std::process::id(), &CLUSTERS)
            .map_err(ClusterError::create("root dir"))?;
        let harness = match Netns::create(&root.join("harness.netns")) {
            Ok(harness) => harness,
            Err(e) => {
                // Nothing else exists yet; an unprivileged start must not
                // leave its empty root behind.
                let _ = std::fs::remove_dir_all(&root);
                return Err(ClusterError::create("harness netns")(e));
            }
        };
        // Optional: skipped where cgroup v2 is not writable (rootless).
        let cgroup = ClusterCgroup::create(&format!("istio-cni-cluster-{}-{n}", std::process::id()));
        let pod_cgroups = cgroup.as_ref().map(ClusterCgroup::kubepods);
        let result = Self::build(spec, n, root.clone(), harness.clone(), pod_cgroups);
        match result {
            Ok(mut cluster) => {
                cluster.cgroup = cgroup;
                Ok(cluster)
            }
            Err(e) => {
                let _ = harness.delete();
                let _ = std::fs::remove_dir_all(&root);
                if let Some(cgroup) = cgroup {
                    let _ = cgroup.remove();
                }
                Err(e)
            }
        }
    }

    fn build(
        spec: ClusterSpec,
        n: u32,
        root: PathBuf,
        harness: Netns,
        pod_cgroups: Option<PathBuf>,
    ) -> Result<LocalCluster, ClusterError> {
        harness
            .command("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map_err(ClusterError::create("harness loopback"))?;
        // Without the kernel's support the cluster would come up and every
        // pod would fail its sandbox: refuse to report "up" instead.
        if !spec.profile.kernel_supports() {
            return Err(ClusterError::create("primary CNI")(format!(
                "this kernel cannot create {0} links (CONFIG_{1}, module {0}); pick another --cni",
                spec.profile.plugin_type(),
                spec.profile.plugin_type().to_uppercase()
            )));
        }
        let mut network = ClusterNetwork::create(ClusterConfig {
            root: Some(root.join("nodes")),
            harness_netns: Some(harness.path().to_path_buf()),
            plan: address_plan(n, spec.ip_family),
            ..ClusterConfig::default()
        })
        .map_err(ClusterError::create("cluster network"))?;
        let mut template = NodeTemplate {
            profile: spec.profile,
            single_conf: spec.single_conf,
            ip_family: spec.ip_family,
            layout: spec.layout,
            images: spec.images.clone(),
            backoff: spec.backoff,
            runtime_env: spec.runtime_env.clone(),
            heartbeat: spec.heartbeat,
            log_dir: root.join("logs"),
            pod_cgroups,
            in_cluster: None,
        };
        let mut specs = Vec::new();
        for i in 0..spec.nodes.max(1) {
            let node_spec = NodeSpec {
                taints: spec.node_taints.clone(),
                ..NodeSpec::new(format!("node-{i}")).layout(spec.layout)
            };
            let node = network
                .add_node(node_spec.clone())
                .map_err(ClusterError::create("node"))?;
            template
                .write_cni_config(node)
                .map_err(ClusterError::create("primary CNI config"))?;
            specs.push(node_spec);
        }
        if matches!(spec.profile, Profile::Macvlan | Profile::Ipvlan) {
            route_l2_pods(&network, &harness)?;
        }
        let gateway = network.plan().gateway;
        let gateway_v6 = network.plan().v6.map(|v6| v6.gateway());
        let network = Arc::new(network);

        let (loopback, outer) = loopback_listeners(spec.api_listener.as_deref())?;
        let on_gateway = harness
            .run(move || TcpListener::bind((gateway, 0)))
            .map_err(ClusterError::create("API listener in the harness netns"))?
            .map_err(ClusterError::create("API listener in the harness netns"))?;
        let gateway_port = on_gateway
            .local_addr()
            .map_err(ClusterError::create("API listener"))?
            .port();
        let gateway_url = format!("https://{}", SocketAddr::from((gateway, gateway_port)));
        // The same port on the IPv6 gateway, when pods have IPv6 addresses.
        let on_gateway_v6 = match gateway_v6 {
            Some(gateway_v6) => Some(
                harness
                    .run(move || TcpListener::bind((gateway_v6, gateway_port)))
                    .map_err(ClusterError::create("IPv6 API listener in the harness netns"))?
                    .map_err(ClusterError::create("IPv6 API listener in the harness netns"))?,
            ),
            None => None,
        };
        template.in_cluster = Some(in_cluster_address(
            spec.ip_family,
            SocketAddr::from((gateway, gateway_port)),
            gateway_v6.map(|ip| SocketAddr::from((ip, gateway_port))),
        ));

        let runtime = new_runtime(2, "cluster")?;
        let options = ApiServerOptions {
            listen: Vec::new(),
            // The loopback one first: its URL is the kubeconfig's.
            listeners: [loopback, on_gateway]
                .into_iter()
                .chain(on_gateway_v6)
                .chain(outer)
                .collect(),
            extra_sans: std::iter::once(gateway.to_string())
                .chain(gateway_v6.map(|ip| ip.to_string()))
                .collect(),
            ..ApiServerOptions::default()
        };
        let api = runtime
            .block_on(ApiServer::start(options))
            .map_err(ClusterError::create("API server"))?;
        let client = runtime.block_on(api.client());
        let kubeconfig = root.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig, &api.admin_token())
            .map_err(ClusterError::create("kubeconfig"))?;

        let logs = PodLogs::default();
        let running = Running::default();
        api.set_pod_streams(Arc::new(Streaming::new(logs.clone(), running.clone())));
        let processes = Arc::new(Mutex::new(HashSet::new()));
        let monitor = NodeMonitor {
            period: (spec.heartbeat.grace / 4).min(Duration::from_secs(5)),
            grace: spec.heartbeat.grace,
        };
        let controllers = ControllerOptions {
            scheduler: true,
            node_monitor: Some(monitor),
            root_ca_pem: Some(api.ca_pem()),
        };
        let tasks = {
            let _guard = runtime.enter();
            vec![ControllerManager::start(client.clone(), controllers).into_task()]
        };
        let cluster = LocalCluster {
            runtime: Some(runtime),
            api: Some(api),
            network: Some(network),
            harness,
            root,
            kubeconfig,
            client,
            logs,
            running,
            tasks,
            node_tasks: Arc::default(),
            template,
            processes,
            gateway_url,
            cgroup: None,
        };
        // On an error the cluster's drop tears down what exists so far.
        for node_spec in &specs {
            cluster.start_node(node_spec)?;
        }
        Ok(cluster)
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// An admin kubeconfig for the host (kubectl, tests).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig with `token` that works from inside the nodes.
    pub fn node_kubeconfig(&self, token: &str) -> String {
        self.api().kubeconfig_for(&self.gateway_url, token)
    }

    /// The API server (tokens, faults).
    pub fn api(&self) -> &ApiServer {
        self.api.as_ref().expect("the API server lives until drop")
    }

    /// Runs async work (kube calls) on the cluster's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().expect("the runtime lives until drop").block_on(f)
    }

    /// The live nodes, in the order they joined.
    pub fn nodes(&self) -> &Nodes {
        static NONE: std::sync::LazyLock<Nodes> = std::sync::LazyLock::new(Nodes::default);
        self.network.as_deref().map_or(&*NONE, ClusterNetwork::nodes)
    }

    /// A live node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.network.as_ref().and_then(|n| n.node(name))
    }

    /// The harness network namespace (where the cluster bridge lives).
    pub fn harness_netns(&self) -> &Netns {
        &self.harness
    }

    /// The cluster's cgroup (pods are in `<it>/kubepods/pod<uid>`), when
    /// cgroup v2 is writable here; `None` otherwise (e.g. rootless).
    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(ClusterCgroup::dir)
    }

    /// A container's current log.
    pub fn pod_logs(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        crate::apiserver::LogSource::logs(&self.logs, namespace, pod, container, false)
    }

    /// The netns path of a running pod.
    pub fn pod_netns(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        let pod = self
            .block_on(Api::<Pod>::namespaced(self.client(), namespace).get(name))
            .ok()?;
        let node = self.node(pod.spec.as_ref()?.node_name.as_deref()?)?;
        let id = kubelet::worker::sandbox_id(pod.metadata.uid.as_deref()?);
        node.pod_netns(&id).map(|s| s.path().to_path_buf())
    }

    /// Everything this cluster created, removed; what could not be.
    fn teardown(&mut self) -> Result<(), ClusterError> {
        let Some(runtime) = self.runtime.take() else {
            return Ok(());
        };
        let pods: Api<Pod> = Api::all(self.client.clone());
        if let Ok(Ok(list)) = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), pods.list(&ListParams::default())).await })
        {
            for pod in list {
                let ns = pod.metadata.namespace.unwrap_or_default();
                let name = pod.metadata.name.unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                // Grace 0: teardown kills at once (no SIGTERM wait).
                let now = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                let _ = runtime.block_on(api.delete(&name, &now));
            }
        }
        // Let the kubelets tear their sandboxes down (CNI DEL).
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.nodes().iter().any(|n| !n.pod_ids().is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(mut nodes) = self.node_tasks.lock() {
            for (_, node) in nodes.drain() {
                node.abort();
            }
        }
        if let Some(api) = self.api.take() {
            runtime.block_on(api.shutdown());
        }
        if let Ok(all) = self.processes.lock() {
            for pgid in all.iter() {
                let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
            }
        }
        // In-flight CNI calls (a plugin retrying its API) must end before the
        // network can be torn down.
        runtime.shutdown_timeout(Duration::from_secs(30));
        let mut leftovers = Leftovers::default();
        if let Some(network) = self.network.take() {
            match Arc::try_unwrap(network) {
                Ok(network) => {
                    if let Err(e) = network.teardown() {
                        leftovers.push(e);
                    }
                }
                Err(network) => {
                    // Still stop every pause process: nothing may outlive the cluster.
                    for node in network.nodes() {
                        for id in node.pod_ids() {
                            node.stop_pod_infra(&id);
                        }
                    }
                    leftovers.push(Leftover::NetworkInUse);
                }
            }
        }
        super::reaper::remove_leftovers(self.cgroup.take().as_ref(), &self.harness, &self.root, &mut leftovers);
        leftovers.into_result()
    }
}

impl Provider for LocalCluster {
    fn target(&self) -> &'static str {
        "local"
    }

    fn client(&self) -> kube::Client {
        self.client.clone()
    }

    fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// The image table maps images to local programs: pods run as they are.
    fn runnable_pod(&self, pod: &Pod) -> Result<Pod, ClusterError> {
        Ok(pod.clone())
    }

    fn pod_logs(&self, namespace: &str, pod: &str, container: &str) -> Result<String, ClusterError> {
        LocalCluster::pod_logs(self, namespace, pod, container).ok_or_else(|| ClusterError::NoLog {
            pod: format!("{namespace}/{pod}"),
            container: container.to_string(),
        })
    }

    /// `argv` inside the pod's netns, with this machine's tools.
    fn in_pod(&self, namespace: &str, name: &str, argv: &[&str]) -> Result<String, ClusterError> {
        let place = format!("in pod {namespace}/{name}");
        let netns = self.pod_netns(namespace, name).ok_or_else(|| ClusterError::NoSandbox {
            pod: format!("{namespace}/{name}"),
        })?;
        let ns = Netns::open(&netns).map_err(ClusterError::exec(argv, place.as_str()))?;
        let mut cmd = command(argv, |program| ns.command(program))?;
        output(&mut cmd, argv, place)
    }

    /// The pod netns has the rules of whichever iptables this machine runs.
    fn iptables_save(&self, namespace: &str, pod: &str) -> Result<String, ClusterError> {
        self.in_pod(namespace, pod, &["iptables-save"])
    }

    /// `argv` inside the node's netns.
    fn node_exec(&self, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        let node = self
            .node(node)
            .ok_or_else(|| ClusterError::NoSuchNode(node.to_string()))?;
        let mut cmd = command(argv, |program| node.command(program))?;
        output(&mut cmd, argv, format!("on node {}", node.name()))
    }

    fn local(&self) -> Result<&LocalCluster, ClusterError> {
        Ok(self)
    }

    fn reaper(&self) -> Option<super::Reaper> {
        Some(super::Reaper::new(super::reaper::Parts {
            tasks: self.tasks.iter().map(JoinHandle::abort_handle).collect(),
            node_tasks: self.node_tasks.clone(),
            processes: self.processes.clone(),
            network: self.network.as_ref().map(Arc::downgrade).unwrap_or_default(),
            harness: self.harness.clone(),
            root: self.root.clone(),
            cgroup: self.cgroup.clone(),
        }))
    }

    fn delete(mut self: Box<Self>) -> Result<(), ClusterError> {
        self.teardown()
    }
}

fn command(
    argv: &[&str],
    make: impl FnOnce(&str) -> std::process::Command,
) -> Result<std::process::Command, ClusterError> {
    let (program, args) = argv.split_first().ok_or(ClusterError::EmptyCommand)?;
    let mut cmd = make(program);
    cmd.args(args);
    Ok(cmd)
}

/// Runs it; its stdout when it exits 0, else an error with its stderr.
fn output(cmd: &mut std::process::Command, argv: &[&str], place: impl Into<String>) -> Result<String, ClusterError> {
    let failed = |source: BoxError| ClusterError::exec(argv, place)(source);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => return Err(failed(e.into())),
    };
    if !out.status.success() {
        return Err(failed(Box::new(CommandFailed {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// macvlan and ipvlan pods sit directly on the cluster network (their
/// node's uplink), not behind their node: the harness becomes each pod
/// CIDR's gateway (`.1`, host-local's default) and routes between them, and
/// nodes reach other nodes' pods on-link.
fn route_l2_pods(network: &ClusterNetwork, harness: &Netns) -> Result<(), ClusterError> {
    for node in network.nodes() {
        route_l2_node(network, harness, node)?;
    }
    run_in(harness, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
}

fn run_in(ns: &Netns, argv: &[&str]) -> Result<(), ClusterError> {
    let mut cmd = command(argv, |program| ns.command(program))?;
    output(&mut cmd, argv, format!("in netns {}", ns.path().display()))
        .map(drop)
        .map_err(ClusterError::create("pod routing"))
}

/// The L2 routes of one node's pods: the harness is their gateway, and every
/// other node reaches them on-link (and they reach every other node's).
pub(super) fn route_l2_node(network: &ClusterNetwork, harness: &Netns, node: &Node) -> Result<(), ClusterError> {
    let run = run_in;
    let cidr = node.pod_cidr();
    let gateway = cidr
        .host(1)
        .ok_or_else(|| ClusterError::create("pod routing")(format!("{cidr} has no .1")))?;
    let cidr_text = cidr.to_string();
    let _ = run(harness, &["ip", "route", "del", &cidr_text]);
    run(
        harness,
        &[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/{}", cidr.prefix()),
            "dev",
            network.bridge(),
        ],
    )?;
    for other in network.nodes().iter().filter(|o| o.name() != node.name()) {
        run(other.netns(), &["ip", "route", "replace", &cidr_text, "dev", "eth0"])?;
        let theirs = other.pod_cidr().to_string();
        run(node.netns(), &["ip", "route", "replace", &theirs, "dev", "eth0"])?;
    }
    Ok(())
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_namespace_is_the_only_loopback_one() {
        let outer = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (here, extra) = loopback_listeners(Some(&outer)).unwrap();
        assert_eq!(here.local_addr().unwrap(), outer.local_addr().unwrap());
        assert!(extra.is_none());
        let (fresh, none) = loopback_listeners(None).unwrap();
        assert!(fresh.local_addr().unwrap().ip().is_loopback() && none.is_none());
    }

    #[test]
    fn a_stale_root_dir_of_this_pid_is_passed_over_and_kept() {
        let tmp = testkit::Scratch::new("claim-root");
        let stale = tmp.join("istio-cni-cluster-7-0");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("harness.netns"), "").unwrap();
        let counter = AtomicU32::new(0);
        let (n, root) = claim_root_dir(tmp.path(), 7, &counter).unwrap();
        assert_eq!((n, root.clone()), (1, tmp.join("istio-cni-cluster-7-1")));
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "a fresh, empty dir");
        assert!(stale.join("harness.netns").exists(), "the stale dir is left alone");
        let (n, _) = claim_root_dir(tmp.path(), 7, &counter).unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn pods_are_given_the_api_server_of_the_primary_family() {
        let v4: SocketAddr = "10.250.0.1:6443".parse().unwrap();
        let v6: SocketAddr = "[fd0b:96::1]:6443".parse().unwrap();
        assert_eq!(in_cluster_address(IpFamily::Ipv4, v4, None), v4);
        assert_eq!(in_cluster_address(IpFamily::Ipv6, v4, Some(v6)), v6);
        assert_eq!(in_cluster_address(IpFamily::DualStack, v4, Some(v6)), v4);
    }

    #[test]
    fn only_clusters_with_ipv6_pods_get_an_ipv6_network() {
        assert_eq!(address_plan(0, IpFamily::Ipv4).v6, None);
        for family in [IpFamily::Ipv6, IpFamily::DualStack] {
            let plan = address_plan(3, family);
            plan.validate().unwrap();
            let v6 = plan.v6.unwrap();
            assert_eq!(v6.gateway().to_string(), "fd0b:99::1");
            assert_eq!(v6.pod_cidr(2).unwrap(), "fd0a:99:2::/64", "the ranges pods always had");
        }
    }

    #[test]
    fn a_listener_off_loopback_is_refused() {
        let outer = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let err = loopback_listeners(Some(&outer)).err().unwrap().to_string();
        assert!(err.contains("not on a loopback address"), "{err}");
    }
}
