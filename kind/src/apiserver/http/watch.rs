//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events in a
//! chunked `application/json` body.
//!
//! A watch from resourceVersion `N` replays the resource's history after `N`
//! (`410 Expired` as an ERROR event when `N` is older than the history) and
//! then follows new events; a watch without a version (or `0`) first sends
//! the current objects as ADDED. Events are filtered by namespace and
//! selectors; an object that moves into or out of the selection is sent as
//! ADDED or DELETED. With `allowWatchBookmarks`, BOOKMARK events are sent
//! periodically and just before `timeoutSeconds` ends the stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::apiserver::http::render::{self, Repr};
use crate::apiserver::registry::resources::{self, ResourceId};
use crate::apiserver::registry::selectors::Selectors;
use crate::apiserver::registry::{Event, EventType, Store};
use crate::apiserver::status::ApiError;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the current state; `initial`: send the current objects as ADDED.
    Now { initial: bool },
    /// After this resourceVersion.
    After(u64),
}

/// A watch request.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub res: ResourceId,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    pub start: Start,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial ADDED events with a bookmark
    /// annotated `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    pub timeout: Option<Duration>,
    pub bookmark_interval: Duration,
    pub repr: Repr,
}

type Chunk = Result<Bytes, std::io::Error>;

/// Starts a watch; returns the receiving end of its body.
pub fn start(store: Store, drops: watch::Receiver<u64>, spec: WatchSpec) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(store, drops, spec, tx));
    rx
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    if serde_json::to_writer(&mut out, object).is_err() {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// An event line for `obj` in the watch's representation (full objects are
/// serialized in place, without a copy).
fn event_line(kind: &str, info: &resources::ResourceInfo, obj: &Arc<Value>, repr: Repr) -> Bytes {
    match repr {
        Repr::Full => line(kind, obj),
        _ => line(kind, &render::object(info, obj, repr)),
    }
}

struct Sender {
    tx: mpsc::Sender<Chunk>,
}

impl Sender {
    /// False when the client has gone.
    async fn send(&self, b: Bytes) -> bool {
        self.tx.send(Ok(b)).await.is_ok()
    }

    async fn error(&self, e: &ApiError) {
        let _ = self.send(line("ERROR", &e.to_status())).await;
    }
}

fn bookmark(spec: &WatchSpec, rv: u64, initial_end: bool) -> Value {
    let info = resources::info(spec.res);
    let (kind, api_version) = match spec.repr {
        Repr::Full => (info.kind.to_string(), info.api_version()),
        Repr::Metadata | Repr::Table(_) => ("PartialObjectMetadata".to_string(), "meta.k8s.io/v1".to_string()),
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": meta})
}

fn selected(spec: &WatchSpec, obj: &Value) -> bool {
    if let Some(ns) = &spec.namespace
        && crate::apiserver::registry::namespace_of(obj) != ns
    {
        return false;
    }
    spec.selectors.matches(obj)
}

/// The event a filtered watch sees for a store event, if any.
fn view<'a>(spec: &WatchSpec, ev: &'a Event) -> Option<(&'static str, &'a Arc<Value>)> {
    let now = selected(spec, &ev.object);
    match ev.kind {
        EventType::Added | EventType::Deleted => now.then_some((ev.kind.as_str(), &ev.object)),
        EventType::Modified => {
            let before = ev.old.as_ref().is_some_and(|o| selected(spec, o));
            match (before, now) {
                (true, true) => Some(("MODIFIED", &ev.object)),
                (false, true) => Some(("ADDED", &ev.object)),
                (true, false) => Some(("DELETED", &ev.object)),
                (false, false) => None,
            }
        }
    }
}

async fn run(store: Store, mut drops: watch::Receiver<u64>, spec: WatchSpec, tx: mpsc::Sender<Chunk>) {
    let out = Sender { tx };
    let info = resources::info(spec.res);
    let mut notify = store.subscribe(spec.res);
    notify.borrow_and_update();
    drops.borrow_and_update();
    let mut cursor = match spec.start {
        Start::Now { initial } => {
            let page = match store.list(spec.res, spec.namespace.as_deref(), &spec.selectors, None, None) {
                Ok(p) => p,
                Err(e) => return out.error(&e).await,
            };
            if initial {
                for obj in &page.items {
                    if !out.send(event_line("ADDED", info, obj, spec.repr)).await {
                        return;
                    }
                }
            }
            if spec.initial_events_end
                && spec.bookmarks
                && !out
                    .send(line("BOOKMARK", &bookmark(&spec, page.resource_version, true)))
                    .await
            {
                return;
            }
            page.resource_version
        }
        Start::After(rv) => {
            if let Err(e) = store.check_watchable(spec.res, rv) {
                return out.error(&e).await;
            }
            rv
        }
    };
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let until_deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(until_deadline);
    let interval = spec.bookmark_interval.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drops_alive = true;
    loop {
        match store.events_after(spec.res, cursor) {
            Err(e) => return out.error(&e).await,
            Ok(events) => {
                for ev in events {
                    cursor = ev.rv;
                    if let Some((kind, obj)) = view(&spec, &ev)
                        && !out.send(event_line(kind, info, obj, spec.repr)).await
                    {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            changed = notify.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = &mut until_deadline => {
                if spec.bookmarks
                    && let Some(rv) = store.bookmark_rv(spec.res, cursor)
                {
                    let _ = out.send(line("BOOKMARK", &bookmark(&spec, rv, false))).await;
                }
                return;
            }
            _ = ticker.tick(), if spec.bookmarks => {
                if let Some(rv) = store.bookmark_rv(spec.res, cursor) {
                    cursor = rv;
                    if !out.send(line("BOOKMARK", &bookmark(&spec, rv, false))).await {
                        return;
                    }
                }
            }
            dropped = drops.changed(), if drops_alive => {
                if dropped.is_err() {
                    // The fault handle is gone: nothing can drop us any more.
                    drops_alive = false;
                    continue;
                }
                // Cut the stream: an error makes the server abort the body
                // without the terminating chunk.
                let _ = out.tx.send(Err(std::io::Error::other("watch dropped by fault injection"))).await;
                return;
            }
            () = out.tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::StoreOptions;
    use crate::apiserver::registry::resources::ids;
    use crate::apiserver::registry::selectors::LabelSelector;

    fn spec(res: ResourceId, start: Start) -> WatchSpec {
        WatchSpec {
            res,
            namespace: None,
            selectors: Selectors::default(),
            start,
            bookmarks: true,
            initial_events_end: false,
            timeout: Some(Duration::from_millis(300)),
            bookmark_interval: Duration::from_millis(100),
            repr: Repr::Full,
        }
    }

    async fn collect(mut rx: mpsc::Receiver<Chunk>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(Ok(b)) = rx.recv().await {
            out.push(serde_json::from_slice(&b).unwrap());
        }
        out
    }

    fn node(name: &str, label: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"l": label}}})
    }

    #[tokio::test]
    async fn replays_after_version_then_bookmarks_and_times_out() {
        let store = Store::new(StoreOptions::default());
        store.create(ids::NODES, "", node("a", "x"), false).unwrap();
        let after = store.resource_version();
        store.create(ids::NODES, "", node("b", "x"), false).unwrap();
        let rx = start(
            store.clone(),
            watch::channel(0).1,
            spec(ids::NODES, Start::After(after)),
        );
        let s2 = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s2.create(ids::NODES, "", node("c", "x"), false).unwrap();
        });
        let events = collect(rx).await;
        let kinds: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(&kinds[..2], ["ADDED", "ADDED"]);
        assert_eq!(events[0]["object"]["metadata"]["name"], "b");
        assert_eq!(events[1]["object"]["metadata"]["name"], "c");
        assert!(
            kinds[2..].iter().all(|k| k == "BOOKMARK") && kinds.len() >= 3,
            "{kinds:?}"
        );
        let last = events.last().unwrap();
        assert_eq!(
            last["object"]["metadata"]["resourceVersion"],
            store.resource_version().to_string()
        );
        assert_eq!(last["object"]["kind"], "Node");
    }

    #[tokio::test]
    async fn initial_state_and_selector_transitions() {
        let store = Store::new(StoreOptions::default());
        store.create(ids::NODES, "", node("a", "x"), false).unwrap();
        store.create(ids::NODES, "", node("b", "y"), false).unwrap();
        let mut sp = spec(ids::NODES, Start::Now { initial: true });
        sp.selectors.labels = LabelSelector::parse("l=x").unwrap();
        sp.bookmarks = false;
        sp.initial_events_end = true;
        let rx = start(store.clone(), watch::channel(0).1, sp);
        let s2 = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let relabel = |name: &str, l: &str| {
                s2.modify(
                    ids::NODES,
                    "",
                    name,
                    crate::apiserver::registry::Part::Main,
                    false,
                    |o| {
                        let mut o = o.clone();
                        o["metadata"]["labels"]["l"] = json!(l);
                        Ok(o)
                    },
                )
                .unwrap();
            };
            relabel("b", "x"); // moves in: ADDED
            relabel("a", "z"); // moves out: DELETED
            relabel("a", "w"); // stays out: nothing
        });
        let events = collect(rx).await;
        let got: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().into(),
                    e["object"]["metadata"]["name"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want = [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[tokio::test]
    async fn expired_version_is_an_error_event() {
        let store = Store::new(StoreOptions { watch_history: 2 });
        let first = store.resource_version();
        for i in 0..4 {
            store
                .create(ids::NODES, "", node(&format!("n{i}"), "x"), false)
                .unwrap();
        }
        let events = collect(start(store, watch::channel(0).1, spec(ids::NODES, Start::After(first)))).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "ERROR");
        assert_eq!(events[0]["object"]["code"], 410);
        assert_eq!(events[0]["object"]["reason"], "Expired");
    }

    #[tokio::test]
    async fn dropped_watches_end_with_an_error() {
        let store = Store::new(StoreOptions::default());
        let (drop_tx, drop_rx) = watch::channel(0u64);
        let mut sp = spec(ids::NODES, Start::Now { initial: false });
        sp.timeout = None;
        let mut rx = start(store, drop_rx, sp);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop_tx.send_modify(|g| *g += 1);
        let mut saw_error = false;
        while let Some(chunk) = rx.recv().await {
            if chunk.is_err() {
                saw_error = true;
            }
        }
        assert!(saw_error);
    }
}
