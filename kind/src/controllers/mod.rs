//! The controllers of the embedded cluster: loops over the API server's
//! HTTP API (with `kube::runtime`), as kube-controller-manager and
//! kube-scheduler run beside a real one.
//!
//! - [`scheduler`]: binds pods that name no node (`pods/binding`) to a
//!   node that fits them (cordons, taints, selectors, node affinity).
//! - [`node_lifecycle`]: nodes whose kubelet stopped heartbeating become
//!   `Ready=Unknown` and tainted `unreachable`; not-ready nodes `not-ready`.
//! - [`namespaces`]: a new namespace's `default` ServiceAccount and
//!   `kube-root-ca.crt`; a terminating namespace emptied, then finalized.
//! - [`daemonset`]: one pod per eligible node, rolling updates, status,
//!   ControllerRevisions.
//! - [`replicaset`]: `replicas` pods of a template, adoption, status.
//! - [`deployment`]: a ReplicaSet per template, rolling or recreating
//!   updates, revisions, status and conditions.
//! - [`gc`]: the garbage collector: dependents follow their owners, the
//!   foreground and orphan propagation policies.
//! - [`taint_manager`]: pods on a node with a `NoExecute` taint they do not
//!   tolerate (or no longer: `tolerationSeconds`) are evicted.
//!
//! One [`ControllerManager`] starts them and stops them together.

pub mod daemonset;
pub mod deployment;
mod events;
pub mod gc;
pub mod namespaces;
pub mod node_lifecycle;
mod node_pod_cache;
pub mod owned;
pub mod reconciler;
pub mod replicaset;
pub mod scheduler;
pub mod taint_manager;

use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// What the controllers need to know about the cluster.
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// Run the scheduler (it binds pods to the registered Node objects).
    pub scheduler: bool,
    /// Run the node lifecycle controller with these timings.
    pub node_monitor: Option<node_lifecycle::NodeMonitor>,
    /// The CA published in every namespace's `kube-root-ca.crt`; none is
    /// published without.
    pub root_ca_pem: Option<String>,
}

/// The running controllers. Dropping it stops them; [`ControllerManager::shutdown`]
/// stops them and waits until they have.
#[derive(Debug)]
pub struct ControllerManager {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ControllerManager {
    /// Starts the controllers on the current tokio runtime, each with
    /// `client` (which must be allowed everything they do).
    pub fn start(client: kube::Client, opts: ControllerOptions) -> ControllerManager {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every controller.
            let mut set = JoinSet::new();
            set.spawn(namespaces::run(client.clone(), opts.root_ca_pem));
            set.spawn(daemonset::run(client.clone()));
            set.spawn(gc::run(client.clone()));
            set.spawn(replicaset::run(client.clone()));
            set.spawn(deployment::run(client.clone()));
            set.spawn(taint_manager::run(client.clone()));
            if let Some(monitor) = opts.node_monitor {
                set.spawn(node_lifecycle::run(client.clone(), monitor));
            }
            if opts.scheduler {
                set.spawn(scheduler::run(client));
            }
            // Without a stop signal (see `into_task`) they run until aborted.
            if stopped.await.is_err() {
                std::future::pending::<()>().await;
            }
            set.shutdown().await;
        });
        ControllerManager {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops every controller and waits for them to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The task running the controllers, for an owner that stops its tasks
    /// by aborting them (aborting it stops every controller).
    pub fn into_task(mut self) -> JoinHandle<()> {
        self.stop.take();
        // `task` is only taken by `shutdown` and here, both consuming `self`.
        self.task.take().unwrap_or_else(|| tokio::spawn(async {}))
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
