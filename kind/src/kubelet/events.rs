//! Kubernetes Events as client-go's recorder writes them for kubelet: a
//! repeat of the same event (same involved object, type, reason and
//! message) increments `count` and `lastTimestamp` of the Event already
//! written instead of creating another, so `kubectl describe` shows
//! `(x12 over 1m)`. Writes that cannot reach the API server are retried in
//! the background for about a minute; the caller goes on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// Every API call is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// An event the API server could not be reached for is tried again this
/// often, this many times (about a minute, as kubelet's recorder does).
const RETRY: Duration = Duration::from_secs(2);
const RETRIES: u32 = 30;
/// Distinct events remembered per recorder (the oldest is forgotten first;
/// a forgotten event that repeats starts a new Event).
const REMEMBERED: usize = 256;

/// What makes two events "the same" for aggregation (the involved object
/// and source are the recorder's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// The write a recorded event needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new Event object.
    Create { name: String },
    /// The Event `name` seen before, now at `count`.
    Update { name: String, count: i32, first: Timestamp },
}

/// The memory of events written so far (pure).
#[derive(Debug, Default)]
pub struct Aggregator {
    seen: HashMap<Key, Seen>,
    order: u64,
}

#[derive(Debug)]
struct Seen {
    name: String,
    count: i32,
    first: Timestamp,
    order: u64,
}

impl Aggregator {
    /// The write for `key` recorded at `now`; `name` names a new Event.
    pub fn record(&mut self, key: Key, now: Timestamp, name: impl FnOnce() -> String) -> Write {
        self.order += 1;
        if let Some(seen) = self.seen.get_mut(&key) {
            seen.count = seen.count.saturating_add(1);
            seen.order = self.order;
            return Write::Update {
                name: seen.name.clone(),
                count: seen.count,
                first: seen.first,
            };
        }
        if self.seen.len() >= REMEMBERED
            && let Some(oldest) = self.seen.iter().min_by_key(|(_, s)| s.order).map(|(k, _)| k.clone())
        {
            self.seen.remove(&oldest);
        }
        let name = name();
        self.seen.insert(
            key,
            Seen {
                name: name.clone(),
                count: 1,
                first: now,
                order: self.order,
            },
        );
        Write::Create { name }
    }
}

/// Records the events of one object.
pub struct Recorder {
    api: Api<Event>,
    involved: ObjectReference,
    source: EventSource,
    seen: Mutex<Aggregator>,
}

/// The `involvedObject` of an event about `pod`.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

impl Recorder {
    /// Events about `involved` (in its namespace) from `component` on `host`.
    pub fn new(client: kube::Client, involved: ObjectReference, component: &str, host: Option<&str>) -> Recorder {
        let ns = involved.namespace.clone().unwrap_or_else(|| "default".into());
        Recorder {
            api: Api::namespaced(client, &ns),
            involved,
            source: EventSource {
                component: Some(component.into()),
                host: host.map(str::to_string),
            },
            seen: Mutex::new(Aggregator::default()),
        }
    }

    /// Records an event: creates it, or counts a repeat on the existing one.
    pub async fn record(&self, warning: bool, reason: &str, message: &str) {
        let now = Timestamp::now();
        let key = Key {
            warning,
            reason: reason.into(),
            message: message.into(),
        };
        let object = self.involved.name.clone().unwrap_or_default();
        let write = match self.seen.lock() {
            Ok(mut seen) => seen.record(key, now, || format!("{object}.{:x}", now.as_nanosecond())),
            Err(_) => return,
        };
        let event = self.event(&write, warning, reason, message, now);
        let Err(first) = deliver(&self.api, &write, &event).await else {
            return;
        };
        // Like kubelet's recorder, keep an event through an API outage (its
        // cause is often what the event says); the caller goes on.
        let (api, reason) = (self.api.clone(), reason.to_string());
        tokio::spawn(async move {
            let mut last = first;
            for _ in 0..RETRIES {
                tokio::time::sleep(RETRY).await;
                match deliver(&api, &write, &event).await {
                    Ok(()) => return,
                    Err(e) => last = e,
                }
            }
            tracing::warn!(%object, "recording event {reason}: {last}");
        });
    }

    fn event(&self, write: &Write, warning: bool, reason: &str, message: &str, now: Timestamp) -> Event {
        let (name, count, first) = match write {
            Write::Create { name } => (name.clone(), 1, now),
            Write::Update { name, count, first } => (name.clone(), *count, *first),
        };
        let component = self.source.component.clone();
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: self.involved.namespace.clone(),
                ..Default::default()
            },
            involved_object: self.involved.clone(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(self.source.clone()),
            first_timestamp: Some(Time(first)),
            last_timestamp: Some(Time(now)),
            count: Some(count),
            reporting_component: component,
            reporting_instance: self.source.host.clone(),
            ..Default::default()
        }
    }
}

