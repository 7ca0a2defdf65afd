//! A DaemonSet's history as ControllerRevisions: one per template, named
//! `<daemonset>-<hash>` (the hash its pods carry as
//! `controller-revision-hash`), holding the template as a patch of the
//! DaemonSet, numbered in order of use (`kubectl rollout history ds/...`
//! lists them). Revisions no pod runs any more are pruned beyond
//! `revisionHistoryLimit`.

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::pod::REVISION_LABEL;
use crate::controllers::owned::{controlled_by, controller_ref_to};

/// Annotation carried from the DaemonSet to its revisions.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// The revision's data: the template as a patch that replaces the
/// DaemonSet's.
pub fn data(ds: &DaemonSet) -> Value {
    let mut template = serde_json::to_value(ds.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
    if let Value::Object(t) = &mut template {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The revision for `ds`'s current template (`hash`), numbered after
/// `newest`.
pub fn new_revision(ds: &DaemonSet, hash: &str, newest: i64) -> ControllerRevision {
    let mut labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    let annotations = ds
        .annotations()
        .get(CHANGE_CAUSE)
        .map(|c| [(CHANGE_CAUSE.to_string(), c.clone())].into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![controller_ref_to("DaemonSet", ds.meta())]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data(ds))),
        revision: newest + 1,
    }
}

/// What to do with the existing revisions of `ds` (`mine`): create the
/// current one, renumber it (a template used again becomes the newest), and
/// which unused old ones to delete.
#[derive(Debug, Default, PartialEq)]
pub struct Sync {
    pub create: Option<ControllerRevision>,
    pub renumber: Option<(String, i64)>,
    pub delete: Vec<String>,
}

pub fn plan(ds: &DaemonSet, hash: &str, mine: &[ControllerRevision], pods: &[Pod]) -> Sync {
    let want = data(ds);
    let name = format!("{}-{hash}", ds.name_any());
    let current = mine
        .iter()
        .find(|r| r.data.as_ref().map(|d| &d.0) == Some(&want))
        .or_else(|| mine.iter().find(|r| r.name_any() == name));
    let newest = mine.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut out = Sync::default();
    match current {
        None => out.create = Some(new_revision(ds, hash, newest)),
        Some(r) if r.revision < newest => out.renumber = Some((r.name_any(), newest + 1)),
        Some(_) => {}
    }
    let live = |r: &ControllerRevision| {
        current.is_some_and(|c| c.name_any() == r.name_any())
            || r.labels()
                .get(REVISION_LABEL)
                .is_some_and(|h| pods.iter().any(|p| p.labels().get(REVISION_LABEL) == Some(h)))
    };
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .map_or(10, |l| usize::try_from(l).unwrap_or(0));
    let mut unused: Vec<&ControllerRevision> = mine.iter().filter(|r| !live(r)).collect();
    unused.sort_by_key(|r| r.revision);
    let excess = unused.len().saturating_sub(limit);
    out.delete = unused.into_iter().take(excess).map(ResourceExt::name_any).collect();
    out
}

/// Brings the ControllerRevisions of `ds` in line with its template.
pub async fn sync(client: &kube::Client, ds: &DaemonSet, hash: &str, pods: &[Pod]) -> Result<(), kube::Error> {
    let uid = ds.uid().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ds.namespace().unwrap_or_default());
    let mine: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| controlled_by(&r.metadata, &uid))
        .collect();
    let todo = plan(ds, hash, &mine, pods);
    if let Some(rev) = &todo.create {
        match api.create(&PostParams::default(), rev).await {
            Ok(_) => {}
            // Another DaemonSet's revision of this name: its pods keep the
            // hash label; the history just lacks this entry.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::warn!(daemonset = %ds.name_any(), "controller revision {:?} exists", rev.metadata.name);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some((name, revision)) = &todo.renumber {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"revision": revision})),
        )
        .await?;
    }
    for name in &todo.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::daemonset::pod::revision_hash;

    fn ds(image: &str, limit: i32) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u1",
                "annotations": {"kubernetes.io/change-cause": "upgrade"}},
            "spec": {"revisionHistoryLimit": limit, "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn pod_with(hash: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "labels": {REVISION_LABEL: hash}}})).unwrap()
    }

    #[test]
    fn one_revision_per_template_numbered_in_order_of_use() {
        let v1 = ds("i:1", 10);
        let h1 = revision_hash(&v1);
        let first = plan(&v1, &h1, &[], &[]).create.unwrap();
        let fv = serde_json::to_value(&first).unwrap();
        assert_eq!(fv["metadata"]["name"], format!("agent-{h1}"));
        assert_eq!(fv["metadata"]["labels"], json!({"app": "agent", REVISION_LABEL: h1}));
        assert_eq!(fv["metadata"]["annotations"], json!({CHANGE_CAUSE: "upgrade"}));
        assert_eq!(fv["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        assert_eq!(fv["revision"], 1);
        assert_eq!(fv["data"]["spec"]["template"]["$patch"], "replace");
        assert_eq!(plan(&v1, &h1, std::slice::from_ref(&first), &[]), Sync::default());
        let v2 = ds("i:2", 10);
        let h2 = revision_hash(&v2);
        let second = plan(&v2, &h2, std::slice::from_ref(&first), &[]).create.unwrap();
        assert_eq!(second.revision, 2);
        // Back to the first template: it becomes revision 3.
        let back = plan(&v1, &h1, &[first.clone(), second.clone()], &[]);
        assert_eq!(back.renumber, Some((format!("agent-{h1}"), 3)));
        assert!(back.create.is_none());
    }

    #[test]
    fn unused_revisions_beyond_the_limit_go_oldest_first() {
        let templates: Vec<DaemonSet> = (1..=4).map(|i| ds(&format!("i:{i}"), 1)).collect();
        let mut revs: Vec<ControllerRevision> = Vec::new();
        for t in &templates {
            let h = revision_hash(t);
            if let Some(r) = plan(t, &h, &revs, &[]).create {
                revs.push(r);
            }
        }
        let current = &templates[3];
        let h1 = revision_hash(&templates[0]);
        // Revision 1 still runs on a node; 2 and 3 are unused, one may stay.
        let p = plan(current, &revision_hash(current), &revs, &[pod_with(&h1)]);
        assert_eq!(p.delete, [revs[1].name_any()]);
    }
}
