//! The embedded API server against an unmodified `kube` client: CRUD,
//! selectors, watches (resourceVersions, bookmarks, 410), watcher and
//! reflector, patches, the status subresource, optimistic concurrency,
//! delete preconditions, RBAC, logs, and fault injection.

mod apiserver_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver_support::{
    code, controllers, eventually, labels, namespace, node, pod, reason, server, server_with, wait_deleted, wait_for,
};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use istio_cni_kind::apiserver::{ApiServer, ApiServerOptions, FaultMatch, MemoryLogs};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateTerminated, ContainerStatus, Namespace, Node, Pod, PodStatus,
    PodTemplateSpec, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

fn daemonset(name: &str) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: labels(&[("app", name)]),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: labels(&[("app", name)]),
                    ..Default::default()
                }),
                spec: pod(name, None, &[]).spec,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The names `api.list(lp)` returns, in order.
async fn list_names<K>(api: &Api<K>, lp: &ListParams) -> Vec<String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.list(lp).await.unwrap().items.iter().map(|o| o.name_any()).collect()
}

/// The resourceVersion of a full list.
/// A server whose watch history keeps the last `events` events.
async fn server_with_history(events: usize) -> ApiServer {
    server_with(ApiServerOptions {
        watch_history: events,
        ..Default::default()
    })
    .await
}

async fn list_rv<K>(api: &Api<K>) -> String
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn rv_of<K: ResourceExt>(k: &K) -> u64 {
    k.resource_version()
        .and_then(|r| r.parse().ok())
        .expect("numeric resourceVersion")
}

