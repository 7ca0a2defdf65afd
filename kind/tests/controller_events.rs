//! Controller events are aggregated as kubelet's are: the same event about
//! the same object again counts on the Event already written (`count`,
//! `lastTimestamp`) instead of adding another. Here the scheduler's
//! `FailedScheduling`: its verdict for a pod changes when a node joins, and
//! comes back when the node leaves. Needs no privileges (an API server and
//! the controllers, no nodes' processes).

mod apiserver_support;

use std::time::Duration;

use apiserver_support::{labels, node, pod, server};
use istio_cni_kind::controllers::{ControllerManager, ControllerOptions};
use k8s_openapi::api::core::v1::{Event, Node, Pod, PodSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// The FailedScheduling events about pod `name`.
async fn failed_scheduling(events: &Api<Event>, name: &str) -> Vec<Event> {
    let list = events.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

/// Waits until the pod's FailedScheduling events satisfy `check`; the last seen.
async fn wait_events(events: &Api<Event>, name: &str, check: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = failed_scheduling(events, name).await;
        if check(&seen) {
            return seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "events about {name}: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn message(e: &Event) -> &str {
    e.message.as_deref().unwrap_or_default()
}

#[tokio::test]
async fn a_repeated_scheduling_failure_counts_on_the_first_event() {
    let s = server().await;
    let client = s.client().await;
    let opts = ControllerOptions {
        scheduler: true,
        ..ControllerOptions::default()
    };
    let manager = ControllerManager::start(client.clone(), opts);
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    nodes.create(&pp, &node("a")).await.unwrap();
    let mut picky = pod("picky", None, &[]);
    picky.spec = Some(PodSpec {
        node_selector: labels(&[("disk", "ssd")]),
        ..picky.spec.unwrap()
    });
    pods.create(&pp, &picky).await.unwrap();
    let one_node = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.";
    wait_events(&events, "picky", |e| e.iter().any(|e| message(e) == one_node)).await;

    // Another node: another verdict, another Event.
    nodes.create(&pp, &node("b")).await.unwrap();
    let two_nodes = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.";
    wait_events(&events, "picky", |e| e.iter().any(|e| message(e) == two_nodes)).await;

    // It leaves: the first verdict again, counted on its Event.
    nodes.delete("b", &DeleteParams::default()).await.unwrap();
    let seen = wait_events(&events, "picky", |e| {
        e.iter().any(|e| message(e) == one_node && e.count == Some(2))
    })
    .await;
    let first: Vec<&Event> = seen.iter().filter(|e| message(e) == one_node).collect();
    assert_eq!(first.len(), 1, "one Event for the repeated verdict: {seen:#?}");
    let (at_first, at_last) = (first[0].first_timestamp.as_ref(), first[0].last_timestamp.as_ref());
    assert!(at_first.is_some() && at_last >= at_first, "{:#?}", first[0]);
    assert_eq!(seen.len(), 2, "{seen:#?}");
    manager.shutdown().await;
}
