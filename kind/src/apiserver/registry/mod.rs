//! The registry: every object in memory as JSON, keyed by resource,
//! namespace and name; a global resourceVersion counter; a bounded event
//! history per resource and its fan-out to watches.
//!
//! Writes go through the rules of [`strategy`]: the server-owned fields, the
//! per-kind defaults, validation and status rules. A stale resourceVersion
//! is a 409; objects go into existing, non-terminating namespaces only.

pub(crate) mod meta;
pub mod resources;
pub mod selectors;
pub(crate) mod strategy;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine as _;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

pub(crate) use self::meta::meta_mut;
use self::meta::meta_str;
pub use self::meta::{name_of, namespace_of, resource_version_of};
use self::resources::{ResourceId, ResourceInfo, ids as rid};
use self::selectors::Selectors;
pub use self::strategy::deletion::{DeletePolicy, FOREGROUND, ORPHAN, Propagation};
use self::strategy::{Deletion, deletion, namespace, prepare_create, priorityclass};
pub use self::strategy::{Part, validate_name};
use crate::apiserver::ids;
use crate::apiserver::status::ApiError;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in a resource's history.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub rv: u64,
    /// The object after the change (for deletes: the last state, with the
    /// deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before a modification (to turn a MODIFIED into ADDED or
    /// DELETED for a filtered watch the object moves into or out of).
    pub old: Option<Arc<Value>>,
}

/// Delete preconditions (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Store configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Events kept per resource for watches; older versions get `410 Gone`.
    pub watch_history: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { watch_history: 1000 }
    }
}

/// A handle to the shared store (cheap to clone).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("resource_version", &self.resource_version())
            .finish()
    }
}

struct Shared {
    state: RwLock<State>,
    /// Per resource: the resourceVersion of its latest event.
    notify: Vec<watch::Sender<u64>>,
    history_limit: usize,
}

struct State {
    rv: u64,
    tables: Vec<Table>,
}

#[derive(Default)]
struct Table {
    objects: BTreeMap<(String, String), Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    /// The newest resourceVersion dropped from `history`.
    evicted_rv: u64,
    /// The resourceVersion of the latest event.
    last_rv: u64,
}

