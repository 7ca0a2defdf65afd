//! The controller's logic core and its driver (docs/repair.md#watch-and-queue):
//! watch events feed a pod cache and a keyed work queue; one
//! worker reconciles one key at a time.
//!
//! [`Core`] is synchronous and does no I/O (events in, work out), so the
//! queue semantics are unit-tested by feeding events; [`drive`] connects it
//! to a watch stream and an [`Executor`] (the real one is
//! [`super::actions::KubeActions`]).
//!
//! Queue semantics follow client-go's rate-limited workqueue as Istio uses it:
//! a key is queued at most once; a key added while its reconcile runs is
//! re-queued when it finishes; a failed key is retried with exponential
//! backoff (5 ms, 10 ms, 20 ms, 40 ms) for at most [`MAX_ATTEMPTS`] runs per
//! failure streak, then dropped until the pod's next event.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use tokio::sync::{oneshot, watch};

use super::predicate::{Criteria, is_broken};
use crate::config::RepairMode;

/// Runs per failure streak (Istio's `WithMaxAttempts(5)`).
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay; doubles per retry (client-go's default item backoff).
pub const BASE_DELAY: Duration = Duration::from_millis(5);
/// Cap of the per-item backoff (client-go: 1000 s).
const MAX_DELAY: Duration = Duration::from_secs(1000);

/// A pod's namespaced name, the queue key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn of(pod: &Pod) -> PodKey {
        PodKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What an executor did with a broken pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The pod netns was programmed (repair mode).
    Repaired,
    /// The pod was deleted.
    Deleted,
    /// The label was written.
    Labeled,
    /// Nothing to do (already labeled; a pod the plugin itself would skip).
    Skipped,
}

/// Why an action failed; retried by the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionError(pub String);

/// Acts on one broken pod in the given mode (and records its metrics).
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, mode: RepairMode, pod: Arc<Pod>) -> impl Future<Output = Result<Done, ActionError>> + Send;
}

/// What the worker must do for a key.
#[derive(Debug, Clone)]
pub enum Work {
    /// Nothing: the pod is gone, healthy or already repaired.
    Nothing,
    /// Run the mode's action on this pod.
    Act(Arc<Pod>),
}

/// The keyed work queue with per-key retry backoff.
#[derive(Debug, Default)]
struct Queue {
    ready: VecDeque<PodKey>,
    queued: HashSet<PodKey>,
    in_flight: Option<PodKey>,
    /// Added while in flight: queue again when it finishes.
    dirty: HashSet<PodKey>,
    delayed: Vec<(Instant, PodKey)>,
    /// Retries so far in the current failure streak.
    requeues: HashMap<PodKey, u32>,
}

impl Queue {
    fn add(&mut self, key: PodKey) {
        if self.in_flight.as_ref() == Some(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    fn promote(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, key) in due {
            self.add(key);
        }
    }

    fn pop(&mut self, now: Instant) -> Option<PodKey> {
        if self.in_flight.is_some() {
            return None;
        }
        self.promote(now);
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.in_flight = Some(key.clone());
        Some(key)
    }

    fn done(&mut self, key: &PodKey) {
        if self.in_flight.as_ref() == Some(key) {
            self.in_flight = None;
        }
        if self.dirty.remove(key) {
            self.add(key.clone());
        }
    }

    /// Schedules a retry, or gives up when the streak's budget is spent.
    fn retry(&mut self, key: &PodKey, now: Instant) -> Option<Duration> {
        let n = self.requeues.get(key).copied().unwrap_or(0);
        if n + 1 >= MAX_ATTEMPTS {
            self.requeues.remove(key);
            return None;
        }
        self.requeues.insert(key.clone(), n + 1);
        let delay = BASE_DELAY
            .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .min(MAX_DELAY);
        self.delayed.push((now + delay, key.clone()));
        Some(delay)
    }

    fn forget(&mut self, key: &PodKey) {
        self.requeues.remove(key);
    }

    fn next_wakeup(&self) -> Option<Instant> {
        self.delayed.iter().map(|(at, _)| *at).min()
    }
}

/// Cache, queue and repaired-UID memory of the controller; no I/O.
#[derive(Debug)]
pub struct Core {
    mode: RepairMode,
    criteria: Criteria,
    cache: HashMap<PodKey, Arc<Pod>>,
    /// Pods of a (re)list in progress, swapped in at `InitDone`.
    relist: Option<HashMap<PodKey, Arc<Pod>>>,
    /// Repair mode: pod → UID already programmed, so a crash-looping pod is
    /// programmed once, not on every status update.
    repaired: HashMap<PodKey, String>,
    queue: Queue,
    synced: bool,
    /// The UID of the pod handed to the executor, recorded on success.
    acting_on: Option<(PodKey, String)>,
}

impl Core {
    pub fn new(mode: RepairMode, criteria: Criteria) -> Core {
        Core {
            mode,
            criteria,
            cache: HashMap::new(),
            relist: None,
            repaired: HashMap::new(),
            queue: Queue::default(),
            synced: false,
            acting_on: None,
        }
    }

