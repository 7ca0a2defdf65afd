//! What a delete does, for every kind, as kube-apiserver's generic store
//! decides it:
//!
//! - the propagation policy becomes a finalizer the garbage collector owns
//!   (`Foreground` → `foregroundDeletion`, `Orphan` → `orphan`; an explicit
//!   `Background` drops both);
//! - a kind with graceful deletion (pods) gets `deletionTimestamp` = now +
//!   the grace period and `deletionGracePeriodSeconds`, and stays until a
//!   delete with grace 0 (the kubelet's, once the containers stopped); a
//!   later delete may only shorten the grace period;
//! - otherwise an object with finalizers is marked (`deletionTimestamp` =
//!   now, grace 0) and stays until an update empties them; one without is
//!   removed now.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{Deletion, of};
use crate::apiserver::registry::meta::{is_terminating, meta, meta_mut, meta_str};
use crate::apiserver::registry::resources::ResourceInfo;
use crate::apiserver::status::ApiError;

/// The finalizer that holds an owner until its blocking dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that holds an owner until its dependents no longer name it.
pub const ORPHAN: &str = "orphan";

/// `DeleteOptions.propagationPolicy` (or the legacy `orphanDependents`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    /// The policy named `s` as the API spells it.
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Orphan" => Some(Propagation::Orphan),
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            _ => None,
        }
    }
}

/// The options of a delete the store applies besides its preconditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeletePolicy {
    /// `gracePeriodSeconds`; `None` is the kind's default.
    pub grace_period_seconds: Option<i64>,
    /// `None` keeps whatever propagation finalizers the object has.
    pub propagation: Option<Propagation>,
}

/// `metadata.finalizers` of an object.
pub(crate) fn finalizers(obj: &Value) -> Vec<&str> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, list: Vec<String>) {
    let m = meta_mut(obj);
    if list.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(list));
    }
}

/// `metadata.deletionGracePeriodSeconds`.
fn grace_of(obj: &Value) -> Option<i64> {
    meta(obj)?.get("deletionGracePeriodSeconds")?.as_i64()
}

/// The propagation policy as the finalizers the garbage collector acts on.
fn apply_propagation(obj: &mut Value, propagation: Option<Propagation>) {
    let Some(p) = propagation else { return };
    let mut list: Vec<String> = finalizers(obj)
        .into_iter()
        .filter(|f| *f != FOREGROUND && *f != ORPHAN)
        .map(str::to_string)
        .collect();
    match p {
        Propagation::Foreground => list.push(FOREGROUND.into()),
        Propagation::Orphan => list.push(ORPHAN.into()),
        Propagation::Background => {}
    }
    if list.iter().map(String::as_str).ne(finalizers(obj)) {
        set_finalizers(obj, list);
    }
}

fn stamp(obj: &mut Value, at: Timestamp, grace: i64) {
    let at = Timestamp::from_second(at.as_second()).unwrap_or(at);
    let m = meta_mut(obj);
    m.insert("deletionTimestamp".into(), json!(at.to_string()));
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
}

/// What deleting `old` with `policy` at `now` does.
pub(crate) fn plan(
    info: &ResourceInfo,
    old: &Value,
    policy: &DeletePolicy,
    now: Timestamp,
) -> Result<Deletion, ApiError> {
    let strategy = of(info);
    strategy.check_delete(old)?;
    let mut obj = old.clone();
    apply_propagation(&mut obj, policy.propagation);
    let held = !finalizers(&obj).is_empty() || strategy.holds(&obj);
    let grace = strategy
        .grace_period(&obj, policy.grace_period_seconds)
        .filter(|g| *g > 0);
    let deleting = is_terminating(old);
    let since = |s: i64| now + SignedDuration::from_secs(s);
    match grace {
        Some(g) if deleting => {
            // Only a shorter grace period counts: the deadline moves earlier.
            if let Some(current) = grace_of(old).filter(|c| g < *c) {
                let marked: Timestamp = meta_str(old, "deletionTimestamp").parse().unwrap_or(now);
                stamp(&mut obj, marked - SignedDuration::from_secs(current - g), g);
            }
        }
        Some(g) => {
            stamp(&mut obj, since(g), g);
            if let Some(generation) = meta(&obj).and_then(|m| m.get("generation")).and_then(Value::as_i64) {
                meta_mut(&mut obj).insert("generation".into(), json!(generation + 1));
            }
        }
        None if !held => return Ok(Deletion::Now),
        None if deleting && grace_of(old).unwrap_or(0) == 0 => {}
        None => {
            let marked: Option<Timestamp> = meta_str(old, "deletionTimestamp").parse().ok();
            stamp(&mut obj, marked.map_or(now, |m| m.min(now)), 0);
        }
    }
    strategy.mark_deleting(&mut obj);
    Ok(Deletion::Pending(obj))
}

/// Whether an object marked for deletion may go now: no finalizer is left
/// and no grace period runs (a terminating pod waits for its kubelet).
pub(crate) fn finalized(info: &ResourceInfo, obj: &Value) -> bool {
    is_terminating(obj) && finalizers(obj).is_empty() && !of(info).holds(obj) && grace_of(obj).unwrap_or(0) == 0
}

/// An update of an object being deleted may drop finalizers, not add them.
pub(crate) fn check_finalizers(info: &ResourceInfo, old: &Value, new: &Value) -> Result<(), ApiError> {
    if !is_terminating(old) {
        return Ok(());
    }
    let before = finalizers(old);
    let added: Vec<&str> = finalizers(new).into_iter().filter(|f| !before.contains(f)).collect();
    if added.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        info.kind,
        meta_str(old, "name"),
        "metadata.finalizers",
        &format!(
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
        ),
    ))
}