#[tokio::test]
async fn crud_across_kinds() {
    let s = server().await;
    let _controllers = controllers(&s).await;
    let client = s.client().await;
    let pp = PostParams::default();

    // Namespaces: pre-created ones, a new one, objects in a missing one.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = list_names(&namespaces, &ListParams::default()).await;
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
    let created = namespaces.create(&pp, &namespace("team")).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let missing: Api<Pod> = Api::namespaced(client.clone(), "nowhere");
    let e = missing.create(&pp, &pod("p", None, &[])).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (404, "NotFound"));

    // Pods: server-set fields, AlreadyExists, generateName, replace, delete.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    let p = pods
        .create(&pp, &pod("web", Some("n1"), &[("app", "web")]))
        .await
        .unwrap();
    assert_eq!(p.namespace().as_deref(), Some("team"));
    assert!(p.uid().is_some() && p.metadata.creation_timestamp.is_some());
    assert!(rv_of(&p) > 0);
    assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"));
    let e = pods.create(&pp, &pod("web", None, &[])).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "AlreadyExists"));
    let mut generated = pod("", None, &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = pods.create(&pp, &generated).await.unwrap();
    assert!(g.name_any().starts_with("gen-") && g.name_any().len() == 9);
    let mut got = pods.get("web").await.unwrap();
    got.metadata
        .labels
        .get_or_insert_default()
        .insert("tier".into(), "front".into());
    let replaced = pods.replace("web", &pp, &got).await.unwrap();
    assert!(rv_of(&replaced) > rv_of(&p));
    assert_eq!(replaced.labels().get("tier").map(String::as_str), Some("front"));
    // No kubelet runs here: a bound pod would wait for one, so grace 0.
    pods.delete("web", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let e = pods.get("web").await.unwrap_err();
    assert_eq!(code(&e), 404);

    // ConfigMaps.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    cms.create(&pp, &cm("c1", &[("k", "v")])).await.unwrap();
    let mut c = cms.get("c1").await.unwrap();
    c.data.get_or_insert_default().insert("k2".into(), "v2".into());
    let c = cms.replace("c1", &pp, &c).await.unwrap();
    assert_eq!(c.data.unwrap().len(), 2);
    let root_ca = wait_for(cms.clone(), "kube-root-ca.crt", |c: Option<&ConfigMap>| c.is_some()).await;
    assert!(root_ca.and_then(|c| c.data).unwrap()["ca.crt"].contains("BEGIN CERTIFICATE"));

    // DaemonSets: generation follows spec changes only.
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let d = dss.create(&pp, &daemonset("agent")).await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    // The DaemonSet controller writes status concurrently, so each change
    // is read-modify-write retried on 409 as real clients do.
    let d2 = replace_latest(&dss, "agent", |d| d.metadata.labels = labels(&[("x", "y")])).await;
    assert_eq!(d2.metadata.generation, Some(1));
    let d3 = replace_latest(&dss, "agent", |d| d.spec.as_mut().unwrap().min_ready_seconds = Some(3)).await;
    assert_eq!(d3.metadata.generation, Some(2));

    // Nodes (cluster-scoped) keep their status on create.
    let nodes: Api<Node> = Api::all(client.clone());
    let mut n = node("n1");
    n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    let n = nodes.create(&pp, &n).await.unwrap();
    assert_eq!(n.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 1);
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();

    // ClusterRoles.
    let crs: Api<ClusterRole> = Api::all(client.clone());
    let role = ClusterRole {
        metadata: named("system:test"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    crs.create(&pp, &role).await.unwrap();
    assert_eq!(
        crs.get("system:test").await.unwrap().rules.unwrap()[0].verbs,
        vec!["get"]
    );
    crs.delete("system:test", &DeleteParams::default()).await.unwrap();

    // Deleting a namespace deletes its contents (the namespace controller).
    let team_uid = namespaces.get("team").await.unwrap().uid().unwrap();
    namespaces.delete("team", &DeleteParams::default()).await.unwrap();
    wait_deleted(&namespaces, "team", &team_uid).await;
    assert_eq!(code(&cms.get("c1").await.unwrap_err()), 404);

    // The discovery kube does works.
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.33.0");
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    for g in ["", "apps", "rbac.authorization.k8s.io"] {
        assert!(discovery.has_group(g), "group {g:?}");
    }
}

#[tokio::test]
async fn list_with_label_and_field_selectors() {
    let s = server().await;
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    for (name, node, app, phase) in [
        ("a", "n1", "web", "Running"),
        ("b", "n2", "web", "Pending"),
        ("c", "n1", "db", "Running"),
        ("d", "n2", "cache", "Succeeded"),
    ] {
        let p = pods.create(&pp, &pod(name, Some(node), &[("app", app)])).await.unwrap();
        let mut p2 = p.clone();
        p2.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        pods.replace_status(name, &pp, &p2).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<Pod>| l.items.iter().map(|p| p.name_any()).collect::<Vec<_>>();
    let list = |lp: ListParams| {
        let pods = pods.clone();
        async move { names(pods.list(&lp).await.unwrap()) }
    };
    assert_eq!(list(ListParams::default().fields("spec.nodeName=n1")).await, ["a", "c"]);
    assert_eq!(
        list(ListParams::default().fields("spec.nodeName!=n1")).await,
        ["b", "d"]
    );
    assert_eq!(list(ListParams::default().fields("metadata.name=b")).await, ["b"]);
    assert_eq!(
        list(ListParams::default().fields("status.phase=Running")).await,
        ["a", "c"]
    );
    assert_eq!(
        list(ListParams::default().fields("status.phase=Running,spec.nodeName=n1,metadata.namespace=default")).await,
        ["a", "c"]
    );
    assert_eq!(list(ListParams::default().labels("app=web")).await, ["a", "b"]);
    assert_eq!(list(ListParams::default().labels("app==db")).await, ["c"]);
    assert_eq!(list(ListParams::default().labels("app!=web")).await, ["c", "d"]);
    assert_eq!(
        list(ListParams::default().labels("app in (db,cache)")).await,
        ["c", "d"]
    );
    assert_eq!(list(ListParams::default().labels("app notin (web)")).await, ["c", "d"]);
    assert_eq!(list(ListParams::default().labels("app")).await, ["a", "b", "c", "d"]);
    assert!(list(ListParams::default().labels("!app")).await.is_empty());
    assert_eq!(
        list(ListParams::default().labels("app=web").fields("spec.nodeName=n2")).await,
        ["b"]
    );

    // All namespaces, paging with limit/continue.
    let all: Api<Pod> = Api::all(client.clone());
    let page = all.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = all
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), ["d"]);

    // A bad selector is a 400.
    let e = pods.list(&ListParams::default().labels("app in (x")).await.unwrap_err();
    assert_eq!(code(&e), 400);
}

#[tokio::test]
async fn watch_from_resource_version_sends_only_later_events() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    cms.create(&pp, &cm("before", &[])).await.unwrap();
    let from = list_rv(&cms).await;
    cms.create(&pp, &cm("after", &[])).await.unwrap();
    let mut c = cms.get("before").await.unwrap();
    c.data = Some([("k".to_string(), "v".to_string())].into());
    cms.replace("before", &pp, &c).await.unwrap();
    cms.delete("after", &DeleteParams::default()).await.unwrap();

    let wp = WatchParams::default().timeout(2);
    let stream = cms.watch(&wp, &from).await.unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = stream.try_collect().await.unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(o) => Some(("ADDED".into(), o.name_any())),
            WatchEvent::Modified(o) => Some(("MODIFIED".into(), o.name_any())),
            WatchEvent::Deleted(o) => Some(("DELETED".into(), o.name_any())),
            _ => None,
        })
        .collect();
    let want = [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")];
    assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())));
    // Bookmarks were requested (kube asks by default); one comes before the timeout.
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "{events:?}"
    );
}

#[tokio::test]
async fn watch_bookmarks_and_live_events() {
    let s = server().await;
    let nodes: Api<Node> = Api::all(s.client().await);
    let rv = list_rv(&nodes).await;
    let mut stream = nodes
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    // A bookmark arrives on its own (200 ms interval in the tests).
    let first = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Bookmark(bm) = first else {
        panic!("expected a bookmark, got {first:?}");
    };
    assert!(bm.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse::<u64>().unwrap());
    nodes.create(&PostParams::default(), &node("live")).await.unwrap();
    let added = loop {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(n) => break n,
            WatchEvent::Bookmark(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(added.name_any(), "live");
}

#[tokio::test]
async fn watch_from_expired_version_gets_410() {
    let s = server_with_history(5).await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let old = list_rv(&cms).await;
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &old)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(
        stream.try_next().await.unwrap().is_none(),
        "the stream ends after the error"
    );
    // A version inside the history still works.
    let recent = cms.get("c8").await.unwrap().resource_version().unwrap();
    let events: Vec<_> = cms
        .watch(&WatchParams::default().timeout(1), &recent)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::Added(c) if c.name_any() == "c9"))
    );
}

