//! The embedded API server against the real kubectl for the requests it
//! sends as protobuf (kubectl ≥ 1.32 posts built-in kinds as
//! `application/vnd.kubernetes.protobuf`), for DeleteOptions and for
//! evictions (`kubectl drain`).

mod apiserver_support;

use apiserver_support::{ServerKubectl, code, controllers, node, pod, server, wait_for};
use istio_cni_kind::apiserver::ApiServer;
use istio_cni_kind::controllers::ControllerManager;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, EvictParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use testkit::Need;

async fn create_pod(client: &Client, ns: &str, name: &str, node_name: &str) -> Pod {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod(name, Some(node_name), &[("app", name)]))
        .await
        .unwrap()
}

/// Posts a policy/v1 Eviction of `name` with `options` as its deleteOptions
/// (kube-rs writes them under a key the API server ignores).
async fn evict(client: &Client, name: &str, options: Value) -> Result<String, kube::Error> {
    let eviction = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": "default"},
        "deleteOptions": options,
    });
    let req = axum::http::Request::post(format!("/api/v1/namespaces/default/pods/{name}/eviction"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&eviction).unwrap())
        .unwrap();
    client.request_text(req).await
}

async fn gone(client: &Client, ns: &str, name: &str) -> bool {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(pods, name, |p: Option<&Pod>| p.is_none()).await;
    true
}

/// A server with its controllers running, an admin client and an admin
/// kubectl (`tag` names its scratch dir): what the kubectl tests start from.
async fn with_kubectl(tag: &str) -> (ApiServer, ControllerManager, Client, ServerKubectl) {
    let s = server().await;
    let controllers = controllers(&s).await;
    let client = s.client().await;
    let k = ServerKubectl::new(&s, &s.admin_token(), tag);
    (s, controllers, client, k)
}

/// `args` for kubectl in the namespace the kubectl test works in.
fn in_team<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [&["-n", "team"][..], args].concat()
}

/// The API of `K` in that namespace.
fn team_api<K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>>(client: &Client) -> Api<K> {
    Api::namespaced(client.clone(), "team")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_built_in_kinds_sent_as_protobuf() {
    testkit::gate_or_return!(&[Need::Tool("kubectl")]);
    let (_s, _controllers, client, k) = with_kubectl("create").await;

    k.ok(&["create", "namespace", "team"]).await;
    let ns = Api::<Namespace>::all(client.clone()).get("team").await.unwrap();
    assert!(ns.metadata.creation_timestamp.is_some());

    k.ok(&in_team(&["create", "configmap", "settings", "--from-literal=a=1"]))
        .await;
    let cm = team_api::<ConfigMap>(&client).get("settings").await.unwrap();
    assert_eq!(cm.data.unwrap()["a"], "1");

    k.ok(&in_team(&[
        "create",
        "secret",
        "generic",
        "token",
        "--from-literal=key=value",
    ]))
    .await;
    let secret = team_api::<Secret>(&client).get("token").await.unwrap();
    assert_eq!(secret.data.unwrap()["key"].0, b"value");

    k.ok(&in_team(&["create", "serviceaccount", "agent"])).await;
    team_api::<ServiceAccount>(&client).get("agent").await.unwrap();

    // kubectl debug node/... posts a whole Pod (host namespaces, a hostPath
    // volume of the node's root, a toleration for everything).
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node("node-1"))
        .await
        .unwrap();
    k.ok(&in_team(&[
        "debug",
        "node/node-1",
        "--image=busybox:1.36",
        "--",
        "true",
    ]))
    .await;
    let pods = team_api::<Pod>(&client).list(&Default::default()).await.unwrap();
    let debug = pods.items.first().expect("the debug pod");
    assert!(debug.name_any().starts_with("node-debugger-node-1-"), "{debug:?}");
    let spec = debug.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node-1"));
    assert_eq!(spec.host_pid, Some(true));
    let root = spec
        .volumes
        .as_ref()
        .and_then(|v| v.first())
        .and_then(|v| v.host_path.as_ref());
    assert_eq!(root.map(|h| h.path.as_str()), Some("/"), "{spec:?}");
    assert_eq!(spec.containers[0].command.as_deref(), Some(&["true".to_string()][..]));

    // Written objects read back through kubectl too.
    let out = k
        .ok(&in_team(&["get", "configmap", "settings", "-o", "jsonpath={.data.a}"]))
        .await;
    assert_eq!(out, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_and_drain_with_delete_options_and_evictions() {
    testkit::gate_or_return!(&[Need::Tool("kubectl")]);
    let (_s, _controllers, client, k) = with_kubectl("drain").await;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node("node-1"))
        .await
        .unwrap();

    create_pod(&client, "default", "web", "node-1").await;
    k.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]).await;
    assert!(gone(&client, "default", "web").await);

    // kubectl drain: cordon, then evict every pod of the node (grace 0: no
    // kubelet runs here to finish a graceful deletion).
    create_pod(&client, "default", "a", "node-1").await;
    create_pod(&client, "default", "b", "node-1").await;
    let out = k
        .ok(&[
            "drain",
            "node-1",
            "--force",
            "--ignore-daemonsets",
            "--grace-period=0",
            "--timeout=60s",
        ])
        .await;
    assert!(out.contains("evicted"), "{out}");
    assert!(gone(&client, "default", "a").await && gone(&client, "default", "b").await);
    let n = Api::<Node>::all(client.clone()).get("node-1").await.unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
}

