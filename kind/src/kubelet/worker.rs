//! One task per pod on a node: it owns the pod's [`PodLifecycle`], performs
//! its actions (sandbox via the node's CNI chain, containers as processes in
//! the pod netns, teardown) and reports status and events through the API.
//! A pod marked for deletion is stopped gracefully by [`terminate`];
//! ephemeral containers added to a running pod are started by
//! [`ephemeral`].

mod ephemeral;
mod terminate;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, Patch, PatchParams};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::container::downward::PodFacts;
use super::container::{Launch, PodFs, StartError};
use super::events::{Recorder, pod_reference};
use super::images::ImageTable;
use super::lifecycle::{Action, Backoff, Input, PodLifecycle};
use super::logs::PodLogs;
use super::probes::{self, Probers, Report};
use crate::cni::{PodRef, RuntimeConf};
use crate::node::{ClusterNetwork, NodeError};

/// Every API call of the kubelet is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// A pod's grace period when its spec gives none (Kubernetes' default).
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// A status the API server could not be reached for is sent again this
/// often (kubelet's status manager resyncs too), also when nothing changed.
const STATUS_RETRY: Duration = Duration::from_secs(1);

/// What a node's kubelet shares with its pod workers.
pub struct NodeContext {
    pub network: Arc<ClusterNetwork>,
    pub node: String,
    pub images: ImageTable,
    pub logs: PodLogs,
    /// Main process of each running container, for exec/attach/port-forward.
    pub running: super::streaming::Running,
    pub client: kube::Client,
    pub backoff: Backoff,
    /// Container log files go under here.
    pub log_dir: PathBuf,
    /// Process groups of every container on the node, so the cluster can
    /// kill them all at teardown.
    pub processes: Arc<std::sync::Mutex<std::collections::HashSet<i32>>>,
    /// Where pod cgroups go (`<cluster cgroup>/kubepods`); `None` when cgroup
    /// v2 is not writable here (see [`crate::node::cgroup`]).
    pub pod_cgroups: Option<PathBuf>,
    /// Added to every CNI plugin's environment (the runtime's own).
    pub cni_env: Vec<(String, String)>,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`PORT`);
    /// `None`: they are not told.
    pub in_cluster: Option<std::net::SocketAddr>,
}

impl NodeContext {
    /// The node's CNI runner with the runtime's environment.
    fn cni_runner(&self, node: &crate::node::Node) -> crate::cni::Runner {
        self.cni_env
            .iter()
            .fold(node.runner(), |runner, (k, v)| runner.with_env(k, v))
    }
}

/// The sandbox (and CNI container) id of a pod: its uid, compacted.
pub fn sandbox_id(uid: &str) -> String {
    format!("p{}", uid.replace('-', "")).chars().take(40).collect()
}