#[tokio::test]
async fn watcher_and_reflector_converge() {
    let s = server_with_history(20).await;
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    for i in 0..5 {
        pods.create(&pp, &pod(&format!("pre{i}"), Some("n1"), &[("app", "x")]))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store::<Pod>();
    let all: Api<Pod> = Api::all(client.clone());
    let stream = reflector(writer, watcher(all, watcher::Config::default().labels("app=x"))).default_backoff();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 5);

    // Churn (more events than the history holds) while the reflector follows.
    for i in 0..30 {
        pods.create(&pp, &pod(&format!("p{i}"), Some("n1"), &[("app", "x")]))
            .await
            .unwrap();
    }
    // Grace 0: no kubelet finishes a graceful deletion here.
    for i in 0..10 {
        let now = DeleteParams::default().grace_period(0);
        pods.delete(&format!("p{i}"), &now).await.unwrap();
    }
    // Relabel one out of the selection: the reflector drops it.
    pods.patch(
        "pre0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("other", None, &[("app", "z")])).await.unwrap();
    let converged = eventually(WAIT, || async {
        let mut names: Vec<String> = reader.state().iter().map(|p| p.name_any()).collect();
        names.sort();
        let mut want: Vec<String> = (1..5)
            .map(|i| format!("pre{i}"))
            .chain((10..30).map(|i| format!("p{i}")))
            .collect();
        want.sort();
        names == want
    })
    .await;
    assert!(
        converged,
        "reflector state: {:?}",
        reader.state().iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    task.abort();
}

#[tokio::test]
async fn patch_types() {
    let s = server().await;
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let p = pods
        .create(&pp, &pod("p", None, &[("a", "1"), ("b", "2")]))
        .await
        .unwrap();
    let params = PatchParams::default();

    // JSON merge patch: set and remove labels.
    let m = pods
        .patch(
            "p",
            &params,
            &Patch::Merge(json!({"metadata": {"labels": {"a": null, "c": "3"}}})),
        )
        .await
        .unwrap();
    assert_eq!(m.labels().keys().collect::<Vec<_>>(), ["b", "c"]);
    assert!(rv_of(&m) > rv_of(&p));

    // Strategic merge patch: labels/annotations merge, containers merge by name.
    let sm = pods
        .patch(
            "p",
            &params,
            &Patch::Strategic(json!({
                "metadata": {"labels": {"d": "4"}, "annotations": {"note": "x"}},
                "spec": {"containers": [{"name": "app", "image": "busybox:2"}]},
            })),
        )
        .await
        .unwrap();
    assert_eq!(sm.labels().len(), 3);
    assert_eq!(sm.annotations().get("note").map(String::as_str), Some("x"));
    let containers = &sm.spec.as_ref().unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("busybox:2"));

    // Strategic merge on status: conditions merge by type.
    let status_patch = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
    pods.patch_status("p", &params, &Patch::Strategic(status_patch))
        .await
        .unwrap();
    let st = pods
        .patch_status(
            "p",
            &params,
            &Patch::Strategic(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    let conds: Vec<(String, String)> = st
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert_eq!(
        conds,
        [
            ("Ready".to_string(), "True".to_string()),
            ("PodScheduled".to_string(), "True".to_string())
        ]
    );

    // JSON patch (raw request: kube's typed Patch::Json needs a feature this crate leaves off).
    let req = axum::http::Request::patch("/api/v1/namespaces/default/pods/p")
        .header("Content-Type", "application/json-patch+json")
        .body(
            serde_json::to_vec(&json!([
                {"op": "add", "path": "/metadata/labels/e", "value": "5"},
                {"op": "remove", "path": "/metadata/labels/b"},
                {"op": "test", "path": "/metadata/labels/c", "value": "3"},
            ]))
            .unwrap(),
        )
        .unwrap();
    let patched: Pod = client.request(req).await.unwrap();
    assert_eq!(patched.labels().keys().collect::<Vec<_>>(), ["c", "d", "e"]);
    let failing = axum::http::Request::patch("/api/v1/namespaces/default/pods/p")
        .header("Content-Type", "application/json-patch+json")
        .body(br#"[{"op":"test","path":"/metadata/labels/c","value":"nope"}]"#.to_vec())
        .unwrap();
    let e = client.request::<Pod>(failing).await.unwrap_err();
    assert_eq!(code(&e), 422);

    // A patch setting a stale resourceVersion conflicts.
    let e = pods
        .patch(
            "p",
            &params,
            &Patch::Merge(json!({"metadata": {"resourceVersion": p.resource_version()}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);

    // Strategic merge on a DaemonSet template: containers merge by name.
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    dss.create(&pp, &daemonset("ds")).await.unwrap();
    let ds = dss
        .patch(
            "ds",
            &params,
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "image": "proxy"}]}}}})),
        )
        .await
        .unwrap();
    let names: Vec<String> = ds
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["app", "sidecar"]);
    assert_eq!(ds.metadata.generation, Some(2));

    // Server-side apply (approximated): creates, then merges.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ssa = PatchParams::apply("test");
    let applied = cms
        .patch(
            "applied",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "applied"}, "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["a"], "1");
}

