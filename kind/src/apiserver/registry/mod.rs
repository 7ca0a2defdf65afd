//! The object store: every object in memory as JSON, keyed by resource,
//! namespace and name; a global resourceVersion counter; a bounded event
//! history per resource for watches; and the RBAC policy derived from the
//! stored roles and bindings.
//!
//! Writes apply Kubernetes' server-side rules: uid, resourceVersion,
//! creationTimestamp and generation are set by the server; the namespace comes
//! from the URL; `generateName` is honoured; objects go into existing
//! namespaces only; a stale resourceVersion is a 409; the status of resources
//! with a `status` subresource only changes through it.

pub mod resources;
pub mod selectors;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine as _;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use self::resources::{ResourceId, ResourceInfo, ids as rid};
use crate::apiserver::auth::rbac::Policy;
use crate::apiserver::ids;
use crate::apiserver::registry::selectors::Selectors;
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

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but the status (for resources with a
    /// status subresource).
    Main,
    /// The `status` subresource: only the status.
    Status,
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
    /// PEM written to the `kube-root-ca.crt` ConfigMap of every namespace.
    pub root_ca_pem: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            watch_history: 1000,
            root_ca_pem: None,
        }
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
    root_ca_pem: Option<String>,
}

struct State {
    rv: u64,
    tables: Vec<Table>,
    policy: Arc<Policy>,
}

