//! Deployments: the defaults of apps/v1 (RollingUpdate with 25% surge and
//! 25% unavailable, 10 old ReplicaSets kept, a 600-second progress
//! deadline), the strategy's rules, and the shared workload rules of
//! [`super::replicaset`].

use serde_json::{Value, json};

use super::Strategy;
use super::replicaset::{default_replicated, validate_replicated};
use crate::apiserver::status::ApiError;

pub(crate) struct DeploymentStrategy;

const KIND: &str = "Deployment.apps";

impl Strategy for DeploymentStrategy {
    fn validate_and_default(&self, name: &str, obj: &mut Value) -> Result<(), ApiError> {
        validate_replicated(KIND, "deployment", name, obj)?;
        default_strategy(name, obj)?;
        if let Some(Value::Object(spec)) = obj.get_mut("spec") {
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
        }
        default_replicated(obj);
        Ok(())
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }
}

/// `spec.strategy`: RollingUpdate (25%/25%) unless given; `Recreate` takes
/// no `rollingUpdate`; surge and unavailability may not both be zero.
fn default_strategy(name: &str, obj: &mut Value) -> Result<(), ApiError> {
    let invalid = |field: &str, message: &str| ApiError::invalid(KIND, name, field, message);
    let Some(Value::Object(spec)) = obj.get_mut("spec") else {
        return Ok(());
    };
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if !strategy.is_object() {
        return Err(invalid("spec.strategy", "Invalid value: must be an object"));
    }
    let ty = strategy
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or("RollingUpdate")
        .to_string();
    strategy["type"] = json!(ty);
    match ty.as_str() {
        "Recreate" => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                return Err(invalid(
                    "spec.strategy.rollingUpdate",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                ));
            }
            Ok(())
        }
        "RollingUpdate" => {
            if !strategy.get("rollingUpdate").is_some_and(Value::is_object) {
                strategy["rollingUpdate"] = json!({});
            }
            let ru = &mut strategy["rollingUpdate"];
            for field in ["maxUnavailable", "maxSurge"] {
                if ru.get(field).is_none_or(Value::is_null) {
                    ru[field] = json!("25%");
                }
                check_int_or_percent(&ru[field])
                    .map_err(|m| invalid(&format!("spec.strategy.rollingUpdate.{field}"), &m))?;
            }
            if is_zero(&ru["maxUnavailable"]) && is_zero(&ru["maxSurge"]) {
                return Err(invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "Invalid value: 0: may not be 0 when `maxSurge` is 0",
                ));
            }
            Ok(())
        }
        other => Err(invalid(
            "spec.strategy.type",
            &format!("Unsupported value: {other:?}: supported values: \"Recreate\", \"RollingUpdate\""),
        )),
    }
}

/// A count or a percentage, neither negative (a percentage of unavailable
/// pods above 100% is also refused, as in Kubernetes, but is harmless here).
fn check_int_or_percent(v: &Value) -> Result<(), String> {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => Ok(()),
        Value::String(s) if s.strip_suffix('%').is_some_and(|p| p.parse::<u32>().is_ok()) => Ok(()),
        other => Err(format!(
            "Invalid value: {other}: must be a non-negative integer or a percentage (e.g. '25%')"
        )),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse::<u32>().ok()) == Some(0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(spec: Value) -> Result<Value, ApiError> {
        let mut v = json!({"metadata": {"name": "web"}, "spec": spec});
        let s = v["spec"].as_object_mut().unwrap();
        s.entry("selector").or_insert(json!({"matchLabels": {"app": "web"}}));
        s.entry("template")
            .or_insert(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}));
        DeploymentStrategy.validate_and_default("web", &mut v)?;
        Ok(v)
    }

    #[test]
    fn defaults_as_apps_v1() {
        let d = deploy(json!({})).unwrap();
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 30);
        // A half-given rolling update gets the other half.
        let d = deploy(json!({"strategy": {"rollingUpdate": {"maxSurge": 1}}})).unwrap();
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": 1, "maxUnavailable": "25%"})
        );
        let d = deploy(json!({"strategy": {"type": "Recreate"}, "revisionHistoryLimit": 2})).unwrap();
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["revisionHistoryLimit"], 2);
    }

    #[test]
    fn strategy_rules() {
        let e = deploy(json!({"strategy": {"type": "Recreate", "rollingUpdate": {}}})).unwrap_err();
        assert!(
            e.message.contains("spec.strategy.rollingUpdate: Forbidden"),
            "{}",
            e.message
        );
        let e = deploy(json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}})).unwrap_err();
        assert!(e.message.contains("may not be 0 when `maxSurge` is 0"), "{}", e.message);
        let e = deploy(json!({"strategy": {"type": "BlueGreen"}})).unwrap_err();
        assert!(e.message.contains("Unsupported value: \"BlueGreen\""), "{}", e.message);
        let e = deploy(json!({"strategy": {"rollingUpdate": {"maxSurge": "lots"}}})).unwrap_err();
        assert!(
            e.message
                .starts_with("Deployment.apps \"web\" is invalid: spec.strategy.rollingUpdate.maxSurge")
        );
        let e = deploy(json!({"selector": {"matchLabels": {"app": "x"}}})).unwrap_err();
        assert_eq!(e.code, 422);
    }
}
