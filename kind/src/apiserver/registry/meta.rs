//! Reading and writing `metadata` of objects kept as JSON.

use serde_json::{Map, Value};

pub(crate) fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// A string field of `metadata` ("" when absent).
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
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

/// Whether the object is marked for deletion (waiting for its finalizers).
pub(crate) fn is_terminating(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|t| !t.is_null()))
}
