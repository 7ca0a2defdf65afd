//! The scheduler: binds each pod that names no node to a node
//! ([`decide`]: cordons, taints and tolerations, `nodeSelector`, required
//! node affinity, then the least loaded node) through the `binding`
//! subresource, as kube-scheduler does.
//!
//! It keeps the nodes and pods in two watch caches and makes a pass over the
//! unbound pods whenever either changes, so a pod nothing fits stays
//! `Pending` (condition `PodScheduled=False`, reason `Unschedulable`, and a
//! `FailedScheduling` event with the reasons) until a node joins, is
//! uncordoned, loses a taint or gains a label. Pods it bound but whose
//! binding the cache has not seen yet count as placed ("assumed"), so a
//! pass never binds a pod twice nor forgets its load.

pub mod decide;

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::events::Events;
use super::node_pod_cache::{NodePodCache, Snapshot};
use super::owned::is_finished;
use crate::kubelet::events::pod_reference;

pub use decide::{Decision, decide};

/// The scheduler name pods ask for (or leave empty).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Every API call of a pass is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// A pass whose binding failed (the API server was busy or away) runs again after this.
const RETRY: Duration = Duration::from_secs(1);

/// What the scheduler remembers between passes.
#[derive(Default)]
struct State {
    /// Pods bound by this scheduler that the cache still shows unbound: uid → node.
    assumed: HashMap<String, String>,
    /// The last `FailedScheduling` message reported per pod uid, so an
    /// unchanged verdict is not reported again on every pass.
    reported: HashMap<String, String>,
}

/// Binds unscheduled pods until cancelled (dropped).
pub(crate) async fn run(client: kube::Client) {
    let mut cache = NodePodCache::watch(&client, "scheduler");
    let mut state = State::default();
    let events = Events::new(client.clone(), SCHEDULER_NAME);
    let mut retry = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(RETRY), if retry => {},
            alive = cache.changed() => if !alive { return },
        }
        // Take every event already queued before looking (one pass per burst).
        cache.drain();
        if cache.listed() {
            retry = !pass(&client, &events, cache.snapshot(), &mut state).await;
        }
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

/// Whether this scheduler is the one to place `pod` now.
fn wants_scheduling(pod: &Pod) -> bool {
    let ours = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME);
    ours && node_of(pod).is_none() && pod.metadata.deletion_timestamp.is_none() && !is_finished(pod)
}

/// One look at every unbound pod; whether every binding it tried went through.
async fn pass(client: &kube::Client, events: &Events, cached: Snapshot, state: &mut State) -> bool {
    let nodes: Vec<Node> = cached.nodes.iter().map(|n| (**n).clone()).collect();
    let pods = cached.pods;
    let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
    let live: std::collections::HashSet<String> = pods.iter().filter(|p| wants_scheduling(p)).map(|p| uid(p)).collect();
    state.assumed.retain(|u, _| live.contains(u));
    state.reported.retain(|u, _| live.contains(u));
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in pods.iter().filter(|p| !is_finished(p)) {
        if let Some(node) = node_of(p) {
            *load.entry(node.to_string()).or_default() += 1;
        }
    }
    for node in state.assumed.values() {
        *load.entry(node.clone()).or_default() += 1;
    }
    let mut pending: Vec<&Pod> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| wants_scheduling(p) && !state.assumed.contains_key(&uid(p)))
        .collect();
    pending.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut all_bound = true;
    for pod in pending {
        let Some(spec) = pod.spec.as_ref() else { continue };
        match decide(spec, &nodes, &load) {
            Decision::Bind(node) => {
                if bind(client, events, pod, &node).await {
                    *load.entry(node.clone()).or_default() += 1;
                    state.assumed.insert(uid(pod), node);
                } else {
                    all_bound = false;
                }
            }
            Decision::Unschedulable(message) => {
                if state.reported.get(&uid(pod)) != Some(&message) {
                    report_unschedulable(client, events, pod, &message).await;
                    state.reported.insert(uid(pod), message);
                }
            }
        }
    }
    all_bound
}

/// Binds `pod` to `node`; whether it now is.
async fn bind(client: &kube::Client, events: &Events, pod: &Pod, node: &str) -> bool {
    let (ns, name) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            api_version: Some("v1".into()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    let call = api.create_subresource::<Binding, serde_json::Value>("binding", &name, &pp, &binding);
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(_)) => {
            let message = format!("Successfully assigned {ns}/{name} to {node}");
            events.record(&pod_reference(pod), false, "Scheduled", &message).await;
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), "binding to {node}: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), "binding to {node}: timed out");
            false
        }
    }
}

/// `PodScheduled=False` (reason `Unschedulable`) and a `FailedScheduling` event.
async fn report_unschedulable(client: &kube::Client, events: &Events, pod: &Pod, message: &str) {
    let (ns, name) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastTransitionTime": now, "lastProbeTime": null,
    }]}});
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let (params, patch) = (PatchParams::default(), Patch::Merge(status));
    let call = api.patch_status(&name, &params, &patch);
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(pod = %format!("{ns}/{name}"), "marking unschedulable: {e}"),
        Err(_) => tracing::warn!(pod = %format!("{ns}/{name}"), "marking unschedulable: timed out"),
    }
    events
        .record(&pod_reference(pod), true, "FailedScheduling", message)
        .await;
}
