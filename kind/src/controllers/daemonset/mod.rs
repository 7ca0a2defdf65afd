//! The DaemonSet controller: one pod per eligible node from the template,
//! rolling updates, and the status `kubectl rollout status ds/...` and
//! `kubectl get ds` read.
//!
//! A `kube::runtime::Controller<DaemonSet>` triggered by the DaemonSets, the
//! pods they own and the nodes. Each pass lists the nodes and the
//! DaemonSet's pods from the API server (always current, so no expectations
//! are needed to avoid creating a pod twice) and applies [`plan::plan`].
//!
//! This API server has no garbage collector, so a deleted DaemonSet's pods
//! are deleted here: a deletion triggers a pass for a DaemonSet that is no
//! longer there, and [`orphans`] then deletes the pods whose controller
//! reference names it (this also catches pods left while the controller did
//! not run: their watch events trigger the same pass).
//!
//! Each template gets a ControllerRevision ([`revisions`]) whose hash the
//! pods carry as `controller-revision-hash`.
//!
//! Not here yet: adoption of orphaned pods matching the selector, events,
//! backoff for failing pods.

pub mod nodes;
pub mod plan;
pub mod pod;
pub mod revisions;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

/// Why a pass over a DaemonSet did not finish (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("daemonset {namespace}/{name}: {action}: {source}")]
pub struct DaemonSetError {
    action: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

struct Ctx {
    client: kube::Client,
}

/// Runs the DaemonSet controller until cancelled (dropped).
pub(crate) async fn run(client: kube::Client) {
    let dss: Api<DaemonSet> = Api::all(client.clone());
    let controller = Controller::new(dss.clone(), watcher::Config::default());
    let store = controller.store();
    let ctx = Arc::new(Ctx { client: client.clone() });
    let cleanup = ctx.clone();
    controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        // Every DaemonSet looks again when a node comes, goes or changes.
        .watches(Api::<Node>::all(client), watcher::Config::default(), move |_| {
            store.state().into_iter().map(|ds| ObjectRef::from_obj(&*ds))
        })
        // Deletions too (the controller's own watch only passes on live
        // objects): they come back as `ObjectNotFound`.
        .watches(dss, watcher::Config::default(), |ds| Some(ObjectRef::from_obj(&ds)))
        .run(reconcile, retry, ctx)
        .for_each(|res| {
            let ctx = cleanup.clone();
            async move {
                if let Err(controller::Error::ObjectNotFound(gone)) = res
                    && let Some(ns) = gone.namespace.as_deref()
                    && let Err(e) = orphans(&ctx.client, ns, &gone.name).await
                {
                    tracing::warn!("daemonset controller: {e}");
                }
            }
        })
        .await;
}

fn retry(ds: Arc<DaemonSet>, e: &DaemonSetError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(daemonset = %ds.name_any(), "daemonset controller: {e}");
    Action::requeue(Duration::from_millis(300))
}

fn failed(ds: &DaemonSet, action: &'static str) -> impl FnOnce(kube::Error) -> DaemonSetError {
    let (namespace, name) = (ds.namespace().unwrap_or_default(), ds.name_any());
    move |source| DaemonSetError {
        action,
        namespace,
        name,
        source,
    }
}

/// Deletes a pod; one already gone is fine.
async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, DaemonSetError> {
    if ds.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(failed(&ds, "listing nodes"))?
        .items;
    let all = pods_api
        .list(&ListParams::default())
        .await
        .map_err(failed(&ds, "listing pods"))?
        .items;
    let mut mine = Vec::new();
    for p in all {
        match pod::controller_of(&p) {
            Some((name, owner)) if name == ds.name_any() && owner == uid => mine.push(p),
            // A pod of an earlier DaemonSet of this name.
            Some((name, _)) if name == ds.name_any() => delete_pod(&pods_api, &p.name_any())
                .await
                .map_err(failed(&ds, "deleting a pod of an earlier daemonset"))?,
            _ => {}
        }
    }
    let plan = plan::plan(&ds, &nodes, &mine, Timestamp::now());
    for name in &plan.delete {
        delete_pod(&pods_api, name)
            .await
            .map_err(failed(&ds, "deleting a pod"))?;
    }
    let hash = pod::revision_hash(&ds);
    revisions::sync(&ctx.client, &ds, &hash, &mine)
        .await
        .map_err(failed(&ds, "recording the revision"))?;
    for node in &plan.create {
        pods_api
            .create(&PostParams::default(), &pod::new_pod(&ds, node, &hash))
            .await
            .map_err(failed(&ds, "creating a pod"))?;
    }
    if ds.status.as_ref() != Some(&plan.status) {
        let mut status = serde_json::to_value(&plan.status).unwrap_or_default();
        // A merge patch keeps what it does not mention: clear the gap explicitly.
        status
            .as_object_mut()
            .map(|s| s.entry("numberUnavailable").or_insert(serde_json::Value::Null));
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .map_err(failed(&ds, "writing the status"))?;
    }
    Ok(plan.recheck.map_or_else(Action::await_change, Action::requeue))
}

/// Deletes the pods in `ns` whose controller is a DaemonSet `name` that no
/// longer exists (or exists with another uid).
async fn orphans(client: &kube::Client, ns: &str, name: &str) -> Result<(), DaemonSetError> {
    let err = |action| {
        move |source| DaemonSetError {
            action,
            namespace: ns.to_string(),
            name: name.to_string(),
            source,
        }
    };
    let live = Api::<DaemonSet>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(err("looking the daemonset up"))?
        .and_then(|ds| ds.uid());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in pods
        .list(&ListParams::default())
        .await
        .map_err(err("listing pods"))?
        .items
    {
        if let Some((owner, uid)) = pod::controller_of(&p)
            && owner == name
            && live.as_deref() != Some(uid)
        {
            delete_pod(&pods, &p.name_any())
                .await
                .map_err(err("deleting the pods of a deleted daemonset"))?;
        }
    }
    Ok(())
}
