//! The DaemonSet controller: one pod per eligible node from the template,
//! rolling updates, and the status `kubectl rollout status ds/...` and
//! `kubectl get ds` read.
//!
//! A `kube::runtime::Controller<DaemonSet>` triggered by the DaemonSets, the
//! pods they own and the nodes. Each pass lists the nodes and the
//! DaemonSet's pods from the API server (always current, so no expectations
//! are needed to avoid creating a pod twice) and applies [`plan::plan`].
//!
//! A deleted DaemonSet's pods (and those of an earlier DaemonSet of the same
//! name) are the garbage collector's ([`crate::controllers::gc`]): they name
//! their DaemonSet by uid in their controller reference.
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

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::controllers::reconciler::{self, Ctx, PassError, failed};

/// Runs the DaemonSet controller until cancelled (dropped).
pub(crate) async fn run(client: kube::Client) {
    let dss: Api<DaemonSet> = Api::all(client.clone());
    let controller = Controller::new(dss.clone(), watcher::Config::default());
    let store = controller.store();
    let controller = controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        // Every DaemonSet looks again when a node comes, goes or changes.
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |_| store.state().into_iter().map(|ds| ObjectRef::from_obj(&*ds)),
        );
    reconciler::run(controller, client, reconcile).await;
}

/// Deletes a pod; one already gone is fine.
async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, PassError> {
    if ds.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(failed(&*ds, "listing nodes"))?
        .items;
    let all = pods_api
        .list(&ListParams::default())
        .await
        .map_err(failed(&*ds, "listing pods"))?
        .items;
    let mine: Vec<Pod> = all
        .into_iter()
        .filter(|p| pod::controller_of(p).is_some_and(|(name, owner)| name == ds.name_any() && owner == uid))
        .collect();
    let plan = plan::plan(&ds, &nodes, &mine, Timestamp::now());
    for name in &plan.delete {
        delete_pod(&pods_api, name)
            .await
            .map_err(failed(&*ds, "deleting a pod"))?;
    }
    let hash = pod::revision_hash(&ds);
    revisions::sync(&ctx.client, &ds, &hash, &mine)
        .await
        .map_err(failed(&*ds, "recording the revision"))?;
    for node in &plan.create {
        pods_api
            .create(&PostParams::default(), &pod::new_pod(&ds, node, &hash))
            .await
            .map_err(failed(&*ds, "creating a pod"))?;
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
            .map_err(failed(&*ds, "writing the status"))?;
    }
    Ok(plan.recheck.map_or_else(Action::await_change, Action::requeue))
}