#[tokio::test]
async fn status_subresource_semantics() {
    let s = server().await;
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    pods.create(&pp, &pod("p", Some("n1"), &[])).await.unwrap();

    // A plain update ignores status changes.
    let mut p = pods.get("p").await.unwrap();
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    p.metadata.labels = labels(&[("x", "1")]);
    let u = pods.replace("p", &pp, &p).await.unwrap();
    assert_eq!(u.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(u.labels().get("x").map(String::as_str), Some("1"));

    // A main-resource patch of status is ignored too.
    let m = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(m.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));

    // The status subresource changes the status and, for pods, the labels
    // (kube-apiserver's pod status strategy; Istio's labelPods relies on it),
    // never the spec.
    let mut st = pods.get_status("p").await.unwrap();
    st.status.as_mut().unwrap().phase = Some("Running".into());
    st.metadata.labels = labels(&[("x", "2")]);
    st.spec.as_mut().unwrap().node_name = Some("elsewhere".into());
    let r = pods.replace_status("p", &pp, &st).await.unwrap();
    assert_eq!(r.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(r.labels().get("x").map(String::as_str), Some("2"));
    assert_eq!(r.spec.unwrap().node_name.as_deref(), Some("n1"));
}

#[tokio::test]
async fn update_with_stale_version_conflicts() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let pp = PostParams::default();
    let original = cms.create(&pp, &cm("c", &[("v", "1")])).await.unwrap();
    let mut first = original.clone();
    first.data = Some([("v".to_string(), "2".to_string())].into());
    cms.replace("c", &pp, &first).await.unwrap();
    let mut stale = original.clone();
    stale.data = Some([("v".to_string(), "3".to_string())].into());
    let e = cms.replace("c", &pp, &stale).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["v"], "2");
    // Without a resourceVersion the update is unconditional.
    let mut unconditional = stale;
    unconditional.metadata.resource_version = None;
    cms.replace("c", &pp, &unconditional).await.unwrap();
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["v"], "3");
    // Updating a missing object is a 404.
    let e = cms.replace("missing", &pp, &cm("missing", &[])).await.unwrap_err();
    assert_eq!(code(&e), 404);
}