    pub fn mode(&self) -> RepairMode {
        self.mode
    }

    /// Whether a full pod list has been seen.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Applies one watch event to the cache and queues the touched keys,
    /// unfiltered (the predicate runs at reconcile time on the latest state).
    pub fn on_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Apply(pod) => {
                let key = PodKey::of(&pod);
                self.cache.insert(key.clone(), Arc::new(pod));
                self.queue.add(key);
            }
            Event::Delete(pod) => {
                let key = PodKey::of(&pod);
                self.cache.remove(&key);
                self.queue.add(key);
            }
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(pod) => {
                let key = PodKey::of(&pod);
                self.relist.get_or_insert_with(HashMap::new).insert(key, Arc::new(pod));
            }
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                // Pods that vanished while the watch was down were deleted:
                // queue them so their repaired entries are pruned.
                let gone: Vec<PodKey> = self.cache.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
                let mut keys: Vec<PodKey> = fresh.keys().cloned().chain(gone).collect();
                keys.sort();
                self.cache = fresh;
                for key in keys {
                    self.queue.add(key);
                }
                self.synced = true;
            }
        }
    }

    /// The next key to reconcile, if any is due and none is in flight.
    pub fn next_key(&mut self, now: Instant) -> Option<PodKey> {
        self.queue.pop(now)
    }

    /// When a delayed retry becomes due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.queue.next_wakeup()
    }

    /// Decides what to do for a popped key. [`Work::Nothing`] must still be
    /// followed by [`Core::finish`].
    pub fn reconcile(&mut self, key: &PodKey) -> Work {
        tracing::debug!(pod = %key, "Reconciling pod");
        let Some(pod) = self.cache.get(key).cloned() else {
            self.repaired.remove(key);
            return Work::Nothing;
        };
        if !is_broken(&pod, &self.criteria) {
            return Work::Nothing;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.mode == RepairMode::Repair
            && let Some(done) = self.repaired.get(key)
        {
            if *done == uid {
                tracing::debug!(pod = %key, "already repaired");
                return Work::Nothing;
            }
            // Istio stops here (suspecting a missed delete); a new UID is a
            // new pod whose netns was never programmed, so repair it.
            tracing::info!(pod = %key, old_uid = %done, %uid, "pod was recreated since its repair");
        }
        self.acting_on = Some((key.clone(), uid));
        Work::Act(pod)
    }

    /// Records the outcome of a key's reconcile (`None`: nothing was done).
    /// Returns the retry delay when the key was re-queued after a failure.
    pub fn finish(
        &mut self,
        key: &PodKey,
        result: Option<Result<Done, ActionError>>,
        now: Instant,
    ) -> Option<Duration> {
        let acted = self.acting_on.take().filter(|(k, _)| k == key);
        let mut retry = None;
        match result {
            None => self.queue.forget(key),
            Some(Ok(done)) => {
                self.queue.forget(key);
                if done == Done::Repaired
                    && let Some((k, uid)) = acted
                {
                    self.repaired.insert(k, uid);
                }
            }
            Some(Err(e)) => {
                retry = self.queue.retry(key, now);
                match retry {
                    Some(delay) => tracing::debug!(pod = %key, ?delay, "retrying: {e}"),
                    None => tracing::warn!(
                        pod = %key,
                        mode = self.mode.as_str(),
                        "retry budget exceeded after {MAX_ATTEMPTS} attempts: {e}"
                    ),
                }
            }
        }
        self.queue.done(key);
        retry
    }

    /// Keys with a repaired UID (tests, logs).
    pub fn repaired(&self) -> &HashMap<PodKey, String> {
        &self.repaired
    }
}

