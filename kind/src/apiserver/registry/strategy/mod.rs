//! The server-side rules of a write, as Kubernetes' registry strategies:
//! what every object gets (type meta, uid, creationTimestamp, generation,
//! name rules, server-owned metadata kept across updates), and per resource
//! kind what a [`Strategy`] adds (defaults, validation, the initial status,
//! what a status write may change, what a delete does).

pub(crate) mod daemonset;
pub(crate) mod deletion;
pub(crate) mod deployment;
pub(crate) mod namespace;
pub(crate) mod pod;
pub(crate) mod priorityclass;
pub(crate) mod replicaset;
pub(crate) mod scale;

use serde_json::{Value, json};

use super::meta::{meta, meta_mut, meta_str, name_of, namespace_of, resource_version_of};
use super::resources::ResourceInfo;
use crate::apiserver::ids;
use crate::apiserver::status::ApiError;

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but the status (for resources with a
    /// status subresource).
    Main,
    /// The `status` subresource: only the status.
    Status,
    /// The `finalize` subresource of namespaces: only `spec.finalizers`.
    Finalize,
    /// The `ephemeralcontainers` subresource of pods: only
    /// `spec.ephemeralContainers`, which may only grow.
    EphemeralContainers,
}

/// What a delete does to a stored object.
#[derive(Debug)]
pub(crate) enum Deletion {
    /// Remove it now.
    Now,
    /// Keep it, marked for deletion (this new state), until its finalizers ran.
    Pending(Value),
}

/// The rules of one resource kind. The defaults are those of a kind with no
/// rules of its own.
pub(crate) trait Strategy: Sync {
    /// Validation and defaults, on create and on every update of the main
    /// resource.
    fn validate_and_default(&self, _name: &str, _obj: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// What a new object's status starts as.
    fn initial_status(&self, _obj: &mut Value) {}

    /// The metadata fields a write through the `status` subresource takes
    /// from the request (the rest of the metadata is kept).
    fn status_metadata(&self) -> &'static [&'static str] {
        &[]
    }

    /// Refuses deletes the kind never allows.
    fn check_delete(&self, _obj: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// The grace period of a delete that asked for `requested`, for kinds
    /// deleted gracefully; `None` for the others (see [`deletion`]).
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }

    /// Whether something of the kind's own (not `metadata.finalizers`)
    /// keeps the object while it is being deleted.
    fn holds(&self, _obj: &Value) -> bool {
        false
    }

    /// What else marks an object of the kind as being deleted.
    fn mark_deleting(&self, _obj: &mut Value) {}
}

struct Plain;

impl Strategy for Plain {}

/// The strategy of a resource.
pub(crate) fn of(info: &ResourceInfo) -> &'static dyn Strategy {
    match (info.group, info.kind) {
        ("", "Pod") => &pod::PodStrategy,
        ("", "Namespace") => &namespace::NamespaceStrategy,
        ("apps", "DaemonSet") => &daemonset::DaemonSetStrategy,
        ("apps", "Deployment") => &deployment::DeploymentStrategy,
        ("apps", "ReplicaSet") => &replicaset::ReplicaSetStrategy,
        ("scheduling.k8s.io", "PriorityClass") => &priorityclass::PriorityClassStrategy,
        _ => &Plain,
    }
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

/// Checks the name/namespace of a PUT body against the URL.
pub(crate) fn check_identity(info: &ResourceInfo, ns: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
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
pub(crate) fn prepare_create(info: &ResourceInfo, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
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
    let strategy = of(info);
    strategy.validate_and_default(&name, &mut obj)?;
    strategy.initial_status(&mut obj);
    Ok(obj)
}

/// Metadata only the server sets: always taken from the stored object.
const SERVER_OWNED: [&str; 8] = [
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Server-side rules for an update of `old` to `new`.
pub(crate) fn prepare_update(info: &ResourceInfo, old: &Value, mut new: Value, part: Part) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    set_type_meta(info, &mut new)?;
    let name = name_of(old).to_string();
    let old_rv = resource_version_of(old).to_string();
    let old_uid = meta_str(old, "uid").to_string();
    let given_rv = resource_version_of(&new).to_string();
    if !given_rv.is_empty() && given_rv != old_rv {
        if given_rv.parse::<u64>().is_err() {
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
    let strategy = of(info);
    let mut out = match part {
        Part::Status => {
            let mut out = old.clone();
            set_or_remove(&mut out, "status", new.get("status").cloned());
            for key in strategy.status_metadata().iter().copied() {
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
        Part::Finalize => namespace::finalize(old, &new),
        Part::EphemeralContainers => pod::ephemeral_containers(old, &new)?,
        Part::Main => {
            deletion::check_finalizers(info, old, &new)?;
            if info.has_status_subresource() {
                set_or_remove(&mut new, "status", old.get("status").cloned());
            }
            new
        }
    };
    let old_meta = meta(old).cloned().unwrap_or_default();
    let m = meta_mut(&mut out);
    for field in SERVER_OWNED {
        match old_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    if part == Part::Main {
        strategy.validate_and_default(&name, &mut out)?;
    }
    if info.generation && part == Part::Main && out.get("spec") != old.get("spec") {
        let g = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        meta_mut(&mut out).insert("generation".into(), json!(g + 1));
    }
    Ok(out)
}

/// Sets a top-level field of an object, or removes it for `None`.
fn set_or_remove(obj: &mut Value, key: &str, value: Option<Value>) {
    match value {
        Some(v) => obj[key] = v,
        None => {
            if let Some(m) = obj.as_object_mut() {
                m.remove(key);
            }
        }
    }
}