#[derive(Default)]
struct Table {
    objects: BTreeMap<(String, String), Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    /// The newest resourceVersion dropped from `history`.
    evicted_rv: u64,
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata` as a mutable map, created (and the object made an object) if needed.
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// `metadata.name` of an object.
pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace` of an object.
pub fn namespace_of(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

/// `metadata.resourceVersion` of an object.
pub fn resource_version_of(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Kubernetes' name validation for a resource.
pub fn validate_name(info: &ResourceInfo, name: &str) -> Result<(), String> {
    if info.group == "rbac.authorization.k8s.io" {
        if name == "." || name == ".." || name.contains('/') || name.contains('%') {
            return Err(format!(
                "Invalid value: {name:?}: may not be '.' or '..' and may not contain '/' or '%'"
            ));
        }
        return Ok(());
    }
    if info.plural == "namespaces" {
        if !is_dns_label(name) {
            return Err(format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
            ));
        }
        return Ok(());
    }
    if !is_dns_subdomain(name) {
        return Err(format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
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

fn parse_rv(s: &str) -> Option<u64> {
    s.parse().ok()
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
    /// `kube-public`, `kube-node-lease`) and their `default` service accounts.
    pub fn new(opts: StoreOptions) -> Store {
        let tables = resources::RESOURCES.iter().map(|_| Table::default()).collect();
        let notify = resources::RESOURCES.iter().map(|_| watch::channel(0).0).collect();
        let store = Store {
            shared: Arc::new(Shared {
                state: RwLock::new(State {
                    rv: 0,
                    tables,
                    policy: Arc::new(Policy::default()),
                }),
                notify,
                history_limit: opts.watch_history.max(1),
                root_ca_pem: opts.root_ca_pem,
            }),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = store.create(rid::NAMESPACES, "", obj, false) {
                tracing::warn!("creating namespace {ns}: {e}");
            }
        }
        store
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        read(&self.shared.state).rv
    }

    /// The RBAC policy derived from the stored roles and bindings.
    pub fn policy(&self) -> Arc<Policy> {
        read(&self.shared.state).policy.clone()
    }

    /// One object.
    pub fn get(&self, res: ResourceId, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let info = resources::info(res);
        let st = read(&self.shared.state);
        st.tables[res]
            .objects
            .get(&key(info, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))
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
        if info.namespaced
            && !st.tables[rid::NAMESPACES]
                .objects
                .contains_key(&(String::new(), ns.clone()))
        {
            return Err(ApiError::namespace_not_found(&ns));
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
        let created = self.commit(&mut st, res, k, EventType::Added, obj, None);
        if res == rid::NAMESPACES {
            self.populate_namespace(&mut st, &name);
        }
        Ok(created)
    }

    /// What the namespace controllers add to a new namespace: the `default`
    /// service account and the `kube-root-ca.crt` ConfigMap.
    fn populate_namespace(&self, st: &mut State, ns: &str) {
        let now = ids::now_rfc3339();
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns, "uid": ids::uuid4(), "creationTimestamp": now},
        });
        let k = (ns.to_string(), "default".to_string());
        if !st.tables[rid::SERVICEACCOUNTS].objects.contains_key(&k) {
            self.commit(st, rid::SERVICEACCOUNTS, k, EventType::Added, sa, None);
        }
        if let Some(ca) = &self.shared.root_ca_pem
            && let Some(cm_id) = resources::find("", "v1", "configmaps")
        {
            let cm = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "uid": ids::uuid4(), "creationTimestamp": now},
                "data": {"ca.crt": ca},
            });
            let k = (ns.to_string(), "kube-root-ca.crt".to_string());
            if !st.tables[cm_id].objects.contains_key(&k) {
                self.commit(st, cm_id, k, EventType::Added, cm, None);
            }
        }
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
        check_identity(info, ns, name, &obj)?;
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
        let old = st.tables[res]
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))?;
        let new = f(&old)?;
        let new = prepare_update(info, &old, new, part)?;
        if new == *old || dry_run {
            return Ok(if dry_run { Arc::new(new) } else { old });
        }
        Ok(self.commit(&mut st, res, k, EventType::Modified, new, Some(old)))
    }

    /// Deletes an object, checking preconditions. Deleting a namespace deletes
    /// everything in it. Returns the deleted object.
    pub fn delete(
        &self,
        res: ResourceId,
        ns: &str,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let info = resources::info(res);
        if res == rid::NAMESPACES && matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(ApiError::forbidden(
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
                "",
                "namespaces",
                name,
            ));
        }
        let mut st = write(&self.shared.state);
        let k = key(info, ns, name);
        let old = st.tables[res]
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))?;
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
        if dry_run {
            return Ok(old);
        }
        if res == rid::NAMESPACES {
            for (i, r) in resources::RESOURCES.iter().enumerate() {
                if !r.namespaced {
                    continue;
                }
                let keys: Vec<_> = st.tables[i]
                    .objects
                    .range((name.to_string(), String::new())..)
                    .take_while(|(kk, _)| kk.0 == name)
                    .map(|(kk, _)| kk.clone())
                    .collect();
                for kk in keys {
                    self.remove(&mut st, i, &kk);
                }
            }
        }
        self.remove(&mut st, res, &k)
            .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))
    }

    /// Deletes every object matching the selectors; returns them.
    pub fn delete_collection(
        &self,
        res: ResourceId,
        ns: Option<&str>,
        sel: &Selectors,
        dry_run: bool,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let page = self.list(res, ns, sel, None, None)?;
        if dry_run {
            return Ok(page.items);
        }
        let mut out = Vec::new();
        for obj in page.items {
            match self.delete(res, namespace_of(&obj), name_of(&obj), &Preconditions::default(), false) {
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
        while table.history.len() > self.shared.history_limit {
            if let Some(e) = table.history.pop_front() {
                table.evicted_rv = e.rv;
            }
        }
        if matches!(
            res,
            rid::CLUSTERROLES | rid::CLUSTERROLEBINDINGS | rid::ROLES | rid::ROLEBINDINGS
        ) {
            let vals = |i: ResourceId| st.tables[i].objects.values().map(|v| &**v);
            let policy = Policy::from_objects(
                vals(rid::CLUSTERROLES),
                vals(rid::ROLES),
                vals(rid::CLUSTERROLEBINDINGS),
                vals(rid::ROLEBINDINGS),
            );
            st.policy = Arc::new(policy);
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

/// Checks the name/namespace of a PUT body against the URL.
fn check_identity(info: &ResourceInfo, ns: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
    let body_name = name_of(obj);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_ns = namespace_of(obj);
    if info.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Checks `kind`/`apiVersion` of a body and fills them in.
fn set_type_meta(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let av = info.api_version();
    if let Some(given) = obj.get("apiVersion").and_then(Value::as_str).filter(|s| !s.is_empty())
        && given != av
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({given}) does not match the expected API version ({av})"
        )));
    }
    if let Some(given) = obj.get("kind").and_then(Value::as_str).filter(|s| !s.is_empty())
        && given != info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({given}) does not match the expected kind ({})",
            info.kind
        )));
    }
    obj["apiVersion"] = json!(av);
    obj["kind"] = json!(info.kind);
    Ok(())
}