/// Why a pod's sandbox could not be created (its text becomes the
/// `FailedCreatePodSandBox` event's message).
#[derive(Debug, thiserror::Error)]
enum SandboxError {
    #[error("node is gone")]
    NodeGone,
    #[error("no network config: {0}")]
    NoNetworkConfig(#[source] BoxError),
    #[error("{0}")]
    Netns(#[source] NodeError),
    #[error("plugin {0}")]
    Plugin(#[source] BoxError),
    /// containerd's refusal of a result without an address.
    #[error("failed to find network info for sandbox {sandbox:?}: the CNI result of {network:?} has no IP address")]
    NoAddress { sandbox: String, network: String },
    #[error("starting the sandbox's pause process: {0}")]
    Pause(#[source] NodeError),
}

/// Why a container's process could not be started (`RunContainerError`).
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("node is gone")]
    NodeGone,
    #[error("the pod sandbox is gone")]
    SandboxGone,
    #[error("{what} {}: {source}", path.display())]
    Log {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod cgroup: {0}")]
    Cgroup(#[source] std::io::Error),
    #[error("{0}")]
    Mount(#[source] super::container::mounts::MountError),
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Messages to a pod worker.
#[derive(Debug)]
pub enum Msg {
    Lifecycle(Input),
    /// A probe ran (see [`probes::prober`]).
    Probe(Report),
    /// The pod is marked for deletion with this grace period.
    Terminate {
        grace: Duration,
    },
    /// The pod as the API server has it now (ephemeral containers added).
    Updated(Box<Pod>),
    /// An ephemeral container's process ended.
    EphemeralExited {
        container: String,
        exit_code: i32,
    },
}

/// Starts the worker of a pod just bound to this node.
pub fn spawn(ctx: Arc<NodeContext>, pod: Pod) -> mpsc::UnboundedSender<Msg> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(ctx, pod, rx, tx.clone()));
    tx
}

struct Worker {
    ctx: Arc<NodeContext>,
    pod: Pod,
    ns: String,
    name: String,
    sandbox_id: String,
    pod_ip: Option<String>,
    /// Process group of each running container.
    processes: HashMap<String, i32>,
    tx: mpsc::UnboundedSender<Msg>,
    last_status: Option<serde_json::Value>,
    /// The last status could not be sent: the server was unreachable.
    status_unsent: bool,
    /// The probers of the running containers.
    probers: Probers,
    events: Arc<Recorder>,
    /// The pod's directory, volumes and tokens on the node.
    fs: Option<PodFs>,
    /// The ephemeral containers started, by name.
    ephemeral: ephemeral::Statuses,
}

async fn run(ctx: Arc<NodeContext>, pod: Pod, mut rx: mpsc::UnboundedReceiver<Msg>, tx: mpsc::UnboundedSender<Msg>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let involved = pod_reference(&pod);
    let fs = ctx
        .network
        .node(&ctx.node)
        .map(|n| PodFs::new(ctx.client.clone(), &pod, n.root()));
    let mut worker = Worker {
        events: Arc::new(Recorder::new(ctx.client.clone(), involved, "kubelet", Some(&ctx.node))),
        probers: Probers::default(),
        ns: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        sandbox_id: sandbox_id(&uid),
        pod,
        ctx: ctx.clone(),
        pod_ip: None,
        processes: HashMap::new(),
        tx,
        last_status: None,
        status_unsent: false,
        fs,
        ephemeral: ephemeral::Statuses::default(),
    };
    let (mut lifecycle, actions) = PodLifecycle::new(&spec, ctx.backoff, SystemTime::now());
    worker.perform(actions).await;
    worker.report(&lifecycle).await;
    loop {
        let mut wake = lifecycle
            .next_wakeup()
            .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default());
        if worker.status_unsent {
            wake = Some(wake.map_or(STATUS_RETRY, |w| w.min(STATUS_RETRY)));
        }
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            _ = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600))), if wake.is_some() => {
                Some(Msg::Lifecycle(Input::Tick))
            }
        };
        let input = match msg {
            Some(Msg::Lifecycle(e)) => e,
            Some(Msg::Probe(report)) => match worker.probed(report).await {
                Some(e) => e,
                None => continue,
            },
            Some(Msg::Terminate { grace }) => return worker.terminate(&lifecycle, &mut rx, grace).await,
            Some(Msg::Updated(pod)) => {
                worker.updated(*pod).await;
                worker.report(&lifecycle).await;
                continue;
            }
            Some(Msg::EphemeralExited { container, exit_code }) => {
                worker.ephemeral_exited(&container, exit_code);
                worker.report(&lifecycle).await;
                continue;
            }
            None => Input::Delete,
        };
        let deleting = input == Input::Delete;
        if let Input::SandboxReady { pod_ips } = &input {
            worker.pod_ip = pod_ips.first().cloned();
        }
        if let Input::Exited { container, .. } = &input {
            worker.probers.stop(container);
        }
        let actions = lifecycle.handle(input, SystemTime::now());
        let torn_down = actions.contains(&Action::KillAllAndTeardown);
        worker.perform(actions).await;
        if deleting || torn_down {
            return;
        }
        worker.report(&lifecycle).await;
    }
}