#[tokio::test]
async fn delete_preconditions() {
    let s = server().await;
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let p = pods.create(&PostParams::default(), &pod("p", None, &[])).await.unwrap();
    let with = |uid: Option<String>, rv: Option<String>| DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: rv,
        }),
        ..Default::default()
    };
    let e = pods
        .delete("p", &with(Some("not-the-uid".into()), None))
        .await
        .unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));
    let e = pods.delete("p", &with(None, Some("1".into()))).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (409, "Conflict"));
    pods.delete("p", &with(p.uid(), p.resource_version())).await.unwrap();
    assert_eq!(
        code(&pods.delete("p", &DeleteParams::default()).await.unwrap_err()),
        404
    );
    // deletecollection with a selector.
    for (n, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        pods.create(&PostParams::default(), &pod(n, None, &[("app", app)]))
            .await
            .unwrap();
    }
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=x"))
        .await
        .unwrap();
    let left: Vec<String> = list_names(&pods, &ListParams::default()).await;
    assert_eq!(left, ["c"]);
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn sa_subject(ns: &str, name: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn rbac_cluster_roles_role_bindings_and_authentication() {
    let s = server_with(ApiServerOptions {
        http_listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let admin = s.client().await;
    let pp = PostParams::default();
    Api::<Pod>::namespaced(admin.clone(), "default")
        .create(&pp, &pod("p", None, &[]))
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &pp,
            &ClusterRole {
                metadata: named("pod-reader"),
                rules: Some(vec![rule(&[""], &["pods"], &["get", "list", "watch"])]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &pp,
            &ClusterRoleBinding {
                metadata: named("reader"),
                role_ref: role_ref("ClusterRole", "pod-reader"),
                subjects: Some(vec![sa_subject("sys", "reader")]),
            },
        )
        .await
        .unwrap();
    let token = s.mint_token("sys", "reader");
    assert!(
        Api::<ServiceAccount>::namespaced(admin.clone(), "sys")
            .get("reader")
            .await
            .is_ok()
    );
    let reader = s.client_for(&token).await;
    let all_pods: Api<Pod> = Api::all(reader.clone());
    assert_eq!(all_pods.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let pods: Api<Pod> = Api::namespaced(reader.clone(), "default");
    assert!(pods.get("p").await.is_ok());
    let e = pods.delete("p", &DeleteParams::default()).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (403, "Forbidden"));
    let e = Api::<ConfigMap>::namespaced(reader.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), 403);
    if let kube::Error::Api(st) = &e {
        assert!(
            st.message.contains("system:serviceaccount:sys:reader"),
            "{}",
            st.message
        );
    }
    let e = pods.get_status("p").await.unwrap_err();
    assert_eq!(code(&e), 403, "pods/status is a separate resource");
    // Access reviews answer from the same policy.
    let can = |verb: &str, resource: &str| {
        let reviews: Api<SelfSubjectAccessReview> = Api::all(reader.clone());
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some(resource.into()),
                    namespace: Some("default".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        async move {
            reviews
                .create(&PostParams::default(), &review)
                .await
                .unwrap()
                .status
                .unwrap()
                .allowed
        }
    };
    assert!(can("list", "pods").await);
    assert!(!can("delete", "pods").await);
    assert!(!can("get", "configmaps").await);

    // A RoleBinding grants only inside its namespace.
    Api::<Namespace>::all(admin.clone())
        .create(&pp, &namespace("team"))
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), "team")
        .create(
            &pp,
            &Role {
                metadata: named("cm-editor"),
                rules: Some(vec![rule(&[""], &["configmaps"], &["*"])]),
            },
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "team")
        .create(
            &pp,
            &RoleBinding {
                metadata: named("dev-cm"),
                role_ref: role_ref("Role", "cm-editor"),
                subjects: Some(vec![Subject {
                    kind: "Group".into(),
                    name: "system:serviceaccounts:team".into(),
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
    let dev = s.client_for(&s.mint_token("team", "dev")).await;
    let team_cms: Api<ConfigMap> = Api::namespaced(dev.clone(), "team");
    team_cms.create(&pp, &cm("mine", &[])).await.unwrap();
    assert!(team_cms.list(&ListParams::default()).await.is_ok());
    let e = Api::<ConfigMap>::namespaced(dev.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), 403);
    let e = Api::<ConfigMap>::all(dev.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), 403);

    // Removing the binding takes the grant away.
    Api::<RoleBinding>::namespaced(admin.clone(), "team")
        .delete("dev-cm", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(code(&team_cms.list(&ListParams::default()).await.unwrap_err()), 403);

    // Unknown token: 401.
    let bad = s.client_for("not-a-token").await;
    let e = Api::<Pod>::all(bad).list(&ListParams::default()).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (401, "Unauthorized"));

    // No token at all (plain HTTP listener, raw request): 401 with a Status body.
    let http = s.http_url().unwrap();
    let addr = http.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET /api/v1/pods HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(
        resp.contains("\"reason\":\"Unauthorized\"") && resp.contains("\"kind\":\"Status\""),
        "{resp}"
    );
}

/// Logs in one file, as the kubelet keeps them; `forgotten` as after the
/// pod's teardown.
struct FileLogs {
    file: std::path::PathBuf,
    forgotten: std::sync::atomic::AtomicBool,
}

impl istio_cni_kind::apiserver::LogSource for FileLogs {
    fn logs(&self, _: &str, pod: &str, _: &str, previous: bool) -> Option<String> {
        let gone = self.forgotten.load(std::sync::atomic::Ordering::SeqCst);
        (pod == "q" && !previous && !gone).then(|| std::fs::read_to_string(&self.file).ok())?
    }

    fn open(&self, _: &str, pod: &str, _: &str) -> Option<std::fs::File> {
        let gone = self.forgotten.load(std::sync::atomic::Ordering::SeqCst);
        (pod == "q" && !gone).then(|| std::fs::File::open(&self.file).ok())?
    }
}

#[tokio::test]
async fn pod_logs_and_binding() {
    let s = server().await;
    let logs = Arc::new(MemoryLogs::new());
    logs.set("default", "p", "app", "line 1\nline 2\nline 3\n");
    logs.set_previous("default", "p", "app", "crashed\n");
    s.set_log_source(logs.clone());
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let mut two = pod("p", None, &[]);
    two.spec.as_mut().unwrap().containers.push(Container {
        name: "side".into(),
        image: Some("proxy".into()),
        ..Default::default()
    });
    pods.create(&PostParams::default(), &two).await.unwrap();
    let lp = |c: &str| LogParams {
        container: Some(c.into()),
        ..Default::default()
    };
    assert_eq!(pods.logs("p", &lp("app")).await.unwrap(), "line 1\nline 2\nline 3\n");
    let tail = LogParams {
        tail_lines: Some(1),
        ..lp("app")
    };
    assert_eq!(pods.logs("p", &tail).await.unwrap(), "line 3\n");
    let prev = LogParams {
        previous: true,
        ..lp("app")
    };
    assert_eq!(pods.logs("p", &prev).await.unwrap(), "crashed\n");
    assert_eq!(code(&pods.logs("p", &lp("nope")).await.unwrap_err()), 400);
    assert_eq!(
        code(&pods.logs("p", &LogParams::default()).await.unwrap_err()),
        400,
        "two containers, none named"
    );
    assert_eq!(
        code(&pods.logs("p", &lp("side")).await.unwrap_err()),
        400,
        "no logs for side"
    );
    assert_eq!(code(&pods.logs("missing", &lp("app")).await.unwrap_err()), 404);

    // follow=true streams appended lines until the container terminates.
    let follow = LogParams {
        follow: true,
        ..lp("app")
    };
    let mut lines = pods.log_stream("p", &follow).await.unwrap().lines();
    for want in ["line 1", "line 2", "line 3"] {
        assert_eq!(lines.try_next().await.unwrap().as_deref(), Some(want));
    }
    logs.append("default", "p", "app", "line 4\n");
    assert_eq!(
        tokio::time::timeout(WAIT, lines.try_next())
            .await
            .unwrap()
            .unwrap()
            .as_deref(),
        Some("line 4")
    );
    let mut p = pods.get_status("p").await.unwrap();
    p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "app".into(),
        image: "busybox".into(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    pods.replace_status("p", &PostParams::default(), &p).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, lines.try_next()).await.unwrap().unwrap(),
        None,
        "stream ends"
    );

    // A source keeping logs in files: the follower reads through its open
    // handle, so the last line survives the source forgetting the pod and
    // the pod's removal (a SIGTERM handler's goodbye, then gone).
    let dir = testkit::Scratch::new("follow-logs");
    let file = dir.join("0.log");
    std::fs::write(&file, "hello\n").unwrap();
    let files = Arc::new(FileLogs {
        file: file.clone(),
        forgotten: std::sync::atomic::AtomicBool::new(false),
    });
    s.set_log_source(files.clone());
    pods.create(&PostParams::default(), &pod("q", None, &[])).await.unwrap();
    let mut lines = pods.log_stream("q", &follow).await.unwrap().lines();
    assert_eq!(lines.try_next().await.unwrap().as_deref(), Some("hello"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"got SIGTERM\n"))
        .unwrap();
    files.forgotten.store(true, std::sync::atomic::Ordering::SeqCst);
    std::fs::remove_file(&file).unwrap();
    pods.delete("q", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = Vec::new();
        while let Some(line) = lines.try_next().await.unwrap() {
            rest.push(line);
        }
        rest
    })
    .await
    .expect("the stream ends with the pod");
    assert_eq!(rest, ["got SIGTERM"]);

    // The binding subresource assigns a node once.
    pods.create(&PostParams::default(), &pod("unscheduled", None, &[]))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "unscheduled"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n7"}});
    let _: Value = pods
        .create_subresource("binding", "unscheduled", &PostParams::default(), &binding)
        .await
        .unwrap();
    let bound = pods.get("unscheduled").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("n7"));
    let e = pods
        .create_subresource::<Value, Value>("binding", "unscheduled", &PostParams::default(), &binding)
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409);
}

#[tokio::test]
async fn metadata_and_table_representations() {
    let s = server().await;
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p", Some("n1"), &[("app", "web")]))
        .await
        .unwrap();
    let meta = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items[0].metadata.name.as_deref(), Some("p"));
    assert_eq!(pods.get_metadata("p").await.unwrap().labels()["app"], "web");
    let req = axum::http::Request::get("/api/v1/namespaces/default/pods")
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: Value = client.request(req).await.unwrap();
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(&cols[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "p");
    assert_eq!(table["rows"][0]["cells"][2], "Pending");
}

#[tokio::test]
async fn fault_latency_and_injected_errors() {
    let s = server().await;
    let pods: Api<Pod> = Api::namespaced(s.client().await, "default");
    let faults = s.faults();

    faults.set_latency(Duration::from_millis(300));
    let t = Instant::now();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    faults.set_latency(Duration::ZERO);
    // A latency far above any scheduling hiccup: a list that waited it out
    // was delayed by the fault, not by a loaded machine.
    faults.add_latency(FaultMatch::any().verb("create"), Duration::from_secs(30));
    let t = Instant::now();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "only creates are slow");
    faults.clear();

    faults.inject_errors(FaultMatch::any().verb("list").resource("pods"), 500, 1);
    let e = pods.list(&ListParams::default()).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (500, "InternalError"));
    pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(faults.injected_errors(), 1);

    faults.inject_errors(FaultMatch::any().resource("pods").name("x"), 404, 2);
    pods.create(&PostParams::default(), &pod("x", None, &[])).await.unwrap();
    assert_eq!(code(&pods.get("x").await.unwrap_err()), 404);
    assert_eq!(code(&pods.get("x").await.unwrap_err()), 404);
    assert!(pods.get("x").await.is_ok());
}

