//! The garbage collector, as kube-controller-manager's: dependents follow
//! their owners (`metadata.ownerReferences`, by uid) in the background,
//! and the `foregroundDeletion` and `orphan` finalizers a delete's
//! propagation policy gives an owner are carried out and removed.
//!
//! It watches the metadata of every resource the server's discovery lists
//! with `list`, `watch` and `delete` (but events, as the real one), keeps a
//! [`graph::Graph`] of them, and after each batch of changes runs a pass:
//! owners the graph does not know are confirmed gone with a GET, then the
//! pass's [`graph::Step`]s are written. Writes carry the uid (deletes) or
//! the resourceVersion (patches) they were planned from, so a change in
//! between makes them fail and the next pass decides again.

pub mod graph;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use self::graph::{Cascade, Graph, Key, Node, OwnerRef, Step};

/// Changes arriving within this long of each other make one pass.
const BATCH: Duration = Duration::from_millis(20);
/// A pass that waits for something (or failed a write) runs again after this
/// even without a change.
const RECHECK: Duration = Duration::from_secs(1);
/// Discovery is retried this often until the server answers.
const DISCOVERY_RETRY: Duration = Duration::from_millis(500);
/// How long the first lists may take before that is worth a warning.
const UNSYNCED_WARNING: Duration = Duration::from_secs(10);
/// Every API call of a pass is bounded by this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Kinds the collector leaves alone (high churn, never owners).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// Why one write of a pass failed (the next pass retries).
#[derive(Debug, thiserror::Error)]
enum GcError {
    #[error("{action} {resource} {name}: {source}")]
    Api {
        action: &'static str,
        resource: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action} {resource} {name}: timed out")]
    TimedOut {
        action: &'static str,
        resource: String,
        name: String,
    },
}

/// The resources the collector watches.
struct Resources {
    list: Vec<(ApiResource, bool)>,
    /// (group, kind) → index in `list`, to resolve owner references.
    by_kind: HashMap<(String, String), usize>,
}

impl Resources {
    async fn discover(client: &kube::Client) -> Resources {
        let discovery = loop {
            match Discovery::new(client.clone()).run().await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::debug!("garbage collector: discovery: {e}");
                    tokio::time::sleep(DISCOVERY_RETRY).await;
                }
            }
        };
        let mut list = Vec::new();
        let mut by_kind = HashMap::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let watchable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                    .iter()
                    .all(|v| caps.supports_operation(v));
                if !watchable || IGNORED.contains(&(ar.group.as_str(), ar.plural.as_str())) {
                    continue;
                }
                by_kind.insert((ar.group.clone(), ar.kind.clone()), list.len());
                list.push((ar, caps.scope == Scope::Namespaced));
            }
        }
        Resources { list, by_kind }
    }

    fn api(&self, client: &kube::Client, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let (ar, namespaced) = &self.list[resource];
        match namespace.filter(|_| *namespaced) {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        }
    }
}

/// Runs the garbage collector until cancelled (dropped).
pub(crate) async fn run(client: kube::Client) {
    let resources = Resources::discover(&client).await;
    let watches = resources.list.iter().enumerate().map(|(i, (ar, _))| {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), ar);
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |e| (i, e))
            .boxed()
    });
    let mut events = stream::select_all(watches);
    let mut state = State {
        graph: Graph::default(),
        listing: HashMap::new(),
        synced: vec![false; resources.list.len()],
    };
    let mut recheck = false;
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        // One change (or the recheck), then whatever follows it closely.
        let first = if recheck {
            tokio::time::timeout(RECHECK, events.next()).await.ok()
        } else {
            Some(events.next().await)
        };
        match first {
            Some(None) => return,
            Some(Some((i, e))) => state.apply(i, e),
            None => {}
        }
        while let Ok(Some((i, e))) = tokio::time::timeout(BATCH, events.next()).await {
            state.apply(i, e);
        }
        if state.synced.iter().all(|s| *s) {
            recheck = pass(&client, &resources, &state.graph).await;
        } else {
            recheck = true;
            if !warned && started.elapsed() > UNSYNCED_WARNING {
                warned = true;
                let pending: Vec<&str> = (state.synced.iter().zip(&resources.list))
                    .filter(|(s, _)| !**s)
                    .map(|(_, (ar, _))| ar.plural.as_str())
                    .collect();
                tracing::warn!("garbage collector: still listing {pending:?}; collecting nothing until listed");
            }
        }
    }
}

struct State {
    graph: Graph,
    /// Per resource being relisted: the uids seen so far.
    listing: HashMap<usize, BTreeSet<String>>,
    /// Per resource: listed at least once.
    synced: Vec<bool>,
}

type WatchEvent = Result<watcher::Event<PartialObjectMeta<DynamicObject>>, watcher::Error>;