/// Why an event could not reach the API server (worth retrying).
#[derive(Debug, thiserror::Error)]
enum Unreachable {
    #[error("{0}")]
    Client(#[source] kube::Error),
    #[error("timed out")]
    TimedOut,
}

/// Writes `event`: a create, or a patch of count and lastTimestamp (a
/// create when the Event is gone, a patch when a create finds it exists).
/// `Ok` also when the server refused it (retrying would not change its
/// answer, so that is only logged), `Err` when it could not be reached.
async fn deliver(api: &Api<Event>, write: &Write, event: &Event) -> Result<(), Unreachable> {
    let create = || async { bounded(api.create(&PostParams::default(), event)).await };
    let patch = |name: String| async move {
        let body = serde_json::json!({
            "count": event.count,
            "lastTimestamp": event.last_timestamp,
            "message": event.message,
        });
        bounded(api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))).await
    };
    let result = match write {
        Write::Create { name } => match create().await {
            Err(Some(kube::Error::Api(e))) if e.code == 409 => patch(name.clone()).await,
            other => other,
        },
        Write::Update { name, .. } => match patch(name.clone()).await {
            Err(Some(kube::Error::Api(e))) if e.code == 404 => create().await,
            other => other,
        },
    };
    match result {
        Ok(()) => Ok(()),
        Err(Some(kube::Error::Api(e))) => {
            tracing::warn!(reason = ?event.reason, "recording event: {e}");
            Ok(())
        }
        Err(Some(e)) => Err(Unreachable::Client(e)),
        Err(None) => Err(Unreachable::TimedOut),
    }
}

/// An API call within [`API_TIMEOUT`]; `Err(None)` when it timed out.
async fn bounded<T>(call: impl Future<Output = kube::Result<T>>) -> Result<(), Option<kube::Error>> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str, message: &str) -> Key {
        Key {
            warning: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::new(1_700_000_000 + secs, 0).unwrap()
    }

    /// Event names `prefix.1`, `prefix.2`, ... as the recorder asks for them.
    fn names(prefix: &str) -> impl FnMut() -> String + '_ {
        let mut n = 0;
        move || {
            n += 1;
            format!("{prefix}.{n}")
        }
    }

    #[test]
    fn repeats_count_on_the_first_event_and_differences_start_new_ones() {
        let mut agg = Aggregator::default();
        let mut name = names("app");
        let unhealthy = key(
            "Unhealthy",
            "Liveness probe failed: HTTP probe failed with statuscode: 500",
        );
        assert_eq!(
            agg.record(unhealthy.clone(), at(0), &mut name),
            Write::Create { name: "app.1".into() }
        );
        assert_eq!(
            agg.record(
                key("Killing", "Container app failed liveness probe, will be restarted"),
                at(1),
                &mut name
            ),
            Write::Create { name: "app.2".into() }
        );
        for count in 2..=12 {
            assert_eq!(
                agg.record(unhealthy.clone(), at(count.into()), &mut name),
                Write::Update {
                    name: "app.1".into(),
                    count,
                    first: at(0)
                }
            );
        }
        // Another message, or another type, is another event.
        assert!(matches!(
            agg.record(
                key(
                    "Unhealthy",
                    "Liveness probe failed: HTTP probe failed with statuscode: 503"
                ),
                at(13),
                &mut name
            ),
            Write::Create { .. }
        ));
        let normal = Key {
            warning: false,
            ..unhealthy
        };
        assert!(matches!(agg.record(normal, at(14), &mut name), Write::Create { .. }));
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_least_recent() {
        let mut agg = Aggregator::default();
        let mut name = names("e");
        let keep = key("Keep", "kept");
        agg.record(keep.clone(), at(0), &mut name);
        for i in 0..REMEMBERED * 2 {
            agg.record(key("Other", &i.to_string()), at(1), &mut name);
            // Touching it keeps it recent.
            assert!(matches!(
                agg.record(keep.clone(), at(1), &mut name),
                Write::Update { .. }
            ));
        }
        assert_eq!(agg.seen.len(), REMEMBERED);
        assert!(matches!(
            agg.record(key("Other", "0"), at(2), &mut name),
            Write::Create { .. }
        ));
    }
}
