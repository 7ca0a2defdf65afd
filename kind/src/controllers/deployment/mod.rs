//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>` and labelled with that hash, rolled
//! from the old ones to the new one by the Deployment's strategy
//! ([`rollout`]), numbered by the `deployment.kubernetes.io/revision`
//! annotation, old ones kept at zero up to `revisionHistoryLimit`, and the
//! status and conditions `kubectl rollout status` and `helm --wait` read
//! ([`status`]).
//!
//! A `kube::runtime::Controller<Deployment>` triggered by the Deployments
//! and the ReplicaSets they own (whose status follows their pods). Each
//! pass lists the namespace's ReplicaSets from the API server, so a pass
//! sees what the previous one did.
//!
//! Not here: adoption of orphaned ReplicaSets, proportional scaling of
//! several ReplicaSets when a Deployment is scaled mid-rollout (the new one
//! takes the change), `rollout undo` beyond what a template change gives.

pub mod rollout;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::rollout::Rs;
use crate::controllers::owned::{controlled_by, controller_ref_to, short_hash};
use crate::controllers::reconciler::{self, Ctx, PassError, failed};

/// The label (on a ReplicaSet, its selector, template and pods) with the
/// hash of the Deployment's template it was made from.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation of a Deployment and its ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// Annotations of a Deployment not copied to its ReplicaSets.
const NOT_COPIED: [&str; 2] = [REVISION, "kubectl.kubernetes.io/last-applied-configuration"];

/// Runs the Deployment controller until cancelled (dropped).
pub(crate) async fn run(client: kube::Client) {
    let controller = Controller::new(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .owns(Api::<ReplicaSet>::all(client.clone()), watcher::Config::default());
    reconciler::run(controller, client, reconcile).await;
}

/// The revision annotation of an object (0 when absent or malformed).
pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The hash of a template (and the collision count that varies it).
pub fn template_hash(template: &PodTemplateSpec, collisions: Option<i32>) -> String {
    short_hash(&(template, collisions.unwrap_or(0)))
}

/// Whether `rs` was made from `template` (its own hash label aside).
pub fn same_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    let Some(mut t) = rs.spec.as_ref().and_then(|s| s.template.clone()) else {
        return false;
    };
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    t == *template
}

fn view(rs: &ReplicaSet) -> Rs {
    let st = rs.status.clone().unwrap_or_default();
    Rs {
        name: rs.name_any(),
        wanted: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        running: st.replicas,
        available: st.available_replicas.unwrap_or(0),
    }
}

