//! Namespace lifecycle, as kube-controller-manager's service-account,
//! root-CA publisher and namespace controllers do it: an active namespace
//! gets its `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap; a
//! terminating one is emptied (every namespaced resource the server's
//! discovery lists as deletable) and then finalized, which removes it.
//! What takes time to go (pods terminating within their grace period,
//! objects waiting for finalizers) is looked at again until it is gone.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// The ConfigMap with the cluster CA every namespace gets.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// Why one pass over a namespace did not finish (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("{action} in namespace {namespace}: {source}")]
    Api {
        action: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("discovering the resources to delete from namespace {namespace}: {source}")]
    Discovery {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// How often a namespace whose content is still going away is looked at.
const RECHECK: Duration = Duration::from_millis(500);

struct Ctx {
    client: kube::Client,
    root_ca_pem: Option<String>,
}

/// Runs the namespace controller until cancelled (dropped).
pub(crate) async fn run(client: kube::Client, root_ca_pem: Option<String>) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, root_ca_pem });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, retry, ctx)
        .for_each(|_| async {})
        .await;
}

fn retry(ns: Arc<Namespace>, e: &NamespaceError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), "namespace controller: {e}");
    Action::requeue(Duration::from_millis(200))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, NamespaceError> {
    let name = ns.name_any();
    if ns.meta().deletion_timestamp.is_some() {
        if let Some(left) = empty(&ctx.client, &name).await? {
            tracing::debug!(namespace = %name, "waiting for its {left} to go");
            return Ok(Action::requeue(RECHECK));
        }
        finalize(&ctx.client, &ns).await?;
    } else {
        populate(&ctx, &name).await?;
    }
    Ok(Action::await_change())
}

/// Creates `obj` unless it exists (or the namespace started terminating meanwhile).
async fn create_missing<K>(api: Api<K>, obj: &K, namespace: &str, action: &'static str) -> Result<(), NamespaceError>
where
    K: Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
        Err(source) => Err(NamespaceError::Api {
            action,
            namespace: namespace.to_string(),
            source,
        }),
    }
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    }
}

async fn populate(ctx: &Ctx, ns: &str) -> Result<(), NamespaceError> {
    let sa = ServiceAccount {
        metadata: meta("default", ns),
        ..ServiceAccount::default()
    };
    let sas = Api::namespaced(ctx.client.clone(), ns);
    create_missing(sas, &sa, ns, "creating the default service account").await?;
    if let Some(ca) = &ctx.root_ca_pem {
        let cm = ConfigMap {
            metadata: meta(ROOT_CA_CONFIGMAP, ns),
            data: Some([("ca.crt".to_string(), ca.clone())].into()),
            ..ConfigMap::default()
        };
        let cms = Api::namespaced(ctx.client.clone(), ns);
        create_missing(cms, &cm, ns, "publishing the root CA").await?;
    }
    Ok(())
}

/// Deletes everything in `ns`; the first resource with objects still
/// there (terminating), if any.
async fn empty(client: &kube::Client, ns: &str) -> Result<Option<String>, NamespaceError> {
    let api_err = |action| {
        move |source| NamespaceError::Api {
            action,
            namespace: ns.to_string(),
            source,
        }
    };
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|source| NamespaceError::Discovery {
            namespace: ns.to_string(),
            source,
        })?;
    let mut waiting = None;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::DELETE_COLLECTION) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            api.delete_collection(&DeleteParams::default(), &ListParams::default())
                .await
                .map_err(api_err("deleting the content"))?;
            let left = api
                .list_metadata(&ListParams::default().limit(1))
                .await
                .map_err(api_err("listing what is left"))?;
            if !left.items.is_empty() && waiting.is_none() {
                waiting = Some(ar.plural.clone());
            }
        }
    }
    Ok(waiting)
}

/// Drops [`FINALIZER`] through `namespaces/<name>/finalize`; the server
/// removes the namespace once no finalizer is left.
async fn finalize(client: &kube::Client, ns: &Namespace) -> Result<(), NamespaceError> {
    let name = ns.name_any();
    let mut next = ns.clone();
    let spec = next.spec.get_or_insert_default();
    let finalizers = spec.finalizers.get_or_insert_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    finalizers.retain(|f| f != FINALIZER);
    let api: Api<Namespace> = Api::all(client.clone());
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &next)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(NamespaceError::Api {
            action: "finalizing",
            namespace: name,
            source,
        }),
    }
}