fn read(lock: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(lock: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The key of an object in its table.
fn key(info: &ResourceInfo, ns: &str, name: &str) -> (String, String) {
    if info.namespaced {
        (ns.to_string(), name.to_string())
    } else {
        (String::new(), name.to_string())
    }
}

/// The stored object under `k`, or the resource's 404.
fn stored(st: &State, res: ResourceId, k: &(String, String)) -> Result<Arc<Value>, ApiError> {
    st.tables[res].objects.get(k).cloned().ok_or_else(|| {
        let info = resources::info(res);
        ApiError::not_found(info.group, info.plural, &k.1)
    })
}

/// A table entry: its `(namespace, name)` key and the object.
type Entry<'a> = (&'a (String, String), &'a Arc<Value>);

#[derive(Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

impl Store {
    /// A store with the system namespaces (`default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`), as kube-apiserver bootstraps them.
    pub fn new(opts: StoreOptions) -> Store {
        let tables = resources::RESOURCES.iter().map(|_| Table::default()).collect();
        let notify = resources::RESOURCES.iter().map(|_| watch::channel(0).0).collect();
        let store = Store {
            shared: Arc::new(Shared {
                state: RwLock::new(State { rv: 0, tables }),
                notify,
                history_limit: opts.watch_history.max(1),
            }),
        };
        for ns in namespace::SYSTEM {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = store.create(rid::NAMESPACES, "", obj, false) {
                tracing::warn!("creating namespace {ns}: {e}");
            }
        }
        for class in priorityclass::system_classes() {
            if let Err(e) = store.create(rid::PRIORITYCLASSES, "", class, false) {
                tracing::warn!("creating a system priority class: {e}");
            }
        }
        store
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        read(&self.shared.state).rv
    }

    /// The objects of several resources read at one instant, with the
    /// resourceVersion of each one's latest event (see [`Store::last_event`]).
    pub fn snapshot(&self, res: &[ResourceId]) -> Vec<(u64, Vec<Arc<Value>>)> {
        let st = read(&self.shared.state);
        res.iter()
            .map(|r| {
                let t = &st.tables[*r];
                (t.last_rv, t.objects.values().cloned().collect())
            })
            .collect()
    }

    /// The resourceVersion of the latest event of a resource (0: none yet).
    pub fn last_event(&self, res: ResourceId) -> u64 {
        *self.shared.notify[res].borrow()
    }

    /// One object.
    pub fn get(&self, res: ResourceId, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let info = resources::info(res);
        let st = read(&self.shared.state);
        stored(&st, res, &key(info, ns, name))
    }

    /// Objects of a resource, in one namespace (`Some`) or all (`None`),
    /// filtered by selectors; `limit` and a `continue` token page the result.
    pub fn list(
        &self,
        res: ResourceId,
        ns: Option<&str>,
        sel: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let info = resources::info(res);
        let start = match continue_token.filter(|t| !t.is_empty()) {
            Some(t) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                let tok: ContinueToken =
                    serde_json::from_slice(&raw).map_err(|_| ApiError::bad_request("invalid continue token"))?;
                Some(tok)
            }
            None => None,
        };
        let st = read(&self.shared.state);
        let table = &st.tables[res];
        let list_rv = start.as_ref().map_or(st.rv, |t| t.rv);
        let ns = ns.filter(|n| !n.is_empty() && info.namespaced);
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0u64;
        let after = start.as_ref().map(|t| (t.ns.clone(), t.name.clone()));
        let iter: Box<dyn Iterator<Item = Entry<'_>>> = match (&after, ns) {
            (Some(a), _) => Box::new(
                table
                    .objects
                    .range(a.clone()..)
                    .filter(move |(k, _)| *k != a)
                    .filter(move |(k, _)| ns.is_none_or(|n| k.0 == n)),
            ),
            (None, Some(n)) => Box::new(
                table
                    .objects
                    .range((n.to_string(), String::new())..)
                    .take_while(move |(k, _)| k.0 == n),
            ),
            (None, None) => Box::new(table.objects.iter()),
        };
        let name_pin = sel.fields.exact("metadata.name");
        let mut last_key: Option<(String, String)> = None;
        for (k, obj) in iter {
            if name_pin.is_some_and(|n| n != k.1) || !sel.matches(obj) {
                continue;
            }
            if let Some(limit) = limit.filter(|l| *l > 0)
                && items.len() >= limit
            {
                if next.is_none() {
                    next = last_key.clone();
                }
                remaining += 1;
                continue;
            }
            last_key = Some(k.clone());
            items.push(obj.clone());
        }
        let continue_token = next.map(|(ns, name)| {
            let raw = serde_json::to_vec(&ContinueToken { rv: list_rv, ns, name }).unwrap_or_default();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        });
        Ok(ListPage {
            items,
            resource_version: list_rv,
            remaining: continue_token.as_ref().map(|_| remaining),
            continue_token,
        })
    }

    /// Creates an object in `ns` (ignored for cluster-scoped resources).
    pub fn create(&self, res: ResourceId, ns: &str, obj: Value, dry_run: bool) -> Result<Arc<Value>, ApiError> {
        let info = resources::info(res);
        let mut obj = prepare_create(info, ns, obj)?;
        let mut st = write(&self.shared.state);
        let ns = namespace_of(&obj).to_string();
        if info.namespaced {
            let stored = st.tables[rid::NAMESPACES].objects.get(&(String::new(), ns.clone()));
            namespace::admit(&ns, stored.map(|n| &**n), info.group, info.plural, name_of(&obj))?;
        }
        if res == rid::PODS {
            let classes = st.tables[rid::PRIORITYCLASSES].objects.values();
            priorityclass::admit_pod(&mut obj, classes.map(|c| &**c))?;
        }
        let mut name = name_of(&obj).to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            let mut cut = prefix.len().min(58);
            while !prefix.is_char_boundary(cut) {
                cut -= 1;
            }
            let prefix = &prefix[..cut];
            name = loop {
                let candidate = format!("{prefix}{}", ids::name_suffix());
                if !st.tables[res].objects.contains_key(&key(info, &ns, &candidate)) {
                    break candidate;
                }
            };
            validate_name(info, &name).map_err(|m| ApiError::invalid(info.kind, &name, "metadata.generateName", &m))?;
            meta_mut(&mut obj).insert("name".into(), json!(name));
        }
        let k = key(info, &ns, &name);
        if st.tables[res].objects.contains_key(&k) {
            return Err(ApiError::already_exists(info.group, info.plural, &name));
        }
        if dry_run {
            return Ok(Arc::new(obj));
        }
        Ok(self.commit(&mut st, res, k, EventType::Added, obj, None))
    }

    /// Replaces an object (PUT). `part` selects the main resource or status.
    pub fn update(
        &self,
        res: ResourceId,
        ns: &str,
        name: &str,
        obj: Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let info = resources::info(res);
        strategy::check_identity(info, ns, name, &obj)?;
        self.modify(res, ns, name, part, dry_run, |_| Ok(obj))
    }

    /// Read-modify-write under the store lock: `f` maps the current object to
    /// the new one, which then goes through the same rules as an update
    /// (a resourceVersion set by `f` that differs from the current one is a
    /// conflict).
    pub fn modify(
        &self,
        res: ResourceId,
        ns: &str,
        name: &str,
        part: Part,
        dry_run: bool,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let info = resources::info(res);
        let mut st = write(&self.shared.state);
        let k = key(info, ns, name);
        let old = stored(&st, res, &k)?;
        let new = f(&old)?;
        let new = strategy::prepare_update(info, &old, new, part)?;
        if new == *old || dry_run {
            return Ok(if dry_run { Arc::new(new) } else { old });
        }
        let finalized = deletion::finalized(info, &new);
        let updated = self.commit(&mut st, res, k.clone(), EventType::Modified, new, Some(old));
        if finalized {
            return self
                .remove(&mut st, res, &k)
                .ok_or_else(|| ApiError::not_found(info.group, info.plural, name));
        }
        Ok(updated)
    }

    /// Deletes an object with the default policy (see [`Store::delete_with`]).
    pub fn delete(
        &self,
        res: ResourceId,
        ns: &str,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        self.delete_with(res, ns, name, pre, &DeletePolicy::default(), dry_run)
    }

    /// Deletes an object, checking preconditions. A pod still running on a
    /// node, or an object with finalizers (or, by `policy`, given the
    /// garbage collector's), is only marked for deletion (see
    /// [`strategy::deletion`]). Returns the deleted (or marked) object.
    pub fn delete_with(
        &self,
        res: ResourceId,
        ns: &str,
        name: &str,
        pre: &Preconditions,
        policy: &DeletePolicy,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let info = resources::info(res);
        let mut st = write(&self.shared.state);
        let k = key(info, ns, name);
        let old = stored(&st, res, &k)?;
        if let Some(uid) = pre.uid.as_deref().filter(|u| !u.is_empty())
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                info.group,
                info.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = pre.resource_version.as_deref().filter(|r| !r.is_empty())
            && rv != resource_version_of(&old)
        {
            return Err(ApiError::conflict(
                info.group,
                info.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    resource_version_of(&old)
                ),
            ));
        }
        let deletion = deletion::plan(info, &old, policy, k8s_openapi::jiff::Timestamp::now())?;
        if dry_run {
            return Ok(match deletion {
                Deletion::Now => old,
                Deletion::Pending(marked) => Arc::new(marked),
            });
        }
        match deletion {
            Deletion::Now => self
                .remove(&mut st, res, &k)
                .ok_or_else(|| ApiError::not_found(info.group, info.plural, name)),
            Deletion::Pending(marked) if marked == *old => Ok(old),
            Deletion::Pending(marked) => Ok(self.commit(&mut st, res, k, EventType::Modified, marked, Some(old))),
        }
    }

    /// Deletes every object matching the selectors with `policy`; returns
    /// them (deleted or marked).
    pub fn delete_collection(
        &self,
        res: ResourceId,
        ns: Option<&str>,
        sel: &Selectors,
        policy: &DeletePolicy,
        dry_run: bool,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let page = self.list(res, ns, sel, None, None)?;
        if dry_run {
            return Ok(page.items);
        }
        let mut out = Vec::new();
        for obj in page.items {
            let pre = Preconditions::default();
            match self.delete_with(res, namespace_of(&obj), name_of(&obj), &pre, policy, false) {
                Ok(o) => out.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn remove(&self, st: &mut State, res: ResourceId, k: &(String, String)) -> Option<Arc<Value>> {
        let old = st.tables[res].objects.remove(k)?;
        st.rv += 1;
        let rv = st.rv;
        let mut obj = (*old).clone();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let obj = Arc::new(obj);
        self.record(st, res, EventType::Deleted, rv, obj.clone(), Some(old));
        Some(obj)
    }

    /// Stores `obj` under `k` with the next resourceVersion and records the event.
    fn commit(
        &self,
        st: &mut State,
        res: ResourceId,
        k: (String, String),
        kind: EventType,
        mut obj: Value,
        old: Option<Arc<Value>>,
    ) -> Arc<Value> {
        st.rv += 1;
        let rv = st.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let obj = Arc::new(obj);
        st.tables[res].objects.insert(k, obj.clone());
        self.record(st, res, kind, rv, obj.clone(), old);
        obj
    }

    fn record(
        &self,
        st: &mut State,
        res: ResourceId,
        kind: EventType,
        rv: u64,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let table = &mut st.tables[res];
        table.history.push_back(Arc::new(Event { kind, rv, object, old }));
        table.last_rv = rv;
        while table.history.len() > self.shared.history_limit {
            if let Some(e) = table.history.pop_front() {
                table.evicted_rv = e.rv;
            }
        }
        self.shared.notify[res].send_replace(rv);
    }

    /// A receiver that changes whenever the resource gets a new event.
    pub fn subscribe(&self, res: ResourceId) -> watch::Receiver<u64> {
        self.shared.notify[res].subscribe()
    }

    /// The events of a resource after `rv`, or `410 Gone` when some of them
    /// are no longer in the history.
    pub fn events_after(&self, res: ResourceId, rv: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        let st = read(&self.shared.state);
        let table = &st.tables[res];
        if rv < table.evicted_rv {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                table.evicted_rv
            )));
        }
        let start = table.history.partition_point(|e| e.rv <= rv);
        Ok(table.history.range(start..).cloned().collect())
    }

    /// The resourceVersion a watcher that has seen every event of `res` up to
    /// `seen` may bookmark, or `None` when there are events it still has to
    /// read first.
    pub fn bookmark_rv(&self, res: ResourceId, seen: u64) -> Option<u64> {
        let st = read(&self.shared.state);
        let last = st.tables[res].history.back().map_or(0, |e| e.rv);
        (last <= seen).then_some(st.rv.max(seen))
    }

    /// Checks that a watch can start at `rv` (not older than the history).
    pub fn check_watchable(&self, res: ResourceId, rv: u64) -> Result<(), ApiError> {
        let st = read(&self.shared.state);
        let evicted = st.tables[res].evicted_rv;
        if rv < evicted {
            return Err(ApiError::gone(format!("too old resource version: {rv} ({evicted})")));
        }
        Ok(())
    }

    // ---- typed helpers for in-process use ----

    fn id_of<K: Resource<DynamicType = ()>>() -> Result<ResourceId, ApiError> {
        resources::find(&K::group(&()), &K::version(&()), &K::plural(&()))
            .ok_or_else(|| ApiError::not_found(&K::group(&()), &K::plural(&()), ""))
    }

    fn to_typed<K: DeserializeOwned>(v: &Value) -> Result<K, ApiError> {
        K::deserialize(v).map_err(|e| ApiError::internal(format!("decoding stored object: {e}")))
    }

    fn to_value<K: Serialize>(obj: &K) -> Result<Value, ApiError> {
        serde_json::to_value(obj).map_err(|e| ApiError::bad_request(format!("encoding object: {e}")))
    }

    /// One object as a typed value (`None` when absent).
    pub fn get_as<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, ns: &str, name: &str) -> Option<K> {
        let id = Self::id_of::<K>().ok()?;
        let v = self.get(id, ns, name).ok()?;
        Self::to_typed(&v).ok()
    }

    /// Every object of a kind, in `ns` or (with `None`) everywhere.
    pub fn list_as<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, ns: Option<&str>) -> Vec<K> {
        let Ok(id) = Self::id_of::<K>() else {
            return Vec::new();
        };
        self.list(id, ns, &Selectors::default(), None, None)
            .map(|p| p.items.iter().filter_map(|v| Self::to_typed(v).ok()).collect())
            .unwrap_or_default()
    }

    /// Creates a typed object (its namespace from its metadata).
    pub fn create_as<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned>(
        &self,
        obj: &K,
    ) -> Result<K, ApiError> {
        let id = Self::id_of::<K>()?;
        let v = Self::to_value(obj)?;
        let ns = namespace_of(&v).to_string();
        Self::to_typed(&*self.create(id, &ns, v, false)?)
    }

    /// Replaces a typed object (main resource; unconditional unless its
    /// resourceVersion is set).
    pub fn update_as<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned>(
        &self,
        obj: &K,
    ) -> Result<K, ApiError> {
        self.update_part_as(obj, Part::Main)
    }

    /// Replaces the status of a typed object.
    pub fn update_status_as<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned>(
        &self,
        obj: &K,
    ) -> Result<K, ApiError> {
        self.update_part_as(obj, Part::Status)
    }

    fn update_part_as<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned>(
        &self,
        obj: &K,
        part: Part,
    ) -> Result<K, ApiError> {
        let id = Self::id_of::<K>()?;
        let v = Self::to_value(obj)?;
        let ns = namespace_of(&v).to_string();
        let name = name_of(&v).to_string();
        Self::to_typed(&*self.update(id, &ns, &name, v, part, false)?)
    }

    /// Deletes an object of kind `K`.
    pub fn delete_as<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Result<(), ApiError> {
        let id = Self::id_of::<K>()?;
        self.delete(id, ns, name, &Preconditions::default(), false).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::selectors::{FieldSelector, LabelSelector};

    fn store(history: usize) -> Store {
        Store::new(StoreOptions { watch_history: history })
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
    }

    fn cm_id() -> ResourceId {
        resources::find("", "v1", "configmaps").unwrap()
    }

    #[test]
    fn system_namespaces() {
        let s = store(10);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let n = s.get(rid::NAMESPACES, "", ns).unwrap();
            assert_eq!(n["status"]["phase"], "Active");
            assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]));
        }
        // Their service accounts and CA ConfigMaps are the controllers' job.
        assert!(s.get(rid::SERVICEACCOUNTS, "default", "default").is_err());
    }

    #[test]
    fn create_sets_server_fields() {
        let s = store(10);
        let before = s.resource_version();
        let p = s.create(rid::PODS, "default", pod("a", "n1"), false).unwrap();
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["metadata"]["resourceVersion"], (before + 1).to_string());
        assert_eq!(p["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(p["metadata"]["creationTimestamp"].is_string());
        assert_eq!(p["status"], json!({"phase": "Pending"}));
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        let e = s.create(rid::PODS, "default", pod("a", "n1"), false).unwrap_err();
        assert_eq!((e.code, e.reason), (409, "AlreadyExists"));
        let e = s.create(rid::PODS, "nope", pod("b", "n1"), false).unwrap_err();
        assert_eq!((e.code, e.reason), (404, "NotFound"));
        assert_eq!(e.message, "namespaces \"nope\" not found");
        let e = s.create(
            rid::PODS,
            "other",
            json!({"metadata": {"name": "x", "namespace": "default"}}),
            false,
        );
        assert_eq!(e.unwrap_err().code, 400);
        let e = s.create(
            rid::PODS,
            "default",
            json!({"metadata": {"name": "x"}, "spec": {}}),
            false,
        );
        assert_eq!(e.unwrap_err().code, 422);
        let e = s.create(
            rid::PODS,
            "default",
            json!({"kind": "Node", "metadata": {"name": "x"}}),
            false,
        );
        assert_eq!(e.unwrap_err().code, 400);
        let e = s.create(rid::PODS, "default", json!({"metadata": {"name": "Bad_Name"}}), false);
        assert_eq!(e.unwrap_err().code, 422);
    }

    #[test]
    fn generate_name() {
        let s = store(10);
        let mut p = pod("", "n");
        p["metadata"] = json!({"generateName": "web-"});
        let created = s.create(rid::PODS, "default", p, false).unwrap();
        let name = name_of(&created);
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        let e = s
            .create(rid::PODS, "default", json!({"metadata": {}}), false)
            .unwrap_err();
        assert_eq!(e.code, 422);
        let mut p = pod("", "n");
        p["metadata"] = json!({"generateName": "\u{20ac}".repeat(30)});
        assert_eq!(s.create(rid::PODS, "default", p, false).unwrap_err().code, 422);
    }

    #[test]
    fn update_conflicts_status_and_noops() {
        let s = store(10);
        let p = s.create(rid::PODS, "default", pod("a", "n1"), false).unwrap();
        let mut changed = (*p).clone();
        changed["metadata"]["labels"]["x"] = json!("y");
        changed["status"]["phase"] = json!("Running");
        let u = s
            .update(rid::PODS, "default", "a", changed.clone(), Part::Main, false)
            .unwrap();
        assert_eq!(u["metadata"]["labels"]["x"], "y");
        assert_eq!(u["status"]["phase"], "Pending", "main resource ignores status");
        // The same stale body again: conflict.
        let e = s
            .update(rid::PODS, "default", "a", changed.clone(), Part::Main, false)
            .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        // Status update only changes status.
        let mut st = (*u).clone();
        st["status"]["phase"] = json!("Running");
        st["metadata"]["labels"]["x"] = json!("z");
        st["spec"]["nodeName"] = json!("elsewhere");
        let u2 = s.update(rid::PODS, "default", "a", st, Part::Status, false).unwrap();
        assert_eq!(u2["status"]["phase"], "Running");
        assert_eq!(u2["spec"]["nodeName"], "n1", "a status write keeps the spec");
        assert_eq!(u2["metadata"]["labels"]["x"], "z", "pods/status may change labels");
        // No-op update keeps the resourceVersion.
        let mut same = (*u2).clone();
        same["metadata"]["resourceVersion"] = json!("");
        let u3 = s.update(rid::PODS, "default", "a", same, Part::Main, false).unwrap();
        assert_eq!(u3["metadata"]["resourceVersion"], u2["metadata"]["resourceVersion"]);
        let e = s.update(rid::PODS, "default", "missing", pod("missing", "n"), Part::Main, false);
        assert_eq!(e.unwrap_err().code, 404);
        let e = s.update(rid::PODS, "default", "a", pod("b", "n"), Part::Main, false);
        assert_eq!(e.unwrap_err().code, 400);
    }

    #[test]
    fn daemonset_generation() {
        let s = store(10);
        let ds_id = resources::find("apps", "v1", "daemonsets").unwrap();
        let ds = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": []}}}});
        let d = s.create(ds_id, "kube-system", ds, false).unwrap();
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut m = (*d).clone();
        m["metadata"]["labels"] = json!({"a": "b"});
        let d2 = s.update(ds_id, "kube-system", "d", m, Part::Main, false).unwrap();
        assert_eq!(d2["metadata"]["generation"], 1);
        let mut m = (*d2).clone();
        m["spec"]["minReadySeconds"] = json!(5);
        let d3 = s.update(ds_id, "kube-system", "d", m, Part::Main, false).unwrap();
        assert_eq!(d3["metadata"]["generation"], 2);
    }

    #[test]
    fn delete_preconditions_and_namespace_finalization() {
        let s = store(100);
        s.create(rid::NAMESPACES, "", json!({"metadata": {"name": "t"}}), false)
            .unwrap();
        // Unbound: nothing to wait for, so a delete removes it.
        let p = s.create(rid::PODS, "t", pod("a", ""), false).unwrap();
        let bad_uid = Preconditions {
            uid: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(s.delete(rid::PODS, "t", "a", &bad_uid, false).unwrap_err().code, 409);
        let bad_rv = Preconditions {
            resource_version: Some("1".into()),
            ..Default::default()
        };
        assert_eq!(s.delete(rid::PODS, "t", "a", &bad_rv, false).unwrap_err().code, 409);
        let ok = Preconditions {
            uid: p["metadata"]["uid"].as_str().map(str::to_string),
            resource_version: Some(resource_version_of(&p).to_string()),
        };
        let d = s.delete(rid::PODS, "t", "a", &ok, false).unwrap();
        let rv = |o: &Value| resource_version_of(o).parse::<u64>().unwrap();
        assert!(rv(&d) > rv(&p));
        assert_eq!(s.delete(rid::PODS, "t", "a", &ok, false).unwrap_err().code, 404);
        s.create(rid::PODS, "t", pod("b", "n"), false).unwrap();
        let e = s.delete(rid::NAMESPACES, "", "kube-system", &Preconditions::default(), false);
        assert_eq!(e.unwrap_err().code, 403);
        // Deleting a namespace marks it Terminating; its content stays for
        // the namespace controller, nothing new gets in.
        let marked = s
            .delete(rid::NAMESPACES, "", "t", &Preconditions::default(), false)
            .unwrap();
        assert_eq!(marked["status"]["phase"], "Terminating");
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(rid::PODS, "t", "b").is_ok());
        let e = s.create(rid::PODS, "t", pod("c", "n"), false).unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        // A second delete changes nothing; an update keeps the deletion mark.
        let again = s
            .delete(rid::NAMESPACES, "", "t", &Preconditions::default(), false)
            .unwrap();
        assert_eq!(resource_version_of(&again), resource_version_of(&marked));
        let mut cleared = (*again).clone();
        cleared["metadata"]["deletionTimestamp"] = Value::Null;
        cleared["metadata"]["labels"] = json!({"a": "b"});
        let kept = s.update(rid::NAMESPACES, "", "t", cleared, Part::Main, false).unwrap();
        assert!(kept["metadata"]["deletionTimestamp"].is_string());
        // Clearing the finalizers (`namespaces/t/finalize`) removes it.
        let mut fin = (*kept).clone();
        fin["spec"]["finalizers"] = json!([]);
        let gone = s.update(rid::NAMESPACES, "", "t", fin, Part::Finalize, false).unwrap();
        assert_eq!(gone["spec"]["finalizers"], json!([]));
        assert_eq!(s.get(rid::NAMESPACES, "", "t").unwrap_err().code, 404);
    }

    fn grace(o: &Value) -> Option<i64> {
        o["metadata"]["deletionGracePeriodSeconds"].as_i64()
    }

    fn deletion_ts(o: &Value) -> k8s_openapi::jiff::Timestamp {
        o["metadata"]["deletionTimestamp"].as_str().unwrap().parse().unwrap()
    }

    fn with_grace(g: i64) -> DeletePolicy {
        DeletePolicy {
            grace_period_seconds: Some(g),
            propagation: None,
        }
    }

    #[test]
    fn a_bound_pod_is_deleted_gracefully_until_its_kubelet_deletes_it_with_grace_0() {
        let s = store(100);
        let none = Preconditions::default();
        let p = s.create(rid::PODS, "default", pod("a", "n1"), false).unwrap();
        let before = k8s_openapi::jiff::Timestamp::now();
        let marked = s.delete(rid::PODS, "default", "a", &none, false).unwrap();
        assert_eq!(
            grace(&marked),
            Some(30),
            "the spec's default terminationGracePeriodSeconds"
        );
        let secs = deletion_ts(&marked).duration_since(before).as_secs();
        assert!((29..=31).contains(&secs), "deletionTimestamp is now + 30 s: {secs}");
        assert!(s.get(rid::PODS, "default", "a").is_ok(), "it stays for the kubelet");
        // A longer grace period changes nothing; a shorter one moves the deadline.
        let same = s
            .delete_with(rid::PODS, "default", "a", &none, &with_grace(60), false)
            .unwrap();
        assert_eq!(resource_version_of(&same), resource_version_of(&marked));
        let shorter = s
            .delete_with(rid::PODS, "default", "a", &none, &with_grace(10), false)
            .unwrap();
        assert_eq!(grace(&shorter), Some(10));
        assert_eq!(deletion_ts(&marked).duration_since(deletion_ts(&shorter)).as_secs(), 20);
        // An update keeps the deletion mark.
        let mut cleared = (*shorter).clone();
        cleared["metadata"]["deletionTimestamp"] = Value::Null;
        cleared["metadata"]["deletionGracePeriodSeconds"] = Value::Null;
        let kept = s.update(rid::PODS, "default", "a", cleared, Part::Main, false).unwrap();
        assert_eq!(grace(&kept), Some(10));
        // The kubelet's final delete: grace 0 and the uid precondition.
        let wrong = Preconditions {
            uid: Some("other".into()),
            ..Default::default()
        };
        let e = s.delete_with(rid::PODS, "default", "a", &wrong, &with_grace(0), false);
        assert_eq!(e.unwrap_err().code, 409);
        let mine = Preconditions {
            uid: p["metadata"]["uid"].as_str().map(str::to_string),
            ..Default::default()
        };
        s.delete_with(rid::PODS, "default", "a", &mine, &with_grace(0), false)
            .unwrap();
        assert_eq!(s.get(rid::PODS, "default", "a").unwrap_err().code, 404);
    }

    #[test]
    fn grace_periods_come_from_the_request_the_spec_or_nothing_to_wait_for() {
        let s = store(100);
        let none = Preconditions::default();
        let mut custom = pod("c", "n1");
        custom["spec"]["terminationGracePeriodSeconds"] = json!(7);
        s.create(rid::PODS, "default", custom, false).unwrap();
        let marked = s.delete(rid::PODS, "default", "c", &none, false).unwrap();
        assert_eq!(grace(&marked), Some(7));
        s.create(rid::PODS, "default", pod("r", "n1"), false).unwrap();
        let marked = s
            .delete_with(rid::PODS, "default", "r", &none, &with_grace(3), false)
            .unwrap();
        assert_eq!(grace(&marked), Some(3));
        // No kubelet runs an unbound pod: it goes at once.
        s.create(rid::PODS, "default", pod("u", ""), false).unwrap();
        s.delete(rid::PODS, "default", "u", &none, false).unwrap();
        assert_eq!(s.get(rid::PODS, "default", "u").unwrap_err().code, 404);
        // Grace 0 (`--force --grace-period=0`) removes a bound pod now.
        s.create(rid::PODS, "default", pod("f", "n1"), false).unwrap();
        s.delete_with(rid::PODS, "default", "f", &none, &with_grace(0), false)
            .unwrap();
        assert_eq!(s.get(rid::PODS, "default", "f").unwrap_err().code, 404);
        // A dry run reports the mark without making it.
        s.create(rid::PODS, "default", pod("d", "n1"), false).unwrap();
        let dry = s.delete(rid::PODS, "default", "d", &none, true).unwrap();
        assert_eq!(grace(&dry), Some(30));
        assert!(!meta::is_terminating(&s.get(rid::PODS, "default", "d").unwrap()));
    }

    #[test]
    fn finalizers_keep_an_object_until_an_update_removes_the_last() {
        let s = store(100);
        let none = Preconditions::default();
        let cm = json!({"metadata": {"name": "held", "finalizers": ["example.com/a", "example.com/b"]}});
        s.create(cm_id(), "default", cm, false).unwrap();
        let marked = s.delete(cm_id(), "default", "held", &none, false).unwrap();
        assert!(meta::is_terminating(&marked));
        assert_eq!(grace(&marked), Some(0));
        // Deleting again changes nothing.
        let again = s.delete(cm_id(), "default", "held", &none, false).unwrap();
        assert_eq!(resource_version_of(&again), resource_version_of(&marked));
        // No finalizer may be added once deleting.
        let mut more = (*marked).clone();
        more["metadata"]["finalizers"] = json!(["example.com/a", "example.com/b", "example.com/c"]);
        let e = s
            .update(cm_id(), "default", "held", more, Part::Main, false)
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("no new finalizers"), "{}", e.message);
        let mut one = (*marked).clone();
        one["metadata"]["finalizers"] = json!(["example.com/b"]);
        let one = s.update(cm_id(), "default", "held", one, Part::Main, false).unwrap();
        assert!(s.get(cm_id(), "default", "held").is_ok());
        let mut zero = (*one).clone();
        zero["metadata"]["finalizers"] = json!([]);
        s.update(cm_id(), "default", "held", zero, Part::Main, false).unwrap();
        assert_eq!(s.get(cm_id(), "default", "held").unwrap_err().code, 404);

        // A terminating pod with a finalizer waits for both: its kubelet's
        // delete, then the finalizer.
        let mut p = pod("p", "n1");
        p["metadata"]["finalizers"] = json!(["example.com/a"]);
        s.create(rid::PODS, "default", p, false).unwrap();
        s.delete(rid::PODS, "default", "p", &none, false).unwrap();
        let last = s
            .delete_with(rid::PODS, "default", "p", &none, &with_grace(0), false)
            .unwrap();
        assert_eq!(grace(&last), Some(0));
        let mut done = (*last).clone();
        done["metadata"]["finalizers"] = json!([]);
        s.update(rid::PODS, "default", "p", done, Part::Main, false).unwrap();
        assert_eq!(s.get(rid::PODS, "default", "p").unwrap_err().code, 404);
    }

    #[test]
    fn propagation_policies_become_the_garbage_collectors_finalizers() {
        let s = store(100);
        let none = Preconditions::default();
        let by = |p: Propagation| DeletePolicy {
            grace_period_seconds: None,
            propagation: Some(p),
        };
        let fins = |o: &Value| o["metadata"]["finalizers"].clone();
        for name in ["fg", "or", "bg"] {
            s.create(cm_id(), "default", json!({"metadata": {"name": name}}), false)
                .unwrap();
        }
        let fg = s
            .delete_with(cm_id(), "default", "fg", &none, &by(Propagation::Foreground), false)
            .unwrap();
        assert_eq!(fins(&fg), json!([FOREGROUND]));
        assert!(meta::is_terminating(&fg));
        let or = s
            .delete_with(cm_id(), "default", "or", &none, &by(Propagation::Orphan), false)
            .unwrap();
        assert_eq!(fins(&or), json!([ORPHAN]));
        // Background: nothing to wait for, gone now.
        s.delete_with(cm_id(), "default", "bg", &none, &by(Propagation::Background), false)
            .unwrap();
        assert_eq!(s.get(cm_id(), "default", "bg").unwrap_err().code, 404);
        // Another policy on a second delete swaps the finalizer.
        let swapped = s
            .delete_with(cm_id(), "default", "or", &none, &by(Propagation::Foreground), false)
            .unwrap();
        assert_eq!(fins(&swapped), json!([FOREGROUND]));
        // A graceful pod keeps its grace period beside the finalizer.
        s.create(rid::PODS, "default", pod("p", "n1"), false).unwrap();
        let p = s
            .delete_with(rid::PODS, "default", "p", &none, &by(Propagation::Foreground), false)
            .unwrap();
        assert_eq!((fins(&p), grace(&p)), (json!([FOREGROUND]), Some(30)));
    }

    #[test]
    fn list_selectors_and_paging() {
        let s = store(100);
        for (n, node) in [("a", "n1"), ("b", "n2"), ("c", "n1"), ("d", "n1")] {
            s.create(rid::PODS, "default", pod(n, node), false).unwrap();
        }
        let sel = Selectors {
            labels: LabelSelector::default(),
            fields: FieldSelector::parse("spec.nodeName=n1").unwrap(),
        };
        let names = |p: &ListPage| p.items.iter().map(|o| name_of(o).to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&s.list(rid::PODS, Some("default"), &sel, None, None).unwrap()),
            ["a", "c", "d"]
        );
        let first = s.list(rid::PODS, None, &sel, Some(2), None).unwrap();
        assert_eq!(names(&first), ["a", "c"]);
        assert_eq!(first.remaining, Some(1));
        let tok = first.continue_token.clone().unwrap();
        let second = s.list(rid::PODS, None, &sel, Some(2), Some(&tok)).unwrap();
        assert_eq!(names(&second), ["d"]);
        assert!(second.continue_token.is_none());
        assert_eq!(second.resource_version, first.resource_version);
        let lsel = Selectors {
            labels: LabelSelector::parse("app in (b,d)").unwrap(),
            fields: FieldSelector::default(),
        };
        assert_eq!(names(&s.list(rid::PODS, None, &lsel, None, None).unwrap()), ["b", "d"]);
        assert!(s.list(rid::PODS, None, &lsel, None, Some("!!")).is_err());
        assert!(
            s.list(rid::PODS, Some("kube-system"), &lsel, None, None)
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[test]
    fn history_and_expiry() {
        let s = store(3);
        let cm = cm_id();
        let start = s.resource_version();
        for i in 0..5 {
            s.create(cm, "default", json!({"metadata": {"name": format!("c{i}")}}), false)
                .unwrap();
        }
        // 5 new events, 3 kept: versions start+3..start+5.
        assert_eq!(s.events_after(cm, start).unwrap_err().code, 410);
        assert_eq!(s.check_watchable(cm, start + 1).unwrap_err().code, 410);
        let evs = s.events_after(cm, start + 2).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.rv).collect::<Vec<_>>(),
            [start + 3, start + 4, start + 5]
        );
        assert_eq!(s.events_after(cm, start + 4).unwrap().len(), 1);
        assert!(s.events_after(cm, start + 5).unwrap().is_empty());
        // Other resources' histories are independent.
        assert!(s.events_after(rid::PODS, start).is_ok());
        // Bookmarks: all seen → current rv; unseen events pending → none.
        assert_eq!(s.bookmark_rv(cm, start + 5), Some(start + 5));
        assert_eq!(s.bookmark_rv(cm, start + 4), None);
        assert_eq!(s.bookmark_rv(rid::NODES, 0), Some(start + 5));
    }

    #[test]
    fn typed_helpers() {
        use k8s_openapi::api::core::v1::Node;
        let s = store(10);
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        let created = s.create_as(&n).unwrap();
        assert!(created.metadata.uid.is_some());
        assert_eq!(s.list_as::<Node>(None).len(), 1);
        assert!(s.get_as::<Node>("", "n1").is_some());
        s.delete_as::<Node>("", "n1").unwrap();
        assert!(s.get_as::<Node>("", "n1").is_none());
    }
}
