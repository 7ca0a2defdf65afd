//! The `scale` subresource of Deployments and ReplicaSets: the object seen
//! as an `autoscaling/v1` `Scale` (what `kubectl scale` reads and patches),
//! and a written `Scale` turned back into a change of `spec.replicas`.

use serde_json::{Value, json};

use crate::apiserver::registry::meta::{meta_str, name_of};
use crate::apiserver::registry::selectors::LabelSelector;
use crate::apiserver::status::ApiError;

/// `obj` as a `Scale`: its identity, `spec.replicas`, the observed replicas
/// and the selector in its query form.
pub(crate) fn to_scale(obj: &Value) -> Value {
    let selector = LabelSelector::query_of_spec(obj);
    let mut metadata = serde_json::Map::new();
    for key in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = obj.pointer(&format!("/metadata/{key}")) {
            metadata.insert(key.into(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// `obj` with the replicas of a written `scale`; the scale's
/// resourceVersion, when given, is a precondition (checked by the update).
pub(crate) fn apply_scale(obj: &Value, scale: &Value) -> Result<Value, ApiError> {
    let name = name_of(obj);
    if let Some(kind) = scale.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty())
        && kind != "Scale"
    {
        return Err(ApiError::bad_request(format!(
            "expected a Scale body, got kind {kind:?}"
        )));
    }
    let given = meta_str(scale, "name");
    if !given.is_empty() && given != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0 && i32::try_from(*n).is_ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "Scale.autoscaling",
                    name,
                    "spec.replicas",
                    &format!("Invalid value: {v}: must be greater than or equal to 0"),
                )
            })?,
    };
    let mut out = obj.clone();
    out["spec"]["replicas"] = json!(replicas);
    let rv = meta_str(scale, "resourceVersion");
    if !rv.is_empty() {
        out["metadata"]["resourceVersion"] = json!(rv);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Value {
        json!({"metadata": {"name": "web", "namespace": "a", "resourceVersion": "7", "uid": "u"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}})
    }

    #[test]
    fn a_deployment_as_a_scale_and_back() {
        let s = to_scale(&deploy());
        assert_eq!(s["apiVersion"], "autoscaling/v1");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        let scaled = apply_scale(&deploy(), &json!({"spec": {"replicas": 1}})).unwrap();
        assert_eq!(scaled["spec"]["replicas"], 1);
        assert_eq!(scaled["metadata"]["resourceVersion"], "7");
        let pinned = apply_scale(
            &deploy(),
            &json!({"metadata": {"resourceVersion": "3"}, "spec": {"replicas": 1}}),
        )
        .unwrap();
        assert_eq!(
            pinned["metadata"]["resourceVersion"], "3",
            "kept as the update's precondition"
        );
        assert_eq!(
            apply_scale(&deploy(), &json!({"spec": {"replicas": -1}}))
                .unwrap_err()
                .code,
            422
        );
        assert_eq!(apply_scale(&deploy(), &json!({"kind": "Pod"})).unwrap_err().code, 400);
    }
}
