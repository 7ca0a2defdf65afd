//! What the local-cluster tests share: a ptp cluster with a short restart
//! backoff, this build's mesh-probe image, pod readiness, a watch that
//! keeps the latest of each object, and waits over it — for one pod, for a
//! state of the pods with a label selector, and a recorder of (pods, Ready
//! pods) at every event so a rollout's worst moment can be asserted
//! afterwards.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::wait::{Condition, await_condition};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// How long any wait of these tests may take.
pub const WAIT: Duration = Duration::from_secs(90);

/// A local ptp cluster of `nodes` running `images`, whose containers
/// restart after 200 ms (at most 1 s), so crash loops show within a wait.
pub fn ptp_spec(nodes: u32, images: ImageTable) -> ClusterSpec {
    ClusterSpec {
        nodes,
        profile: Profile::Ptp,
        images,
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        ..ClusterSpec::default()
    }
}

/// The image `mesh-probe`: this build's binary.
pub fn mesh_probe() -> ImageTable {
    ImageTable::new().add("mesh-probe", env!("CARGO_BIN_EXE_mesh-probe"), &[])
}

/// A 2-node [`ptp_spec`] cluster running [`mesh_probe`].
pub fn two_node_cluster() -> Cluster {
    Cluster::create(ptp_spec(2, mesh_probe())).unwrap()
}

/// Waits (on a watch) until `done` holds for pod `name` in `default`;
/// after [`WAIT`] panics with `what` was awaited and the pod as it is.
pub fn wait_pod(cluster: &Cluster, name: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let wait = await_condition(pods.clone(), name, move |p: Option<&Pod>| p.is_some_and(&done));
    let got = cluster.block_on(async { tokio::time::timeout(WAIT, wait).await });
    match got {
        Ok(Ok(Some(p))) => p,
        other => {
            let now = cluster.block_on(pods.get_opt(name));
            panic!("pod {name}: {what}: {other:?}\nnow: {now:#?}")
        }
    }
}

/// Waits (on a watch) until `cond` holds for object `name` of `api`;
/// after [`WAIT`] panics saying it is still not `what`.
pub fn wait_object<K>(cluster: &Cluster, api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let wait = await_condition(api.clone(), name, cond);
    cluster
        .block_on(async { tokio::time::timeout(WAIT, wait).await })
        .unwrap_or_else(|_| panic!("{name}: not {what} in {WAIT:?}"))
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: deleted while waiting until {what}"))
}

/// Watches `api` and keeps the latest version of each object by name;
/// returns what `done` makes of them the first time it makes something of
/// a complete list (not while a relist is under way). `what` names the
/// watch in its messages; the caller bounds the wait.
pub async fn watch_until<K, T>(
    api: Api<K>,
    config: watcher::Config,
    what: &str,
    mut done: impl FnMut(&BTreeMap<String, K>) -> Option<T>,
) -> T
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut events = watcher(api, config).boxed();
    let mut now: BTreeMap<String, K> = BTreeMap::new();
    let mut synced = false;
    loop {
        match events.next().await {
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                now.insert(o.name_any(), o);
            }
            Some(Ok(watcher::Event::Delete(o))) => {
                now.remove(&o.name_any());
            }
            Some(Ok(watcher::Event::Init)) => {
                now.clear();
                synced = false;
            }
            Some(Ok(watcher::Event::InitDone)) => synced = true,
            Some(Err(e)) => eprintln!("{what}: watch: {e}"),
            None => panic!("{what}: the watch ended"),
        }
        if let Some(answer) = synced.then(|| done(&now)).flatten() {
            return answer;
        }
    }
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
    let config = watcher::Config::default().labels(selector);
    let what = format!("pods {selector}");
    let wait = watch_until(api, config, &what, |now| {
        let pods: Vec<Pod> = now.values().filter(|p| !live_only || live(p)).cloned().collect();
        done(&pods).then_some(pods)
    });
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