/// Whether the first full list has arrived, and the last watch error before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    Pending { last_error: Option<String> },
    Synced,
}

type ActionFuture = Pin<Box<dyn Future<Output = Result<Done, ActionError>> + Send>>;

/// Runs the controller until `shutdown` fires or the event stream ends:
/// feeds `events` into `core` and executes one action at a time while
/// events keep flowing into the cache.
pub async fn drive<S, E, X>(
    mut core: Core,
    events: S,
    executor: Arc<X>,
    sync: watch::Sender<SyncState>,
    mut shutdown: oneshot::Receiver<()>,
) -> Core
where
    S: Stream<Item = Result<Event<Pod>, E>> + Send,
    E: fmt::Display,
    X: Executor,
{
    let mut events = std::pin::pin!(events);
    let mut in_flight: Option<(PodKey, ActionFuture)> = None;
    loop {
        if in_flight.is_none()
            && let Some(key) = core.next_key(Instant::now())
        {
            match core.reconcile(&key) {
                Work::Nothing => {
                    core.finish(&key, None, Instant::now());
                }
                Work::Act(pod) => {
                    let (executor, mode) = (executor.clone(), core.mode());
                    in_flight = Some((key, Box::pin(async move { executor.execute(mode, pod).await })));
                }
            }
            continue;
        }
        let wakeup = core.next_wakeup();
        let action = async {
            match in_flight.as_mut() {
                Some((_, fut)) => fut.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            result = action => {
                if let Some((key, _)) = in_flight.take() {
                    core.finish(&key, Some(result), Instant::now());
                }
            }
            event = events.next() => match event {
                None => break,
                Some(Ok(event)) => {
                    core.on_event(event);
                    if core.synced() && *sync.borrow() != SyncState::Synced {
                        sync.send_replace(SyncState::Synced);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("repair controller: watching pods failed: {e}");
                    if !core.synced() {
                        sync.send_replace(SyncState::Pending { last_error: Some(e.to_string()) });
                    }
                }
            },
            _ = sleep_until(wakeup) => {}
        }
    }
    core
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    fn pod(name: &str, uid: &str, broken: bool) -> Pod {
        let last = if broken {
            json!({"terminated": {"exitCode": 126, "reason": "Error"}})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                         "annotations": {"sidecar.istio.io/status": "{}"}},
            "status": {"initContainerStatuses": [{"name": "istio-validation", "image": "proxyv2", "imageID": "",
                "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": last}]},
        }))
        .unwrap()
    }

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn core(mode: RepairMode) -> Core {
        Core::new(mode, Criteria::default())
    }

    /// Delivers an Apply of `p`, takes the key it queued (due at `now`) and
    /// reconciles it: the key and what the reconcile asks for.
    fn apply(c: &mut Core, p: Pod, now: Instant) -> (PodKey, Work) {
        c.on_event(Event::Apply(p));
        let k = c.next_key(now).unwrap();
        let work = c.reconcile(&k);
        (k, work)
    }

    fn drain(core: &mut Core) -> Vec<PodKey> {
        let mut out = vec![];
        while let Some(k) = core.next_key(Instant::now()) {
            if let Work::Act(_) = core.reconcile(&k) {
                panic!("{k} unexpectedly acted on");
            }
            core.finish(&k, None, Instant::now());
            out.push(k);
        }
        out
    }

    #[test]
    fn keys_are_deduplicated_while_queued() {
        let mut c = core(RepairMode::Delete);
        for _ in 0..3 {
            c.on_event(Event::Apply(pod("a", "u1", false)));
        }
        c.on_event(Event::Apply(pod("b", "u2", false)));
        c.on_event(Event::Apply(pod("a", "u1", false)));
        assert_eq!(drain(&mut c), vec![key("a"), key("b")]);
        assert_eq!(drain(&mut c), vec![]);
    }

    #[test]
    fn an_event_during_a_reconcile_queues_the_key_again_after_it() {
        let mut c = core(RepairMode::Delete);
        let (k, work) = apply(&mut c, pod("a", "u1", true), Instant::now());
        assert!(matches!(work, Work::Act(_)));
        c.on_event(Event::Apply(pod("a", "u1", true)));
        assert_eq!(c.next_key(Instant::now()), None, "one worker: nothing while in flight");
        c.finish(&k, Some(Ok(Done::Deleted)), Instant::now());
        assert_eq!(c.next_key(Instant::now()), Some(key("a")));
    }

    #[test]
    fn the_initial_list_queues_every_pod_and_syncs() {
        let mut c = core(RepairMode::Label);
        c.on_event(Event::Init);
        c.on_event(Event::InitApply(pod("b", "u2", false)));
        c.on_event(Event::InitApply(pod("a", "u1", true)));
        assert!(!c.synced());
        assert_eq!(c.next_key(Instant::now()), None, "nothing before InitDone");
        c.on_event(Event::InitDone);
        assert!(c.synced());
        let a = c.next_key(Instant::now()).unwrap();
        assert_eq!(a, key("a"));
        assert!(
            matches!(c.reconcile(&a), Work::Act(_)),
            "only the broken pod is acted on"
        );
        c.finish(&a, Some(Ok(Done::Labeled)), Instant::now());
        let b = c.next_key(Instant::now()).unwrap();
        assert!(matches!(c.reconcile(&b), Work::Nothing));
    }

    #[test]
    fn failures_retry_with_exponential_backoff_at_most_five_runs() {
        let mut c = core(RepairMode::Delete);
        c.on_event(Event::Apply(pod("a", "u1", true)));
        let t0 = Instant::now();
        let mut delays = vec![];
        let mut runs = 0;
        let mut now = t0;
        while let Some(k) = c.next_key(now) {
            assert!(matches!(c.reconcile(&k), Work::Act(_)));
            runs += 1;
            match c.finish(&k, Some(Err(ActionError("409".into()))), now) {
                Some(d) => {
                    delays.push(d);
                    assert_eq!(c.next_key(now), None, "not before the delay");
                    now += d;
                }
                None => break,
            }
        }
        assert_eq!(runs, MAX_ATTEMPTS);
        assert_eq!(delays, [5, 10, 20, 40].map(Duration::from_millis));
        assert_eq!(
            c.next_key(now + Duration::from_secs(1)),
            None,
            "dropped after the budget"
        );
        // The next pod event starts a fresh streak.
        let (k, _) = apply(&mut c, pod("a", "u1", true), now);
        assert_eq!(c.finish(&k, Some(Err(ActionError("x".into()))), now), Some(BASE_DELAY));
    }

    #[test]
    fn a_success_resets_the_retry_streak() {
        let mut c = core(RepairMode::Delete);
        c.on_event(Event::Apply(pod("a", "u1", true)));
        let now = Instant::now();
        let k = c.next_key(now).unwrap();
        c.reconcile(&k);
        let d = c.finish(&k, Some(Err(ActionError("x".into()))), now).unwrap();
        let k = c.next_key(now + d).unwrap();
        c.reconcile(&k);
        c.finish(&k, Some(Ok(Done::Deleted)), now + d);
        let (k, _) = apply(&mut c, pod("a", "u1", true), now + d);
        assert_eq!(
            c.finish(&k, Some(Err(ActionError("x".into()))), now + d),
            Some(BASE_DELAY)
        );
    }

    #[test]
    fn repair_mode_programs_a_uid_once_and_prunes_on_delete() {
        let mut c = core(RepairMode::Repair);
        let (k, work) = apply(&mut c, pod("a", "u1", true), Instant::now());
        assert!(matches!(work, Work::Act(_)));
        c.finish(&k, Some(Ok(Done::Repaired)), Instant::now());
        assert_eq!(c.repaired().get(&key("a")).map(String::as_str), Some("u1"));
        // Still crash-looping (kubelet has not retried yet): no second run.
        let (k, work) = apply(&mut c, pod("a", "u1", true), Instant::now());
        assert!(matches!(work, Work::Nothing));
        c.finish(&k, None, Instant::now());
        // Recreated under the same name: a new netns, repaired again.
        let (k, work) = apply(&mut c, pod("a", "u2", true), Instant::now());
        assert!(matches!(work, Work::Act(_)));
        c.finish(&k, Some(Ok(Done::Repaired)), Instant::now());
        assert_eq!(c.repaired().get(&key("a")).map(String::as_str), Some("u2"));
        c.on_event(Event::Delete(pod("a", "u2", true)));
        drain(&mut c);
        assert!(c.repaired().is_empty(), "pruned once the pod is gone");
    }

    #[test]
    fn a_failed_repair_is_not_remembered() {
        let mut c = core(RepairMode::Repair);
        let (k, _) = apply(&mut c, pod("a", "u1", true), Instant::now());
        c.finish(&k, Some(Err(ActionError("no netns".into()))), Instant::now());
        assert!(c.repaired().is_empty());
    }

    #[test]
    fn a_relist_prunes_pods_deleted_while_the_watch_was_down() {
        let mut c = core(RepairMode::Repair);
        let (k, _) = apply(&mut c, pod("a", "u1", true), Instant::now());
        c.finish(&k, Some(Ok(Done::Repaired)), Instant::now());
        c.on_event(Event::Init);
        c.on_event(Event::InitApply(pod("b", "u2", false)));
        c.on_event(Event::InitDone);
        assert_eq!(drain(&mut c), vec![key("a"), key("b")]);
        assert!(c.repaired().is_empty());
    }

    /// Records calls; fails the first `fail_first` calls.
    struct Fake {
        calls: Mutex<Vec<(RepairMode, String)>>,
        fail_first: Mutex<u32>,
    }

    impl Executor for Fake {
        fn execute(&self, mode: RepairMode, pod: Arc<Pod>) -> impl Future<Output = Result<Done, ActionError>> + Send {
            self.calls
                .lock()
                .unwrap()
                .push((mode, pod.metadata.name.clone().unwrap_or_default()));
            let mut fail = self.fail_first.lock().unwrap();
            let result = if *fail > 0 {
                *fail -= 1;
                Err(ActionError("forbidden".into()))
            } else {
                Ok(Done::Deleted)
            };
            async move { result }
        }
    }

    #[tokio::test]
    async fn the_driver_syncs_acts_retries_and_stops() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Event<Pod>, String>>();
        let fake = Arc::new(Fake {
            calls: Mutex::new(vec![]),
            fail_first: Mutex::new(2),
        });
        let (sync_tx, mut sync_rx) = watch::channel(SyncState::Pending { last_error: None });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(drive(core(RepairMode::Delete), rx, fake.clone(), sync_tx, stop_rx));

        tx.unbounded_send(Err("403 pods is forbidden".into())).unwrap();
        sync_rx.changed().await.unwrap();
        assert_eq!(
            *sync_rx.borrow_and_update(),
            SyncState::Pending {
                last_error: Some("403 pods is forbidden".into())
            }
        );
        for e in [
            Event::Init,
            Event::InitApply(pod("ok", "u0", false)),
            Event::InitApply(pod("bad", "u1", true)),
            Event::InitDone,
        ] {
            tx.unbounded_send(Ok(e)).unwrap();
        }
        sync_rx.wait_for(|s| *s == SyncState::Synced).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.calls.lock().unwrap().len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Two failures, then success on the third run; the healthy pod is never acted on.
        assert_eq!(
            *fake.calls.lock().unwrap(),
            vec![(RepairMode::Delete, "bad".to_string()); 3]
        );
        stop_tx.send(()).unwrap();
        let core = task.await.unwrap();
        assert!(core.synced());
    }
}