async fn pod_reflector(client: Client) -> (reflector::Store<Pod>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store::<Pod>();
    let api: Api<Pod> = Api::namespaced(client, "default");
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    (reader, task)
}

fn has(reader: &reflector::Store<Pod>, name: &str) -> bool {
    reader.state().iter().any(|p| p.name_any() == name)
}

#[tokio::test]
async fn dropped_watches_recover() {
    let s = server().await;
    let client = s.client().await;
    let (reader, task) = pod_reflector(client.clone()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod("one", None, &[]))
        .await
        .unwrap();
    assert!(eventually(WAIT, || async { has(&reader, "one") }).await);
    for round in 0..3 {
        s.faults().drop_watches();
        let name = format!("after-drop-{round}");
        pods.create(&PostParams::default(), &pod(&name, None, &[]))
            .await
            .unwrap();
        assert!(eventually(WAIT, || async { has(&reader, &name) }).await, "{name}");
    }
    task.abort();
}

#[tokio::test]
async fn server_down_and_up_on_the_same_port() {
    let s = server().await;
    let client = s.client().await;
    let (reader, task) = pod_reflector(client.clone()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("before", None, &[]))
        .await
        .unwrap();
    assert!(eventually(WAIT, || async { has(&reader, "before") }).await);
    let addrs = s.addresses().await;
    let url = s.https_url();

    s.go_down().await;
    assert!(!s.is_up().await);
    assert!(
        pods.list(&ListParams::default()).await.is_err(),
        "requests fail while down"
    );
    // State changes while down (in-process) survive.
    s.store().create_as(&pod("while-down", None, &[])).unwrap();

    s.come_up().await.unwrap();
    assert!(s.is_up().await);
    assert_eq!(s.addresses().await, addrs);
    assert_eq!(s.https_url(), url);
    assert!(
        eventually(WAIT, || async { pods.list(&ListParams::default()).await.is_ok() }).await,
        "the same client works again"
    );
    pods.create(&PostParams::default(), &pod("after", None, &[]))
        .await
        .unwrap();
    assert!(eventually(WAIT, || async { has(&reader, "after") && has(&reader, "while-down") }).await);
    assert!(has(&reader, "before"));
    // Idempotent.
    s.come_up().await.unwrap();
    task.abort();
    s.shutdown().await;
}