impl Worker {
    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::CreateSandbox => self.create_sandbox(),
                Action::Start { container, attempt, .. } => self.start(&container, attempt).await,
                Action::KillAllAndTeardown => self.teardown().await,
                Action::Kill { container, probe } => self.kill(&container, probe),
                Action::Record {
                    warning,
                    reason,
                    message,
                } => self.record(warning, &reason, &message).await,
            }
        }
    }

    fn pod_ref(&self) -> PodRef {
        PodRef {
            namespace: self.ns.clone(),
            name: self.name.clone(),
            uid: self.pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// Creates the netns and runs the CNI chain's ADD off the async runtime;
    /// a failed ADD is undone (DEL, netns removed) as kubelet does.
    fn create_sandbox(&self) {
        let (ctx, id, pod, tx) = (
            self.ctx.clone(),
            self.sandbox_id.clone(),
            self.pod_ref(),
            self.tx.clone(),
        );
        let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        tokio::task::spawn_blocking(move || {
            let added = if host_network {
                host_sandbox_add(&ctx, &id, &pod)
            } else {
                sandbox_add(&ctx, &id, &pod)
            };
            let input = match added {
                Ok(pod_ips) => Input::SandboxReady { pod_ips },
                Err(e) => Input::SandboxFailed { message: e.to_string() },
            };
            let _ = tx.send(Msg::Lifecycle(input));
        });
    }

    fn container(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .find(|c| c.name == name)
            .cloned()
    }

    async fn start(&mut self, name: &str, attempt: u32) {
        let send = |tx: &mpsc::UnboundedSender<Msg>, e: Input| {
            let _ = tx.send(Msg::Lifecycle(e));
        };
        let Some(container) = self.container(name) else { return };
        let exec = match self.ctx.images.resolve(&container) {
            Ok(exec) => exec,
            Err(e) => {
                send(
                    &self.tx,
                    Input::StartFailed {
                        container: name.into(),
                        reason: "ErrImagePull".into(),
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        let launch = match self.launch(&container, &exec, attempt).await {
            Ok(launch) => launch,
            Err(e) => {
                send(
                    &self.tx,
                    Input::StartFailed {
                        container: name.into(),
                        reason: e.reason.into(),
                        message: e.message,
                    },
                );
                return;
            }
        };
        let spawned = match self.process_command(&container, &launch, attempt) {
            // Building the container's filesystem is blocking work: off the
            // runtime, which the controllers and other pods share.
            Ok(cmd) => tokio::task::spawn_blocking(move || super::container::mounts::spawn(launch.root, cmd))
                .await
                .unwrap_or_else(|e| Err(super::container::mounts::MountError::panicked(e)))
                .map_err(RunError::Mount),
            Err(e) => Err(e),
        };
        match spawned {
            Ok(mut child) => {
                let pid = child.id() as i32;
                self.processes.insert(name.to_string(), pid);
                if let Ok(mut all) = self.ctx.processes.lock() {
                    all.insert(pid);
                }
                self.ctx.running.started(&self.ns, &self.name, name, pid);
                send(&self.tx, Input::Started { container: name.into() });
                self.start_probes(&container, pid);
                let (tx, name, all) = (self.tx.clone(), name.to_string(), self.ctx.processes.clone());
                let (running, ns, pod) = (self.ctx.running.clone(), self.ns.clone(), self.name.clone());
                std::thread::spawn(move || {
                    let exit_code = match child.wait() {
                        Ok(status) => status.code().unwrap_or_else(|| {
                            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)
                        }),
                        Err(_) => 255,
                    };
                    if let Ok(mut all) = all.lock() {
                        all.remove(&pid);
                    }
                    running.exited(&ns, &pod, &name, pid);
                    send(
                        &tx,
                        Input::Exited {
                            container: name,
                            exit_code,
                        },
                    );
                });
            }
            Err(e) => send(
                &self.tx,
                Input::StartFailed {
                    container: name.into(),
                    reason: "RunContainerError".into(),
                    message: e.to_string(),
                },
            ),
        }
    }

    /// Environment, volumes, filesystem and capabilities of a container.
    async fn launch(&self, c: &Container, exec: &super::images::Exec, attempt: u32) -> Result<Launch, StartError> {
        let node = self.ctx.network.node(&self.ctx.node);
        let fs = self.fs.as_ref().ok_or_else(|| StartError {
            reason: "CreateContainerError",
            message: "node is gone".into(),
        })?;
        let facts = PodFacts {
            node: self.ctx.node.clone(),
            host_ip: node.map(|n| n.ip().to_string()).unwrap_or_default(),
            pod_ips: self.pod_ip.iter().cloned().collect(),
            ..PodFacts::for_this_machine()
        };
        let service_env = super::container::env::service_env(self.ctx.in_cluster);
        let image = self.ctx.images.image_dir(c);
        fs.prepare(c, exec, image, facts, &service_env, attempt).await
    }

    /// The container as a process in the pod netns and its own mount
    /// namespace, as its securityContext's uid/gid with its capabilities
    /// (`setpriv` drops privileges after the netns is entered).
    fn process_command(&self, c: &Container, launch: &Launch, attempt: u32) -> Result<std::process::Command, RunError> {
        let node = self.ctx.network.node(&self.ctx.node).ok_or(RunError::NodeGone)?;
        let sandbox = node.pod_netns(&self.sandbox_id).ok_or(RunError::SandboxGone)?;
        let dir = self
            .ctx
            .log_dir
            .join(format!("{}_{}_{}", self.ns, self.name, self.sandbox_id))
            .join(&c.name);
        std::fs::create_dir_all(&dir).map_err(|source| RunError::Log {
            what: "log dir",
            path: dir.clone(),
            source,
        })?;
        let file = dir.join(format!("{attempt}.log"));
        let log_err = |source| RunError::Log {
            what: "log file",
            path: file.clone(),
            source,
        };
        let out = File::create(&file).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        self.ctx.logs.started(&self.ns, &self.name, &c.name, file);

        let sc = c.security_context.as_ref();
        let pod_sc = self.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let uid = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
        let gid = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group));
        let mut cmd = sandbox.command("setpriv");
        if uid.is_some() || gid.is_some() {
            cmd.arg(format!("--reuid={}", uid.unwrap_or(0)));
            cmd.arg(format!("--regid={}", gid.or(uid).unwrap_or(0)));
            cmd.arg("--clear-groups");
        }
        cmd.args(super::container::caps::setpriv_args(&launch.caps));
        cmd.arg("--").args(&launch.argv);
        cmd.env_clear()
            .env("PATH", super::images::IMAGE_PATH)
            .env("HOSTNAME", &self.name);
        cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        if let Some(dir) = &sandbox.cgroup {
            crate::node::cgroup::join_on_exec(&mut cmd, dir).map_err(RunError::Cgroup)?;
        }
        Ok(cmd)
    }

    /// Where httpGet and tcpSocket checks (probes, hooks) connect from and
    /// to: the node's netns, the pod IP (a hostNetwork pod's is its node's).
    fn origin(&self) -> probes::Origin {
        let node = self.ctx.network.node(&self.ctx.node);
        let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let pod_ip = match (host_network, node) {
            (true, Some(n)) => Some(std::net::IpAddr::V4(n.ip())),
            _ => self.pod_ip.as_deref().and_then(|ip| ip.parse().ok()),
        };
        probes::Origin {
            netns: node.map(|n| n.netns().clone()),
            pod_ip,
        }
    }

    /// Probes a container instance that just started as process `pid`.
    fn start_probes(&mut self, c: &Container, pid: i32) {
        let origin = self.origin();
        let tx = self.tx.clone();
        let sink: probes::Sink = Arc::new(move |report| {
            let _ = tx.send(Msg::Probe(report));
        });
        self.probers.start(c, probes::Target { origin, pid }, sink);
    }

    /// A probe run: failures are `Unhealthy` events; a result that crossed
    /// its threshold is the lifecycle's input. Reports of a container
    /// instance no longer probed are dropped.
    async fn probed(&self, report: Report) -> Option<Input> {
        if !self.probers.current(&report) {
            return None;
        }
        if let Some(message) = &report.unhealthy {
            self.record(true, "Unhealthy", message).await;
        }
        report.result.map(|ok| Input::Probe {
            container: report.container,
            probe: report.kind,
            ok,
        })
    }

    /// Kills every process, runs CNI DEL and removes the netns.
    async fn teardown(&mut self) {
        self.probers = Probers::default();
        for pgid in self.processes.values() {
            let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
        self.processes.clear();
        self.ctx.running.forget(&self.ns, &self.name);
        let (ctx, id, pod) = (self.ctx.clone(), self.sandbox_id.clone(), self.pod_ref());
        let _ = tokio::task::spawn_blocking(move || sandbox_del(&ctx, &id, &pod)).await;
        if let Some(fs) = self.fs.clone() {
            let _ = tokio::task::spawn_blocking(move || fs.remove()).await;
        }
        self.ctx.logs.forget(&self.ns, &self.name);
    }

    /// Records an Event on the pod (a repeat counts on the existing one).
    async fn record(&self, warning: bool, reason: &str, message: &str) {
        self.events.record(warning, reason, message).await;
    }

    /// Writes the pod's status when it changed.
    async fn report(&mut self, lifecycle: &PodLifecycle) {
        let mut status = lifecycle.status();
        status.ephemeral_container_statuses = self.ephemeral.statuses();
        status.host_ip = self.ctx.network.node(&self.ctx.node).map(|n| n.ip().to_string());
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let patch = Patch::Merge(serde_json::json!({ "status": value }));
        let params = PatchParams::default();
        let call = api.patch_status(&self.name, &params, &patch);
        let result = tokio::time::timeout(API_TIMEOUT, call).await;
        self.status_unsent = match &result {
            Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => false,
            Ok(Err(_)) | Err(_) => true,
        };
        match result {
            Ok(Ok(_)) => self.last_status = Some(value),
            Ok(Err(e)) => tracing::warn!(pod = %self.name, "updating status: {e}"),
            Err(_) => tracing::warn!(pod = %self.name, "updating status: timed out"),
        }
    }
}

fn sandbox_add(ctx: &NodeContext, id: &str, pod: &PodRef) -> Result<Vec<String>, SandboxError> {
    let node = ctx.network.node(&ctx.node).ok_or(SandboxError::NodeGone)?;
    let selection = node
        .select_network()
        .map_err(|e| SandboxError::NoNetworkConfig(e.into()))?;
    let sandbox = match node.pod_netns(id) {
        Some(s) => s,
        None => node.create_pod_netns(id).map_err(SandboxError::Netns)?,
    };
    let rt = RuntimeConf::for_pod(id, sandbox.path(), "eth0", pod);
    let undo = |error: SandboxError| {
        let _ = ctx.cni_runner(node).del(&selection.network, &rt);
        let _ = node.delete_pod_netns(id);
        Err(error)
    };
    let ips: Vec<String> = match ctx.cni_runner(node).add(&selection.network, &rt) {
        Ok(result) => result.ips().iter().map(|ip| ip.addr.to_string()).collect(),
        Err(e) => return undo(SandboxError::Plugin(e.into())),
    };
    // containerd refuses a chain whose result gives the pod no address (a
    // chained plugin configured alone, without the primary that makes the
    // interface): the sandbox fails rather than starting un-networked.
    if ips.is_empty() {
        return undo(SandboxError::NoAddress {
            sandbox: id.to_string(),
            network: selection.network.name.clone(),
        });
    }
    // Like containerd: netns, CNI ADD, then the pause process.
    let cgroup = ctx.pod_cgroups.as_ref().map(|dir| dir.join(format!("pod{}", pod.uid)));
    if let Err(e) = node.start_pod_infra(id, cgroup) {
        return undo(SandboxError::Pause(e));
    }
    // /proc start times count clock ticks (10 ms): wait one, so that the
    // pause is strictly the oldest process of the pod, as tools that pick
    // "the oldest process in the netns" expect.
    std::thread::sleep(Duration::from_millis(10));
    Ok(ips)
}

/// A `hostNetwork` pod's sandbox: the node's netns, no CNI ADD (as
/// kubelet and containerd skip the network plugin for it); its pod IP is
/// the node's.
fn host_sandbox_add(ctx: &NodeContext, id: &str, pod: &PodRef) -> Result<Vec<String>, SandboxError> {
    let node = ctx.network.node(&ctx.node).ok_or(SandboxError::NodeGone)?;
    if node.pod_netns(id).is_none() {
        node.create_host_sandbox(id).map_err(SandboxError::Netns)?;
    }
    let cgroup = ctx.pod_cgroups.as_ref().map(|dir| dir.join(format!("pod{}", pod.uid)));
    if let Err(e) = node.start_pod_infra(id, cgroup) {
        let _ = node.delete_pod_netns(id);
        return Err(SandboxError::Pause(e));
    }
    Ok(vec![node.ip().to_string()])
}

fn sandbox_del(ctx: &NodeContext, id: &str, pod: &PodRef) {
    let Some(node) = ctx.network.node(&ctx.node) else {
        return;
    };
    // Runtimes stop the pause container before tearing the network down.
    node.stop_pod_infra(id);
    let sandbox = node.pod_netns(id).filter(|s| !s.host_network);
    if let (Ok(selection), Some(sandbox)) = (node.select_network(), sandbox) {
        let rt = RuntimeConf::for_pod(id, sandbox.path(), "eth0", pod);
        if let Err(e) = ctx.cni_runner(node).del(&selection.network, &rt) {
            tracing::warn!(pod = %pod.name, "CNI DEL: {e}");
        }
    }
    if let Err(e) = node.delete_pod_netns(id) {
        tracing::warn!(pod = %pod.name, "removing the sandbox: {e}");
    }
}
