//! kubelet-lite: runs the pods bound to one node. [`lifecycle`] is the pure
//! per-pod state machine (events in, actions and a Kubernetes `PodStatus`
//! out); [`worker`] performs its actions with the node's namespaces, CNI
//! chain and processes; [`container`] gives each container its environment,
//! volumes, filesystem (a mount namespace) and capabilities; [`streaming`]
//! serves logs, exec, attach and port-forward to the API server; [`probes`]
//! runs the containers' startup, liveness and readiness probes; [`events`]
//! writes Events, counting repeats. The scheduler is a controller
//! ([`crate::controllers::scheduler`]).

pub mod container;
pub mod events;
mod exec;
pub mod heartbeat;
pub mod images;
pub mod lifecycle;
pub mod logs;
pub mod probes;
pub mod streaming;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use images::{Exec, ImageTable};
pub use lifecycle::Backoff;
pub use logs::PodLogs;
pub use streaming::{Running, Streaming};
use worker::Msg;
pub use worker::NodeContext;

/// The grace period of a pod marked for deletion (`None`: not marked).
fn grace_period(pod: &Pod) -> Option<std::time::Duration> {
    pod.metadata.deletion_timestamp.as_ref()?;
    let secs = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    Some(std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Watches the pods bound to `ctx.node` and keeps one worker per pod; a pod
/// marked for deletion is stopped gracefully by its worker.
pub fn start(ctx: Arc<NodeContext>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Pod> = Api::all(ctx.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
        let mut events = watcher(api, config).boxed();
        let mut workers: HashMap<String, mpsc::UnboundedSender<Msg>> = HashMap::new();
        let mut listed: Vec<String> = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    listed.push(uid.clone());
                    let grace = grace_period(&pod);
                    let tx = match workers.entry(uid) {
                        std::collections::hash_map::Entry::Occupied(known) => {
                            // Ephemeral containers are added to running pods.
                            let _ = known.get().send(Msg::Updated(Box::new(pod)));
                            known.into_mut()
                        }
                        std::collections::hash_map::Entry::Vacant(new) => new.insert(worker::spawn(ctx.clone(), pod)),
                    };
                    if let Some(grace) = grace {
                        let _ = tx.send(Msg::Terminate { grace });
                    }
                }
                Ok(watcher::Event::Delete(pod)) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if let Some(tx) = workers.remove(&uid) {
                        let _ = tx.send(Msg::Lifecycle(lifecycle::Input::Delete));
                    }
                }
                Ok(watcher::Event::Init) => listed.clear(),
                // After a relist, pods no longer listed were deleted meanwhile.
                Ok(watcher::Event::InitDone) => {
                    let gone: Vec<String> = workers.keys().filter(|u| !listed.contains(u)).cloned().collect();
                    for uid in gone {
                        if let Some(tx) = workers.remove(&uid) {
                            let _ = tx.send(Msg::Lifecycle(lifecycle::Input::Delete));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %ctx.node, "watching pods: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    })
}
