//! Events as the controllers record them (`kubectl describe` and
//! `kubectl get events` show them): one `core/v1` Event per occurrence,
//! best effort (a lost event never stops a controller).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

/// How long one event may take to record.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A Normal (`warning: false`) or Warning event about `object`, from `component`.
pub(crate) async fn record(
    client: &kube::Client,
    object: &ObjectReference,
    warning: bool,
    reason: &str,
    message: &str,
    component: &str,
) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // Events about cluster-scoped objects (nodes) go to `default`, as Kubernetes does.
    let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", object.name.as_deref().unwrap_or("object"))),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: object.clone(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(component.into()),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    match tokio::time::timeout(TIMEOUT, api.create(&PostParams::default(), &event)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(reason, "recording an event: {e}"),
        Err(_) => tracing::warn!(reason, "recording an event: timed out"),
    }
}