impl State {
    fn apply(&mut self, resource: usize, event: WatchEvent) {
        match event {
            Ok(watcher::Event::Apply(o)) => {
                if let Some(n) = Node::from_meta(resource, &o.metadata) {
                    self.graph.upsert(n);
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                if let Some(uid) = o.metadata.uid.as_deref() {
                    self.graph.remove(uid);
                }
            }
            Ok(watcher::Event::Init) => {
                self.listing.insert(resource, BTreeSet::new());
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(n) = Node::from_meta(resource, &o.metadata) {
                    self.listing.entry(resource).or_default().insert(n.key.uid.clone());
                    self.graph.upsert(n);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let listed = self.listing.remove(&resource).unwrap_or_default();
                self.graph.retain_listed(resource, &listed);
                self.synced[resource] = true;
            }
            Err(e) => tracing::debug!(resource, "garbage collector: watch: {e}"),
        }
    }
}

/// One pass; whether another is due without a change.
async fn pass(client: &kube::Client, resources: &Resources, graph: &Graph) -> bool {
    let mut gone = BTreeSet::new();
    let mut unsure = false;
    for owner in graph.unknown_owners() {
        match confirmed_gone(client, resources, &owner).await {
            Some(true) => {
                gone.insert(owner.uid);
            }
            Some(false) => {}
            None => unsure = true,
        }
    }
    let plan = graph.plan(&gone);
    let mut failed = false;
    for step in plan.steps {
        if let Err(e) = write(client, resources, step).await {
            tracing::debug!("garbage collector: {e}");
            failed = true;
        }
    }
    plan.waiting || failed || unsure
}

/// Whether the owner a reference names is gone (absent, or another object
/// of that name); `None` when that cannot be told now.
async fn confirmed_gone(client: &kube::Client, resources: &Resources, owner: &OwnerRef) -> Option<bool> {
    let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let Some(&resource) = resources.by_kind.get(&(group.to_string(), owner.kind.clone())) else {
        // A kind not discovered at start (a CRD added since): never taken as
        // gone, its dependents stay.
        tracing::debug!(kind = %owner.kind, "garbage collector: owner kind not watched");
        return Some(false);
    };
    let api = resources.api(client, resource, owner.namespace.as_deref());
    match tokio::time::timeout(CALL_TIMEOUT, api.get_metadata_opt(&owner.name)).await {
        Ok(Ok(None)) => Some(true),
        Ok(Ok(Some(live))) => Some(live.metadata.uid.as_deref() != Some(owner.uid.as_str())),
        Ok(Err(e)) => {
            tracing::debug!(owner = %owner.name, "garbage collector: looking the owner up: {e}");
            None
        }
        Err(_) => None,
    }
}

async fn write(client: &kube::Client, resources: &Resources, step: Step) -> Result<(), GcError> {
    let (action, key) = match &step {
        Step::Delete { key, .. } => ("deleting", key),
        Step::SetOwners { key, .. } => ("updating the owner references of", key),
        Step::DropFinalizer { key, .. } => ("removing a finalizer of", key),
    };
    let api = resources.api(client, key.resource, key.namespace.as_deref());
    let call = async {
        match &step {
            Step::Delete { key, cascade } => {
                let params = DeleteParams {
                    propagation_policy: Some(match cascade {
                        Cascade::Background => PropagationPolicy::Background,
                        Cascade::Foreground => PropagationPolicy::Foreground,
                    }),
                    preconditions: Some(Preconditions {
                        uid: Some(key.uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                api.delete(&key.name, &params).await.map(drop)
            }
            Step::SetOwners { key, keep } => {
                let owners = if keep.is_empty() { json!(null) } else { json!(keep) };
                let patch = json!({"metadata": {"ownerReferences": owners, "resourceVersion": key.resource_version}});
                patch_meta(&api, key, patch).await
            }
            Step::DropFinalizer { key, keep, .. } => {
                let list = if keep.is_empty() { json!(null) } else { json!(keep) };
                let patch = json!({"metadata": {"finalizers": list, "resourceVersion": key.resource_version}});
                patch_meta(&api, key, patch).await
            }
        }
    };
    let resource = resources.list[key.resource].0.plural.clone();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        // Gone already: what the step wanted.
        Ok(Err(kube::Error::Api(e))) if e.code == 404 => Ok(()),
        Ok(Err(source)) => Err(GcError::Api {
            action,
            resource,
            name: key.name.clone(),
            source,
        }),
        Err(_) => Err(GcError::TimedOut {
            action,
            resource,
            name: key.name.clone(),
        }),
    }
}

async fn patch_meta(api: &Api<DynamicObject>, key: &Key, patch: serde_json::Value) -> Result<(), kube::Error> {
    api.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
}