/// A new network namespace with loopback up, or `None` when this process may
/// not create one.
fn new_netns() -> Option<linux_ns::Netns> {
    let ns = linux_ns::Netns::unpinned().ok()?;
    let up = ns.command("ip").args(["link", "set", "lo", "up"]).status().ok()?;
    up.success().then_some(ns)
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &linux_ns::Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    ns.run(f).unwrap_or_else(|e| panic!("{e}"))
}

/// A blocking `GET` over plain HTTP; the raw response.
fn raw_get(addr: std::net::SocketAddr, path: &str, token: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)?;
    Ok(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_in_another_network_namespace_rebinds_there() {
    let Some(ns) = new_netns() else {
        if std::env::var("ISTIO_CNI_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("cannot create a network namespace (ISTIO_CNI_REQUIRE_PRIVILEGED=1)");
        }
        println!("SKIP: cannot create a network namespace");
        return;
    };
    let listener = in_netns(&ns, || std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let s = server_with(ApiServerOptions {
        http_listeners: vec![listener],
        ..Default::default()
    })
    .await;
    let token = s.admin_token();
    let get = {
        let ns = ns.clone();
        move || {
            let token = token.clone();
            in_netns(&ns, move || raw_get(addr, "/version", &token))
        }
    };
    let resp = tokio::task::spawn_blocking(get.clone()).await.unwrap().unwrap();
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("v1.33.0"), "{resp}");
    let https_port = s.https_url().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    if https_port != addr.port() {
        assert!(
            raw_get(addr, "/version", "x").is_err(),
            "not reachable from the root namespace"
        );
    }

    s.go_down().await;
    assert!(tokio::task::spawn_blocking(get.clone()).await.unwrap().is_err(), "down");
    s.come_up().await.unwrap();
    let resp = tokio::task::spawn_blocking(get).await.unwrap().unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "up again, inside the namespace: {resp}"
    );
    if https_port != addr.port() {
        assert!(
            raw_get(addr, "/version", "x").is_err(),
            "still not in the root namespace"
        );
    }
    // The HTTPS listener in this namespace came back too.
    let client = s.client().await;
    assert!(eventually(WAIT, || async { client.apiserver_version().await.is_ok() }).await);
}

#[tokio::test]
async fn streaming_list_watcher_and_metadata_watcher() {
    let s = server().await;
    let _controllers = controllers(&s).await;
    let client = s.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("first", &[])).await.unwrap();
    // sendInitialEvents=true: initial ADDED events end with an annotated bookmark.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let cfg = watcher::Config::default().streaming_lists();
    let stream = reflector(writer, watcher(cms.clone(), cfg)).default_backoff();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(WAIT, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    let names = || {
        let mut n: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        n.sort();
        n
    };
    assert_eq!(names(), ["first", "kube-root-ca.crt"]);
    cms.create(&PostParams::default(), &cm("second", &[])).await.unwrap();
    assert!(eventually(WAIT, || async { names().contains(&"second".to_string()) }).await);
    task.abort();

    // The metadata-only watcher (PartialObjectMetadata lists and watches).
    let meta: Api<kube::core::PartialObjectMeta<ConfigMap>> = Api::namespaced(client.clone(), "default");
    let events = watcher(meta, watcher::Config::default()).applied_objects().take(3);
    let mut seen: Vec<String> = tokio::time::timeout(WAIT, events.map(|o| o.unwrap().name_any()).collect::<Vec<_>>())
        .await
        .unwrap();
    seen.sort();
    assert_eq!(seen, ["first", "kube-root-ca.crt", "second"]);
}

