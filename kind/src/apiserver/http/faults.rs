//! Fault injection: added latency, injected error responses and dropped
//! watches. A [`Faults`] handle is shared with the server; checking it costs
//! one atomic load per request when no fault is configured.
//!
//! Taking the whole server down and back up is [`super::ApiServer::go_down`]
//! and [`super::ApiServer::come_up`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::apiserver::status::ApiError;

/// A custom request predicate for a [`FaultMatch`].
#[derive(Clone)]
pub struct Predicate(Arc<dyn Fn(&RequestFacts<'_>) -> bool + Send + Sync>);

impl std::fmt::Debug for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Predicate(..)")
    }
}

impl PartialEq for Predicate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Predicate {}

/// Which requests a fault applies to; unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultMatch {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete,
    /// deletecollection (discovery and other non-resource requests: the
    /// lower-case HTTP method).
    pub verb: Option<String>,
    pub group: Option<String>,
    /// Plural resource name (`pods`); non-resource requests have none.
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Any further condition.
    pub predicate: Option<Predicate>,
}

/// `pub fn field(self, value: &str) -> Self` for each named field: the
/// match then also requires the request's `field` to be `value`.
macro_rules! request_field_setters {
    ($($field:ident),+) => {
        $(
            #[doc = concat!("Also requires the request's `", stringify!($field), "` to be `value`.")]
            pub fn $field(mut self, value: &str) -> Self {
                self.$field = Some(value.into());
                self
            }
        )+
    };
}

impl FaultMatch {
    /// Matches every request.
    pub fn any() -> FaultMatch {
        FaultMatch::default()
    }

    request_field_setters!(verb, group, resource, subresource, namespace, name);

    /// Also requires `f` to hold for the request.
    pub fn when(mut self, f: impl Fn(&RequestFacts<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Predicate(Arc::new(f)));
        self
    }

    fn matches(&self, r: &RequestFacts<'_>) -> bool {
        fn ok(want: &Option<String>, got: &str) -> bool {
            want.as_deref().is_none_or(|w| w == got)
        }
        ok(&self.verb, r.verb)
            && ok(&self.group, r.group)
            && ok(&self.resource, r.resource)
            && ok(&self.subresource, r.subresource)
            && ok(&self.namespace, r.namespace)
            && ok(&self.name, r.name)
            && self.predicate.as_ref().is_none_or(|p| (p.0)(r))
    }
}

/// What the server knows about a request when it checks for faults.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

#[derive(Debug)]
struct ErrorRule {
    matcher: FaultMatch,
    error: ApiError,
    /// Requests still to fail; `None` = until cleared.
    remaining: Option<usize>,
}

#[derive(Debug, Default)]
struct Rules {
    latency: Vec<(FaultMatch, Duration)>,
    errors: Vec<ErrorRule>,
}

#[derive(Debug)]
struct Inner {
    active: AtomicBool,
    rules: Mutex<Rules>,
    drops: watch::Sender<u64>,
    injected: AtomicU64,
}

/// The fault-injection handle (cheap to clone; all clones share state).
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            inner: Arc::new(Inner {
                active: AtomicBool::new(false),
                rules: Mutex::new(Rules::default()),
                drops: watch::channel(0).0,
                injected: AtomicU64::new(0),
            }),
        }
    }
}

impl Faults {
    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.inner
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refresh(&self, rules: &Rules) {
        let active = !rules.latency.is_empty() || !rules.errors.is_empty();
        self.inner.active.store(active, Ordering::Release);
    }

    /// Adds `delay` to every request (replacing an earlier global latency;
    /// `Duration::ZERO` removes it).
    pub fn set_latency(&self, delay: Duration) {
        let mut rules = self.rules();
        rules.latency.retain(|(m, _)| *m != FaultMatch::any());
        if !delay.is_zero() {
            rules.latency.push((FaultMatch::any(), delay));
        }
        self.refresh(&rules);
    }

    /// Adds `delay` to requests matching `m` (delays of several matching
    /// rules add up).
    pub fn add_latency(&self, m: FaultMatch, delay: Duration) {
        let mut rules = self.rules();
        rules.latency.push((m, delay));
        self.refresh(&rules);
    }

    /// The next `count` requests matching `m` fail with HTTP `code` and a
    /// `Status` body.
    pub fn inject_errors(&self, m: FaultMatch, code: u16, count: usize) {
        self.push_error(m, code, Some(count));
    }

    /// Every request matching `m` fails with `code` until [`Faults::clear`].
    pub fn inject_errors_forever(&self, m: FaultMatch, code: u16) {
        self.push_error(m, code, None);
    }

