//! The ReplicaSet controller: keeps `replicas` pods of the template running,
//! adopts orphans its selector matches, and reports the status Deployments
//! and `kubectl get rs` read.
//!
//! A `kube::runtime::Controller<ReplicaSet>` triggered by the ReplicaSets
//! and by the pods: a pod maps to its controlling ReplicaSet, an orphan to
//! every ReplicaSet of its namespace whose selector matches it. Each pass
//! lists the namespace's pods from the API server (always current, so a
//! pass never creates a pod twice) and applies [`plan::plan`].
//!
//! Deleting a ReplicaSet's pods with it is the garbage collector's job
//! (the pods carry a controller reference with `blockOwnerDeletion`).

pub mod plan;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controllers::owned::{controller_ref, controller_ref_to};
use crate::controllers::reconciler::{self, Ctx, PassError, failed};

/// Runs the ReplicaSet controller until cancelled (dropped).
pub(crate) async fn run(client: kube::Client) {
    let rss: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(rss, watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod| {
            let ns = pod.namespace().unwrap_or_default();
            match controller_ref(&pod.metadata) {
                Some(o) if o.kind == "ReplicaSet" => vec![ObjectRef::new(&o.name).within(&ns)],
                Some(_) => Vec::new(),
                None => store
                    .state()
                    .into_iter()
                    .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
                    .filter(|rs| plan::selector(rs).is_some_and(|s| s.matches(pod.labels())))
                    .map(|rs| ObjectRef::from_obj(&*rs))
                    .collect(),
            }
        },
    );
    reconciler::run(controller, client, reconcile).await;
}

/// Whether an API error says the object is already gone.
fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, PassError> {
    let ns = rs.namespace().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = pods_api
        .list(&ListParams::default())
        .await
        .map_err(failed(&*rs, "listing pods"))?
        .items;
    let plan = plan::plan(&rs, &pods, Timestamp::now());
    let owner = controller_ref_to("ReplicaSet", rs.meta());
    for name in &plan.adopt {
        let Some(pod) = pods.iter().find(|p| p.name_any() == *name) else {
            continue;
        };
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner.clone());
        // The resourceVersion makes this a compare-and-swap: a pod that
        // changed since it was listed is looked at again on the next pass.
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
        match pods_api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(failed(&*rs, "adopting a pod")(e)),
        }
    }
    for name in &plan.delete {
        match pods_api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(failed(&*rs, "deleting a pod")(e)),
        }
    }
    for _ in 0..plan.create {
        pods_api
            .create(&PostParams::default(), &new_pod(&rs))
            .await
            .map_err(failed(&*rs, "creating a pod"))?;
    }
    if rs.status.as_ref() != Some(&plan.status) {
        let status = serde_json::to_value(&plan.status).unwrap_or_default();
        let patched = Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await;
        match patched {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(failed(&*rs, "writing the status")(e)),
        }
    }
    Ok(plan.recheck.map_or_else(Action::await_change, Action::requeue))
}

/// A new pod of `rs` from its template (named by the server from
/// `generateName`), controlled by `rs`.
pub fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref_to("ReplicaSet", &rs.metadata)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}