#[tokio::test]
async fn malformed_requests_get_status_errors() {
    let s = server().await;
    let client = s.client().await;
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod("p", None, &[]))
        .await
        .unwrap();
    const JSON: &str = "application/json";
    // method, path, content type, body, the status wanted
    let cases: &[(&str, &str, &str, &str, u16)] = &[
        ("GET", "/api/v1/namespaces/default/widgets", JSON, "", 404),
        ("GET", "/api/v1/pods/p", JSON, "", 404),
        ("GET", "/api/v9/pods", JSON, "", 404),
        ("GET", "/openapi/v2", JSON, "", 404),
        ("GET", "/api/v1/pods?labelSelector=a%20in%20(", JSON, "", 400),
        ("GET", "/api/v1/pods?fieldSelector=nooperator", JSON, "", 400),
        ("GET", "/api/v1/pods?limit=lots", JSON, "", 400),
        ("GET", "/api/v1/pods?watch=maybe", JSON, "", 400),
        ("GET", "/api/v1/pods?watch=1&resourceVersion=abc", JSON, "", 400),
        ("GET", "/api/v1/pods?continue=%25%25", JSON, "", 400),
        ("GET", "/api/v1/pods?x=%zz", JSON, "", 400),
        ("POST", "/api/v1/namespaces/default/pods", JSON, "{not json", 400),
        ("POST", "/api/v1/namespaces/default/pods", JSON, "[1,2]", 400),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            JSON,
            "{\"metadata\":{\"name\":\"x\"}}",
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/vnd.kubernetes.protobuf",
            "k8s\0",
            415,
        ),
        ("POST", "/api/v1/namespaces/default/pods/p/log", JSON, "{}", 405),
        (
            "PUT",
            "/api/v1/namespaces/default/pods/p",
            JSON,
            "{\"metadata\":{\"name\":\"other\"}}",
            400,
        ),
        ("PATCH", "/api/v1/namespaces/default/pods/p", "text/plain", "{}", 415),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/p",
            "application/merge-patch+json",
            "[]",
            422,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/p",
            "application/json-patch+json",
            "{}",
            422,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/p",
            "application/strategic-merge-patch+json",
            "{\"$patch\":1}",
            422,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/missing",
            "application/merge-patch+json",
            "{}",
            404,
        ),
        ("DELETE", "/api/v1/namespaces/default/pods/p", JSON, "{bad", 400),
        ("OPTIONS", "/api/v1/namespaces/default/pods", JSON, "", 405),
        (
            "GET",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            JSON,
            "",
            405,
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            JSON,
            "{\"spec\":{}}",
            422,
        ),
        ("POST", "/api/v1/namespaces/default/pods/p/binding", JSON, "{}", 422),
    ];
    for &(method, uri, ct, body, want) in cases {
        let r = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("Content-Type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let what = format!("{method} {uri}");
        match client.request_text(r).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, want, "{what}: {status:?}"),
            other => panic!("{what}: expected HTTP {want}, got {other:?}"),
        }
    }
    // Still serving.
    assert!(Api::<Pod>::namespaced(client, "default").get("p").await.is_ok());
}

#[tokio::test]
async fn namespace_lifecycle_is_the_controllers_job() {
    let s = server().await;
    let client = s.client().await;
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.create(&pp, &namespace("doomed")).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    pods.create(&pp, &pod("p", None, &[])).await.unwrap();

    // Without controllers a deleted namespace stays Terminating with its
    // content, and takes nothing new.
    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    let doomed = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        doomed.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    assert!(doomed.metadata.deletion_timestamp.is_some());
    assert!(pods.get("p").await.is_ok());
    let e = pods.create(&pp, &pod("q", None, &[])).await.unwrap_err();
    assert_eq!((code(&e), reason(&e).as_str()), (403, "Forbidden"));
    let e = namespaces
        .delete("kube-system", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), 403);

    // The controllers empty and remove it, and populate new namespaces.
    let controllers = controllers(&s).await;
    let uid = doomed.uid().unwrap();
    wait_deleted(&namespaces, "doomed", &uid).await;
    assert_eq!(code(&pods.get("p").await.unwrap_err()), 404);
    namespaces.create(&pp, &namespace("fresh")).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "fresh");
    wait_for(sas, "default", |sa: Option<&ServiceAccount>| sa.is_some()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "fresh");
    let ca = wait_for(cms, "kube-root-ca.crt", |c: Option<&ConfigMap>| c.is_some()).await;
    assert_eq!(ca.and_then(|c| c.data).unwrap()["ca.crt"], s.ca_pem());
    // Stopped, they leave a deleted namespace Terminating again.
    controllers.shutdown().await;
    namespaces.delete("fresh", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = namespaces.get("fresh").await.unwrap();
    assert_eq!(fresh.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
}

/// Get, change and replace `name`, retrying when a concurrent writer (a
/// controller updating status) wins the race: the loop every client runs.
async fn replace_latest<K>(api: &Api<K>, name: &str, change: impl Fn(&mut K)) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    for _ in 0..20 {
        let mut obj = api.get(name).await.unwrap();
        change(&mut obj);
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(obj) => return obj,
            Err(e) if code(&e) == 409 => continue,
            Err(e) => panic!("replacing {name}: {e}"),
        }
    }
    panic!("replacing {name}: still conflicting after 20 attempts")
}