    fn push_error(&self, m: FaultMatch, code: u16, remaining: Option<usize>) {
        self.inject(
            m,
            ApiError::for_code(code, format!("injected fault: HTTP {code}")),
            remaining,
        );
    }

    /// Requests matching `m` fail with `error` (its code, reason and
    /// message); `count` of them, or all until [`Faults::clear`] when `None`.
    pub fn inject(&self, m: FaultMatch, error: ApiError, count: Option<usize>) {
        if count == Some(0) {
            return;
        }
        let mut rules = self.rules();
        rules.errors.push(ErrorRule {
            matcher: m,
            error,
            remaining: count,
        });
        self.refresh(&rules);
    }

    /// Removes all latency and error rules.
    pub fn clear(&self) {
        let mut rules = self.rules();
        *rules = Rules::default();
        self.refresh(&rules);
    }

    /// Ends every open watch stream abruptly (the connection is cut without
    /// the final chunk); clients must re-watch.
    pub fn drop_watches(&self) {
        self.inner.drops.send_modify(|g| *g += 1);
    }

    /// How many requests have failed with an injected error so far.
    pub fn injected_errors(&self) -> u64 {
        self.inner.injected.load(Ordering::Relaxed)
    }

    /// A receiver that changes whenever [`Faults::drop_watches`] is called.
    pub(crate) fn watch_drops(&self) -> watch::Receiver<u64> {
        self.inner.drops.subscribe()
    }

    /// The delay to add and the error to return (if any) for a request.
    pub(crate) fn check(&self, facts: &RequestFacts<'_>) -> (Duration, Option<ApiError>) {
        if !self.inner.active.load(Ordering::Acquire) {
            return (Duration::ZERO, None);
        }
        let mut rules = self.rules();
        let delay = rules
            .latency
            .iter()
            .filter(|(m, _)| m.matches(facts))
            .map(|(_, d)| *d)
            .sum();
        let mut error = None;
        let mut exhausted = None;
        for (i, rule) in rules.errors.iter_mut().enumerate() {
            if !rule.matcher.matches(facts) {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    exhausted = Some(i);
                }
            }
            error = Some(rule.error.clone());
            break;
        }
        if let Some(i) = exhausted {
            rules.errors.remove(i);
            self.refresh(&rules);
        }
        if error.is_some() {
            self.inner.injected.fetch_add(1, Ordering::Relaxed);
        }
        (delay, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(verb: &'a str, resource: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            verb,
            resource,
            namespace: "default",
            ..Default::default()
        }
    }

    #[test]
    fn inactive_by_default() {
        let f = Faults::default();
        assert_eq!(f.check(&facts("get", "pods")), (Duration::ZERO, None));
    }

    #[test]
    fn latency_rules_add_up() {
        let f = Faults::default();
        f.set_latency(Duration::from_millis(10));
        f.add_latency(FaultMatch::any().resource("pods"), Duration::from_millis(5));
        assert_eq!(f.check(&facts("get", "pods")).0, Duration::from_millis(15));
        assert_eq!(f.check(&facts("get", "nodes")).0, Duration::from_millis(10));
        f.set_latency(Duration::ZERO);
        assert_eq!(f.check(&facts("get", "nodes")).0, Duration::ZERO);
        f.clear();
        assert_eq!(f.check(&facts("get", "pods")).0, Duration::ZERO);
    }

    #[test]
    fn errors_count_down() {
        let f = Faults::default();
        f.inject_errors(FaultMatch::any().verb("list").resource("pods"), 500, 2);
        assert!(f.check(&facts("get", "pods")).1.is_none());
        assert_eq!(f.check(&facts("list", "pods")).1.map(|e| e.code), Some(500));
        assert_eq!(f.check(&facts("list", "pods")).1.map(|e| e.code), Some(500));
        assert!(f.check(&facts("list", "pods")).1.is_none());
        assert_eq!(f.injected_errors(), 2);
        f.inject_errors_forever(FaultMatch::any().namespace("default"), 503);
        for _ in 0..3 {
            assert_eq!(
                f.check(&facts("get", "x")).1.map(|e| e.reason),
                Some("ServiceUnavailable")
            );
        }
        f.clear();
        assert!(f.check(&facts("get", "x")).1.is_none());
        f.inject(
            FaultMatch::any().when(|r| r.verb.starts_with("up")),
            ApiError::new(429, "TooManyRequests", "slow down"),
            None,
        );
        assert!(f.check(&facts("get", "x")).1.is_none());
        let e = f.check(&facts("update", "x")).1.unwrap();
        assert_eq!((e.code, e.message.as_str()), (429, "slow down"));
    }

    #[test]
    fn drop_signal() {
        let f = Faults::default();
        let rx = f.watch_drops();
        f.drop_watches();
        assert!(rx.has_changed().unwrap());
    }
}
