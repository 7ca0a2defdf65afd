//! The run loop the workload controllers (ReplicaSets, Deployments,
//! DaemonSets) share: a `kube::runtime::Controller` whose passes get the
//! client, fail with a [`PassError`] naming the object and the step, and are
//! retried shortly after a failure (logged).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// A failed pass is tried again after this.
const RETRY: Duration = Duration::from_millis(300);

/// Why a pass over an object did not finish (it is retried).
#[derive(Debug, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {action}: {source}")]
pub struct PassError {
    kind: String,
    action: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// What every pass gets.
pub(crate) struct Ctx {
    pub client: kube::Client,
}

/// The error for `action` on `obj` failing, as a `map_err` argument.
pub(crate) fn failed<K>(obj: &K, action: &'static str) -> impl FnOnce(kube::Error) -> PassError + use<K>
where
    K: Resource<DynamicType = ()>,
{
    let (kind, namespace, name) = (
        K::kind(&()).to_lowercase(),
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    );
    move |source| PassError {
        kind,
        action,
        namespace,
        name,
        source,
    }
}

/// Runs `controller`'s passes (`reconcile`) until cancelled (dropped).
pub(crate) async fn run<K, F>(
    controller: Controller<K>,
    client: kube::Client,
    reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> F,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Future<Output = Result<Action, PassError>> + Send + 'static,
{
    controller
        .run(reconcile, retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

fn retry<K: Resource<DynamicType = ()>>(obj: Arc<K>, e: &PassError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(object = %obj.name_any(), "{} controller: {e}", K::kind(&()).to_lowercase());
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::ObjectMeta;

    #[test]
    fn a_failed_pass_names_the_kind_the_object_and_the_step() {
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        };
        let source = kube::Error::Api(Box::new(
            kube::core::Status::failure("too old", "Expired").with_code(410),
        ));
        let e = failed(&d, "listing replicasets")(source);
        assert!(
            e.to_string().starts_with("deployment shop/web: listing replicasets: "),
            "{e}"
        );
    }
}