/// The new ReplicaSet of `d` for its template with `hash`, at `replicas`.
pub fn new_replicaset(d: &Deployment, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template;
    let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let labels = template_meta.labels.clone();
    let mut selector = spec.selector;
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut annotations: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(REVISION.into(), revision.to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref_to("Deployment", d.meta())]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, PassError> {
    if d.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let deploy_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut owned: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default())
        .await
        .map_err(failed(&*d, "listing replicasets"))?
        .items
        .into_iter()
        .filter(|rs| controlled_by(&rs.metadata, &uid))
        .collect();
    // Oldest first: by revision, then age.
    owned.sort_by_key(|rs| {
        (
            revision(&rs.metadata),
            rs.metadata.creation_timestamp.clone(),
            rs.name_any(),
        )
    });
    let mut new = owned
        .iter()
        .position(|rs| same_template(rs, &spec.template))
        .map(|i| owned.remove(i));
    let mut old = owned;
    let max_old = old.iter().map(|rs| revision(&rs.metadata)).max().unwrap_or(0);

    // The current template is the newest revision (also after a rollback).
    if let Some(rs) = &new
        && revision(&rs.metadata) <= max_old
    {
        let patch = json!({"metadata": {"annotations": {REVISION: (max_old + 1).to_string()}}});
        new = Some(
            rs_api
                .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(failed(&*d, "numbering the replicaset"))?,
        );
    }

    let step = if spec.paused == Some(true) {
        rollout::Step::default()
    } else {
        let old_views: Vec<Rs> = old.iter().map(view).collect();
        rollout::step(&d, new.as_ref().map(view).as_ref(), &old_views)
    };
    let mut created = false;
    if let Some(replicas) = step.new {
        match &new {
            Some(rs) => new = Some(scale(&rs_api, &d, rs, replicas).await?),
            None => {
                let collisions = d.status.as_ref().and_then(|s| s.collision_count);
                let hash = template_hash(&spec.template, collisions);
                let rs = new_replicaset(&d, &hash, replicas, max_old + 1);
                match rs_api.create(&PostParams::default(), &rs).await {
                    Ok(rs) => {
                        created = true;
                        new = Some(rs);
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        // A ReplicaSet of another template has this name: vary the hash.
                        let patch = json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}});
                        deploy_api
                            .patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                            .await
                            .map_err(failed(&*d, "counting a hash collision"))?;
                        return Ok(Action::requeue(Duration::from_millis(50)));
                    }
                    Err(e) => return Err(failed(&*d, "creating a replicaset")(e)),
                }
            }
        }
    }
    for (name, replicas) in &step.old {
        if let Some(i) = old.iter().position(|rs| rs.name_any() == *name) {
            old[i] = scale(&rs_api, &d, &old[i], *replicas).await?;
        }
    }

    if let Some(rs) = &new {
        let rev = revision(&rs.metadata);
        if revision(d.meta()) != rev {
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            deploy_api
                .patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(failed(&*d, "writing the revision"))?;
        }
    }
    old = prune(&rs_api, &d, old).await?;

    let all: Vec<&ReplicaSet> = old.iter().chain(new.as_ref()).collect();
    let facts = status::Facts {
        new: new.as_ref(),
        created,
        now: Timestamp::now(),
    };
    let (st, recheck) = status::status(&d, &all, &facts);
    if d.status.as_ref() != Some(&st) {
        let status = serde_json::to_value(&st).unwrap_or_default();
        deploy_api
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(failed(&*d, "writing the status"))?;
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

async fn scale(api: &Api<ReplicaSet>, d: &Deployment, rs: &ReplicaSet, replicas: i32) -> Result<ReplicaSet, PassError> {
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(failed(d, "scaling a replicaset"))
}

/// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit`;
/// returns the ones kept.
async fn prune(api: &Api<ReplicaSet>, d: &Deployment, old: Vec<ReplicaSet>) -> Result<Vec<ReplicaSet>, PassError> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .map_or(10, |l| usize::try_from(l).unwrap_or(0));
    let empty = |rs: &ReplicaSet| {
        rs.spec.as_ref().and_then(|s| s.replicas) == Some(0)
            && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
            && rs.metadata.deletion_timestamp.is_none()
    };
    let mut excess = old.iter().filter(|rs| empty(rs)).count().saturating_sub(limit);
    let mut kept = Vec::new();
    // `old` is oldest first.
    for rs in old {
        if excess > 0 && empty(&rs) {
            excess -= 1;
            match api.delete(&rs.name_any(), &DeleteParams::default()).await {
                Ok(_) => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(failed(d, "deleting an old replicaset")(e)),
            }
        }
        kept.push(rs);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid",
                "annotations": {"kubernetes.io/change-cause": "v2", REVISION: "4",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 3, "minReadySeconds": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_new_replicaset_carries_the_hash_and_the_revision() {
        let d = deploy();
        let template = d.spec.as_ref().unwrap().template.clone();
        let hash = template_hash(&template, None);
        assert_ne!(hash, template_hash(&template, Some(1)), "a collision varies the hash");
        let rs = new_replicaset(&d, &hash, 1, 5);
        let v = serde_json::to_value(&rs).unwrap();
        assert_eq!(v["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(v["metadata"]["labels"], json!({"app": "web", HASH_LABEL: hash}));
        assert_eq!(
            v["metadata"]["annotations"],
            json!({"kubernetes.io/change-cause": "v2", REVISION: "5"})
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        assert_eq!(v["metadata"]["ownerReferences"][0]["blockOwnerDeletion"], true);
        assert_eq!(
            v["spec"]["selector"]["matchLabels"],
            json!({"app": "web", HASH_LABEL: hash})
        );
        assert_eq!(v["spec"]["template"]["metadata"]["labels"][HASH_LABEL], json!(hash));
        assert_eq!(
            (v["spec"]["replicas"].clone(), v["spec"]["minReadySeconds"].clone()),
            (json!(1), json!(2))
        );
        assert!(same_template(&rs, &template));
        let mut changed = template.clone();
        changed.metadata.as_mut().unwrap().annotations = Some([("restartedAt".into(), "now".into())].into());
        assert!(!same_template(&rs, &changed));
        assert_eq!(revision(&rs.metadata), 5);
    }
}
