//! A trivial scheduler: binds each pod that names no node to the node with
//! the fewest pods bound so far (through the `binding` subresource, as
//! kube-scheduler does).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

/// Binds unscheduled pods to `nodes` until cancelled (dropped).
pub(crate) async fn run(client: kube::Client, nodes: Vec<String>) {
    let all: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut events = watcher(all, config).boxed();
    let mut load: HashMap<String, usize> = nodes.iter().map(|n| (n.clone(), 0)).collect();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("scheduler watch: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
        {
            continue;
        }
        let Some(node) = load
            .iter()
            .min_by_key(|(n, c)| (**c, (*n).clone()))
            .map(|(n, _)| n.clone())
        else {
            continue;
        };
        let (ns, name) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.clone()),
                api_version: Some("v1".into()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pp = PostParams::default();
        let call = api.create_subresource::<Binding, serde_json::Value>("binding", &name, &pp, &binding);
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(_)) => {
                crate::kubelet::events::scheduled(client.clone(), &pod, &node);
                *load.entry(node).or_default() += 1
            }
            Ok(Err(e)) => tracing::warn!(pod = %format!("{ns}/{name}"), "binding to {node}: {e}"),
            Err(_) => tracing::warn!(pod = %format!("{ns}/{name}"), "binding to {node}: timed out"),
        }
    }
}