/// Server-side rules for a new object (everything that needs no lock).
fn prepare_create(info: &ResourceInfo, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    set_type_meta(info, &mut obj)?;
    let body_ns = namespace_of(&obj).to_string();
    let name = name_of(&obj).to_string();
    let generate = meta_str(&obj, "generateName").to_string();
    let m = meta_mut(&mut obj);
    if info.namespaced {
        let ns = match (ns.is_empty(), body_ns.is_empty()) {
            (false, false) if ns != body_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (false, _) => ns.to_string(),
            (true, false) => body_ns,
            (true, true) => "default".to_string(),
        };
        m.insert("namespace".into(), json!(ns));
    } else {
        m.remove("namespace");
    }
    if name.is_empty() && generate.is_empty() {
        return Err(ApiError::invalid(
            info.kind,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    if !name.is_empty() {
        validate_name(info, &name).map_err(|msg| ApiError::invalid(info.kind, &name, "metadata.name", &msg))?;
    }
    m.insert("uid".into(), json!(ids::uuid4()));
    m.insert("creationTimestamp".into(), json!(ids::now_rfc3339()));
    for server_only in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(server_only);
    }
    if info.generation {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    validate_and_default(info, &name, &mut obj)?;
    initial_status(info, &mut obj);
    Ok(obj)
}

/// Kubernetes' defaults for a pod spec (also a pod template's).
fn default_pod_spec(spec: &mut Map<String, Value>) {
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("serviceAccountName", json!("default")),
    ];
    for (k, v) in defaults {
        spec.entry(k).or_insert(v);
    }
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        spec.entry("serviceAccount").or_insert(sa);
    }
}

/// Per-kind validation and defaults, on create and on every update of the
/// main resource.
fn validate_and_default(info: &ResourceInfo, name: &str, obj: &mut Value) -> Result<(), ApiError> {
    match (info.group, info.kind) {
        ("", "Pod") => {
            let containers = obj.pointer("/spec/containers").and_then(Value::as_array);
            let Some(cs) = containers.filter(|cs| !cs.is_empty()) else {
                return Err(ApiError::invalid("Pod", name, "spec.containers", "Required value"));
            };
            for (i, c) in cs.iter().enumerate() {
                for field in ["name", "image"] {
                    if c.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                        return Err(ApiError::invalid(
                            "Pod",
                            name,
                            &format!("spec.containers[{i}].{field}"),
                            "Required value",
                        ));
                    }
                }
            }
            if let Some(Value::Object(spec)) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(Value::Object(spec)) = obj.get_mut("spec") {
                spec.entry("updateStrategy").or_insert_with(
                    || json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
            }
            if let Some(Value::Object(spec)) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        _ => {}
    }
    Ok(())
}

/// What a new object's status starts as.
fn initial_status(info: &ResourceInfo, obj: &mut Value) {
    match (info.group, info.kind) {
        ("", "Pod") => obj["status"] = json!({"phase": "Pending"}),
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        ("apps", "DaemonSet") => {
            obj["status"] = json!({
                "currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0,
            });
        }
        _ => {}
    }
}

/// Server-side rules for an update of `old` to `new`.
fn prepare_update(info: &ResourceInfo, old: &Value, mut new: Value, part: Part) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    set_type_meta(info, &mut new)?;
    let name = name_of(old).to_string();
    let old_rv = resource_version_of(old).to_string();
    let old_uid = meta_str(old, "uid").to_string();
    let given_rv = resource_version_of(&new).to_string();
    if !given_rv.is_empty() && given_rv != old_rv {
        if parse_rv(&given_rv).is_none() {
            return Err(ApiError::bad_request(format!("invalid resourceVersion {given_rv:?}")));
        }
        return Err(ApiError::stale(info.group, info.plural, &name));
    }
    let given_uid = meta_str(&new, "uid").to_string();
    if !given_uid.is_empty() && given_uid != old_uid {
        return Err(ApiError::conflict(
            info.group,
            info.plural,
            &name,
            &format!("Precondition failed: UID in precondition: {given_uid}, UID in object meta: {old_uid}"),
        ));
    }
    let mut out = match part {
        Part::Status => {
            let mut out = old.clone();
            match new.get("status") {
                Some(s) => out["status"] = s.clone(),
                None => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            // kube-apiserver's pod status strategy keeps the spec, owner
            // references and deletion timestamp but takes the rest of the
            // metadata from the request: controllers with only `pods/status`
            // rights (Istio's labelPods) label pods this way. Other kinds'
            // status strategies keep the old metadata.
            let metadata_keys: &[&str] = if info.group.is_empty() && info.plural == "pods" {
                &["labels", "annotations"]
            } else {
                &[]
            };
            for key in metadata_keys.iter().copied() {
                let value = new.get("metadata").and_then(|m| m.get(key)).cloned();
                if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
                    match value {
                        Some(v) => meta.insert(key.into(), v),
                        None => meta.remove(key),
                    };
                }
            }
            out
        }
        Part::Main => {
            if info.has_status_subresource() {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            new
        }
    };
    // Server-owned metadata comes from the stored object.
    let old_meta = meta(old).cloned().unwrap_or_default();
    let m = meta_mut(&mut out);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    if part == Part::Main {
        validate_and_default(info, &name, &mut out)?;
    }
    if info.generation && part == Part::Main && out.get("spec") != old.get("spec") {
        let g = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        meta_mut(&mut out).insert("generation".into(), json!(g + 1));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::selectors::{FieldSelector, LabelSelector};

    fn store(history: usize) -> Store {
        Store::new(StoreOptions {
            watch_history: history,
            root_ca_pem: Some("PEM".into()),
        })
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
    }

    fn cm_id() -> ResourceId {
        resources::find("", "v1", "configmaps").unwrap()
    }

    #[test]
    fn system_namespaces_and_defaults() {
        let s = store(10);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let n = s.get(rid::NAMESPACES, "", ns).unwrap();
            assert_eq!(n["status"]["phase"], "Active");
            assert!(s.get(rid::SERVICEACCOUNTS, ns, "default").is_ok());
            assert_eq!(s.get(cm_id(), ns, "kube-root-ca.crt").unwrap()["data"]["ca.crt"], "PEM");
        }
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
    fn delete_preconditions_and_namespace_cascade() {
        let s = store(100);
        s.create(rid::NAMESPACES, "", json!({"metadata": {"name": "t"}}), false)
            .unwrap();
        let p = s.create(rid::PODS, "t", pod("a", "n"), false).unwrap();
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
        assert!(parse_rv(resource_version_of(&d)).unwrap() > parse_rv(resource_version_of(&p)).unwrap());
        assert_eq!(s.delete(rid::PODS, "t", "a", &ok, false).unwrap_err().code, 404);
        s.create(rid::PODS, "t", pod("b", "n"), false).unwrap();
        let e = s.delete(rid::NAMESPACES, "", "kube-system", &Preconditions::default(), false);
        assert_eq!(e.unwrap_err().code, 403);
        s.delete(rid::NAMESPACES, "", "t", &Preconditions::default(), false)
            .unwrap();
        assert_eq!(s.get(rid::PODS, "t", "b").unwrap_err().code, 404);
        assert_eq!(s.get(rid::SERVICEACCOUNTS, "t", "default").unwrap_err().code, 404);
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
    fn rbac_policy_follows_writes() {
        let s = store(10);
        assert!(s.policy().cluster_roles.is_empty());
        s.create(
            rid::CLUSTERROLES,
            "",
            json!({"metadata": {"name": "r"}, "rules": []}),
            false,
        )
        .unwrap();
        assert!(s.policy().cluster_roles.contains_key("r"));
        s.delete(rid::CLUSTERROLES, "", "r", &Preconditions::default(), false)
            .unwrap();
        assert!(s.policy().cluster_roles.is_empty());
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