/// A protobuf body of a kind the server does not read: 415 naming the kind;
/// a corrupt one: 400; neither changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_bodies_the_server_cannot_read() {
    use prost::Message;
    let s = server().await;
    let client = s.client().await;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolume".into()),
        }),
        raw: Some(k8s_pb::api::core::v1::PersistentVolume::default().encode_to_vec()),
        ..Default::default()
    };
    let mut body = b"k8s\0".to_vec();
    unknown.encode(&mut body).unwrap();
    let post = |body: Vec<u8>| {
        axum::http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(body)
            .unwrap()
    };
    let e = client.request_text(post(body.clone())).await.unwrap_err();
    assert_eq!(code(&e), 415, "{e}");
    assert!(e.to_string().contains("\"PersistentVolume\""), "{e}");
    body.truncate(body.len() - 1);
    body.push(0xff);
    let e = client.request_text(post(body)).await.unwrap_err();
    assert_eq!(code(&e), 400, "{e}");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    assert!(cms.list(&Default::default()).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_and_dry_run_of_deletes_and_evictions() {
    let s = server().await;
    let client = s.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = create_pod(&client, "default", "p", "node-1").await;

    let stale = |uid: &str, rv: Option<&str>| Preconditions {
        uid: Some(uid.into()),
        resource_version: rv.map(str::to_string),
    };
    // A wrong UID or resourceVersion: 409, for deletes and evictions alike.
    let dp = DeleteParams {
        preconditions: Some(stale("not-the-uid", None)),
        ..DeleteParams::default()
    };
    let e = pods.delete("p", &dp).await.unwrap_err();
    assert_eq!(code(&e), 409, "{e}");
    let e = evict(&client, "p", json!({"preconditions": {"resourceVersion": "999999"}}))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 409, "{e}");

    // Dry runs leave the pod.
    pods.delete("p", &DeleteParams::default().dry_run()).await.unwrap();
    evict(&client, "p", json!({"dryRun": ["All"]})).await.unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_some());

    // An unknown propagation policy is invalid, naming the value.
    let req = axum::http::Request::delete("/api/v1/namespaces/default/pods/p")
        .header("content-type", "application/json")
        .body(br#"{"propagationPolicy":"Sideways"}"#.to_vec())
        .unwrap();
    let e = client.request_text(req).await.unwrap_err();
    assert_eq!(code(&e), 422, "{e}");
    assert!(e.to_string().contains("Sideways"), "{e}");

    // Evicting with matching preconditions deletes the pod.
    let current = json!({"uid": p.uid(), "resourceVersion": p.resource_version()});
    evict(&client, "p", json!({"preconditions": current, "gracePeriodSeconds": 0}))
        .await
        .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
    let e = pods.evict("p", &EvictParams::default()).await.unwrap_err();
    assert_eq!(code(&e), 404, "{e}");
    // The Eviction must name the pod of the URL.
    create_pod(&client, "default", "q", "node-1").await;
    let req = axum::http::Request::post("/api/v1/namespaces/default/pods/q/eviction")
        .header("content-type", "application/json")
        .body(br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"other"}}"#.to_vec())
        .unwrap();
    let e = client.request_text(req).await.unwrap_err();
    assert_eq!(code(&e), 400, "{e}");
    assert!(pods.get_opt("q").await.unwrap().is_some());
    // A plain eviction is a graceful delete: the pod is marked for its
    // kubelet (none runs here) with the spec's grace period.
    pods.evict("q", &EvictParams::default()).await.unwrap();
    let q = pods.get_opt("q").await.unwrap().unwrap();
    assert!(q.metadata.deletion_timestamp.is_some());
    assert_eq!(q.metadata.deletion_grace_period_seconds, Some(30));
}
