//! ReplicaSets: the defaults of the spec and its pod template, the rules
//! every replicated workload (ReplicaSet, Deployment) shares about its
//! selector, template and replica count, and the status it starts with.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;
use serde_json::{Value, json};

use super::{Strategy, pod};
use crate::apiserver::registry::selectors::LabelSelector;
use crate::apiserver::status::ApiError;

pub(crate) struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    fn validate_and_default(&self, name: &str, obj: &mut Value) -> Result<(), ApiError> {
        validate_replicated("ReplicaSet.apps", "replicaset", name, obj)?;
        default_replicated(obj);
        Ok(())
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"replicas": 0});
    }
}

/// The defaults a ReplicaSet and a Deployment share: one replica, the pod
/// template's spec defaults.
pub(crate) fn default_replicated(obj: &mut Value) {
    if let Some(Value::Object(spec)) = obj.get_mut("spec") {
        spec.entry("replicas").or_insert(json!(1));
    }
    if let Some(Value::Object(spec)) = obj.pointer_mut("/spec/template/spec") {
        pod::default_spec(spec);
    }
}

/// The rules a ReplicaSet and a Deployment share: a non-empty selector that
/// selects the template's labels, a template with containers, a replica
/// count that is not negative. `kind` is the qualified kind for messages
/// (`Deployment.apps`), `short` the lower-case kind (`deployment`).
pub(crate) fn validate_replicated(kind: &str, short: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
    let invalid = |field: &str, message: &str| ApiError::invalid(kind, name, field, message);
    if let Some(r) = obj.pointer("/spec/replicas").filter(|r| !r.is_null()) {
        match r.as_i64() {
            Some(n) if n >= 0 && i32::try_from(n).is_ok() => {}
            Some(n) if n < 0 => {
                return Err(invalid(
                    "spec.replicas",
                    &format!("Invalid value: {n}: must be greater than or equal to 0"),
                ));
            }
            _ => {
                return Err(invalid(
                    "spec.replicas",
                    &format!("Invalid value: {r}: must be an integer"),
                ));
            }
        }
    }
    let Some(raw) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return Err(invalid("spec.selector", "Required value"));
    };
    let api: ApiSelector = serde_json::from_value(raw.clone())
        .map_err(|e| invalid("spec.selector", &format!("Invalid value: {raw}: {e}")))?;
    let selector =
        LabelSelector::from_api(&api).map_err(|e| invalid("spec.selector", &format!("Invalid value: {e}")))?;
    if selector.is_empty() {
        return Err(invalid(
            "spec.selector",
            &format!("Invalid value: {raw}: empty selector is invalid for {short}"),
        ));
    }
    let labels: BTreeMap<String, String> = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if !selector.matches(&labels) {
        return Err(invalid(
            "spec.template.metadata.labels",
            &format!("Invalid value: {labels:?}: `selector` does not match template `labels`"),
        ));
    }
    pod::validate_containers(kind, name, obj.pointer("/spec/template/spec"), "spec.template.spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(v: Value) -> Result<Value, ApiError> {
        let mut v = v;
        ReplicaSetStrategy.validate_and_default("web", &mut v)?;
        Ok(v)
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn defaults_one_replica_and_the_pod_defaults() {
        let v = rs(json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}})).unwrap();
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let v =
            rs(json!({"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template()}}))
                .unwrap();
        assert_eq!(v["spec"]["replicas"], 0, "zero is kept");
    }

    #[test]
    fn the_selector_must_select_the_template() {
        let e = rs(json!({"spec": {"template": template()}})).unwrap_err();
        assert_eq!(
            e.message,
            "ReplicaSet.apps \"web\" is invalid: spec.selector: Required value"
        );
        let e = rs(json!({"spec": {"selector": {}, "template": template()}})).unwrap_err();
        assert!(
            e.message.contains("empty selector is invalid for replicaset"),
            "{}",
            e.message
        );
        let e =
            rs(json!({"spec": {"selector": {"matchLabels": {"app": "other"}}, "template": template()}})).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("spec.template.metadata.labels: Invalid value: {\"app\": \"web\"}: `selector` does not match template `labels`"),
            "{}",
            e.message
        );
        let e =
            rs(json!({"spec": {"replicas": -1, "selector": {"matchLabels": {"app": "web"}}, "template": template()}}))
                .unwrap_err();
        assert!(e.message.contains("spec.replicas: Invalid value: -1"), "{}", e.message);
        let e = rs(json!({"spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}))
        .unwrap_err();
        assert!(
            e.message.contains("spec.template.spec.containers: Required value"),
            "{}",
            e.message
        );
    }
}
