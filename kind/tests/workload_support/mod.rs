//! What the workload tests (DaemonSets, Deployments) share: a 2-node ptp
//! cluster running mesh-probe, pod readiness, and two watches over a label
//! selector — one that waits for a state of the live pods, one that records
//! (pods, Ready pods) at every event so a rollout's worst moment can be
//! asserted afterwards.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;

/// How long any wait of these tests may take.
pub const WAIT: Duration = Duration::from_secs(90);

/// A 2-node ptp cluster whose `mesh-probe` image is this build's, with a
/// short restart backoff.
pub fn two_node_cluster() -> Cluster {
    Cluster::create(ClusterSpec {
        nodes: 2,
        profile: Profile::Ptp,
        images: ImageTable::new().add("mesh-probe", env!("CARGO_BIN_EXE_mesh-probe"), &[]),
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        ..ClusterSpec::default()
    })
    .unwrap()
}

/// The pod's Ready condition is True.
pub fn ready(p: &Pod) -> bool {
    let conds = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    conds.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The node the pod is bound to ("" while unscheduled).
pub fn node_of(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

/// Waits (on a watch) until the pods with `selector`, terminating ones
/// included, satisfy `done`; panics after [`WAIT`].
pub async fn wait_pods(api: Api<Pod>, selector: &str, done: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    wait_for(api, selector, false, done).await
}

/// Like [`wait_pods`] over the live pods only (not being deleted).
pub async fn wait_live_pods(api: Api<Pod>, selector: &str, done: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    wait_for(api, selector, true, done).await
}

async fn wait_for(api: Api<Pod>, selector: &str, live_only: bool, done: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let mut events = watcher(api, watcher::Config::default().labels(selector)).boxed();
    let wait = async {
        let mut now: BTreeMap<String, Pod> = BTreeMap::new();
        let mut synced = false;
        loop {
            match events.next().await {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    now.insert(p.name_any(), p);
                }
                Some(Ok(watcher::Event::Delete(p))) => {
                    now.remove(&p.name_any());
                }
                Some(Ok(watcher::Event::Init)) => {
                    now.clear();
                    synced = false;
                }
                Some(Ok(watcher::Event::InitDone)) => synced = true,
                Some(Err(e)) => eprintln!("pods {selector}: watch: {e}"),
                None => panic!("pods {selector}: the watch ended"),
            }
            let pods: Vec<Pod> = now.values().filter(|p| !live_only || live(p)).cloned().collect();
            if synced && done(&pods) {
                return pods;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("pods {selector}: timed out"))
}

/// The pods with a selector at one event.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// Every pod, terminating ones included.
    pub pods: usize,
    /// Pods not being deleted.
    pub live: usize,
    /// Ready pods.
    pub ready: usize,
}

/// What [`record_pods`] saw, one entry per event.
pub type Seen = Arc<Mutex<Vec<Moment>>>;

/// Records, at every pod event once the first list is complete, the
/// [`Moment`] of the pods with `selector`, until the returned task is
/// aborted. Returns once the watch has synced, so nothing
/// done afterwards is missed.
pub fn record_pods(cluster: &Cluster, api: Api<Pod>, selector: &str) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let (synced_tx, synced) = tokio::sync::oneshot::channel::<()>();
    let record = seen.clone();
    let config = watcher::Config::default().labels(selector);
    let runtime = cluster.block_on(async { tokio::runtime::Handle::current() });
    let task = runtime.spawn(async move {
        let mut events = watcher(api, config).boxed();
        // name → (live, ready)
        let mut now: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let (mut synced_tx, mut listing) = (Some(synced_tx), true);
        while let Some(Ok(event)) = events.next().await {
            match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    now.insert(p.name_any(), (live(&p), ready(&p)));
                }
                watcher::Event::Delete(p) => {
                    now.remove(&p.name_any());
                }
                watcher::Event::Init => {
                    now.clear();
                    listing = true;
                }
                watcher::Event::InitDone => {
                    listing = false;
                    if let Some(tx) = synced_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            // Only complete states: not while a (re)list is in progress.
            if !listing {
                record.lock().unwrap().push(Moment {
                    pods: now.len(),
                    live: now.values().filter(|(live, _)| *live).count(),
                    ready: now.values().filter(|(_, ready)| *ready).count(),
                });
            }
        }
    });
    cluster.block_on(synced).unwrap();
    (seen, task)
}
