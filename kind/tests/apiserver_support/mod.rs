//! Helpers shared by the API server tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use istio_cni_kind::apiserver::{ApiServer, ApiServerOptions};
use istio_cni_kind::controllers::namespaces::ROOT_CA_CONFIGMAP;
use istio_cni_kind::controllers::{ControllerManager, ControllerOptions};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Node, Pod, PodSpec, ServiceAccount};
use kube::api::{Api, ObjectMeta};
use kube::runtime::wait::{Condition, await_condition};

/// A server with short bookmark and log-poll intervals.
pub async fn server() -> ApiServer {
    server_with(ApiServerOptions::default()).await
}

pub async fn server_with(mut opts: ApiServerOptions) -> ApiServer {
    opts.bookmark_interval = Duration::from_millis(200);
    opts.log_poll_interval = Duration::from_millis(50);
    ApiServer::start(opts).await.expect("start the API server")
}

/// The controllers (no scheduler) for `s`, started and caught up: every
/// system namespace has its `default` ServiceAccount and CA ConfigMap.
pub async fn controllers(s: &ApiServer) -> ControllerManager {
    let client = s.client().await;
    let opts = ControllerOptions {
        root_ca_pem: Some(s.ca_pem()),
        ..ControllerOptions::default()
    };
    let manager = ControllerManager::start(client.clone(), opts);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        wait_for(sas, "default", |sa: Option<&ServiceAccount>| sa.is_some()).await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        wait_for(cms, ROOT_CA_CONFIGMAP, |cm: Option<&ConfigMap>| cm.is_some()).await;
    }
    manager
}

/// Waits (at most 10 s, then fails the test) until object `name` of `api`
/// meets `cond`.
pub async fn wait_for<K>(api: Api<K>, name: &str, cond: impl Condition<K>) -> Option<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
{
    match tokio::time::timeout(Duration::from_secs(10), await_condition(api, name, cond)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => panic!("{name}: condition not met within 10 s"),
    }
}

/// Waits until the object `name` with `uid` is gone.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, uid: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
{
    wait_for(api.clone(), name, kube::runtime::conditions::is_deleted(uid)).await;
}

pub fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// A pod with one container `app`, optionally on a node.
pub fn pod(name: &str, node: Option<&str>, label_pairs: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: labels(label_pairs),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(str::to_string),
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An object of kind `K` with only its name set.
pub fn named<K: kube::Resource + Default>(name: &str) -> K {
    let mut object = K::default();
    object.meta_mut().name = Some(name.into());
    object
}

pub fn namespace(name: &str) -> Namespace {
    named(name)
}

pub fn node(name: &str) -> Node {
    named(name)
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The HTTP status code of a kube API error (panics on other errors).
pub fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The reason of a kube API error.
pub fn reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// kubectl against `s` as the holder of a token, through a kubeconfig
/// written by `ApiServer::write_kubeconfig` into its own scratch dir (where
/// tests also put their manifests). Gate the test on
/// `Need::Tool("kubectl")` first.
pub struct ServerKubectl {
    kubectl: testkit::Kubectl,
    pub dir: testkit::Scratch,
}

impl ServerKubectl {
    pub fn new(s: &ApiServer, token: &str, tag: &str) -> ServerKubectl {
        let dir = testkit::Scratch::new(&format!("apiserver-kubectl-{tag}"));
        let kubeconfig = dir.join("kubeconfig");
        s.write_kubeconfig(&kubeconfig, token).expect("writing the kubeconfig");
        let kubectl = testkit::Kubectl::new(tag, &kubeconfig, &dir).expect("kubectl on PATH (the test is gated on it)");
        ServerKubectl { kubectl, dir }
    }

    /// Runs kubectl off the runtime's workers (the server answers on them).
    pub async fn run(&self, args: &[&str]) -> testkit::Run {
        let kubectl = self.kubectl.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || kubectl.run(&args))
            .await
            .expect("the kubectl thread")
    }

    /// stdout, failing the test with the whole run on a non-zero exit.
    pub async fn ok(&self, args: &[&str]) -> String {
        self.run(args).await.ok()
    }
}
