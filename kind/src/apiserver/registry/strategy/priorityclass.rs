//! PriorityClasses and the priority admission of pods.
//!
//! The two system classes exist from the start and cannot be deleted; other
//! classes may not take a `system-` name nor a value above one billion. A
//! new pod's `priority` (and `preemptionPolicy`) comes from its
//! `priorityClassName`, or from the global default class, or is 0; an
//! unknown class refuses the pod (403, as the Priority admission plugin).

use serde_json::{Value, json};

use super::Strategy;
use crate::apiserver::registry::meta::name_of;
use crate::apiserver::status::ApiError;

/// The built-in classes: name, value, description.
pub(crate) const SYSTEM: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The highest value a class other than the system ones may have.
const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;

const DEFAULT_PREEMPTION: &str = "PreemptLowerPriority";

/// The built-in classes as objects to create at start.
pub(crate) fn system_classes() -> Vec<Value> {
    SYSTEM
        .iter()
        .map(|(name, value, description)| {
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": description})
        })
        .collect()
}

pub(crate) struct PriorityClassStrategy;

impl Strategy for PriorityClassStrategy {
    fn validate_and_default(&self, name: &str, obj: &mut Value) -> Result<(), ApiError> {
        let invalid =
            |field: &str, message: &str| ApiError::invalid("PriorityClass.scheduling.k8s.io", name, field, message);
        let Some(value) = obj.get("value").and_then(Value::as_i64) else {
            return Err(invalid("value", "Required value"));
        };
        if i32::try_from(value).is_err() {
            return Err(invalid(
                "value",
                &format!("Invalid value: {value}: must fit in 32 bits"),
            ));
        }
        if name.starts_with("system-") {
            if !SYSTEM.iter().any(|(n, v, _)| *n == name && *v == value) {
                return Err(invalid(
                    "metadata.name",
                    &format!("Invalid value: {name:?}: priority class names with 'system-' prefix are reserved"),
                ));
            }
        } else if value > HIGHEST_USER_DEFINABLE {
            return Err(invalid(
                "value",
                &format!(
                    "Invalid value: {value}: maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"
                ),
            ));
        }
        match obj.get("preemptionPolicy").and_then(Value::as_str) {
            None => obj["preemptionPolicy"] = json!(DEFAULT_PREEMPTION),
            Some("PreemptLowerPriority" | "Never") => {}
            Some(other) => {
                return Err(invalid(
                    "preemptionPolicy",
                    &format!("Unsupported value: {other:?}: supported values: \"Never\", \"PreemptLowerPriority\""),
                ));
            }
        }
        Ok(())
    }

    fn check_delete(&self, obj: &Value) -> Result<(), ApiError> {
        let name = name_of(obj);
        if SYSTEM.iter().any(|(n, _, _)| *n == name) {
            return Err(ApiError::forbidden(
                format!(
                    "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: this is a system priority class and cannot be deleted"
                ),
                "scheduling.k8s.io",
                "priorityclasses",
                name,
            ));
        }
        Ok(())
    }
}

/// The Priority admission of a new pod: fills `spec.priority` and
/// `spec.preemptionPolicy` from its class among `classes`.
pub(crate) fn admit_pod<'a>(pod: &mut Value, classes: impl Iterator<Item = &'a Value>) -> Result<(), ApiError> {
    let pod_name = name_of(pod).to_string();
    let forbidden = |why: String| {
        ApiError::forbidden(
            format!("pods \"{pod_name}\" is forbidden: {why}"),
            "",
            "pods",
            &pod_name,
        )
    };
    let wanted = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let classes: Vec<&Value> = classes.collect();
    let class = match &wanted {
        Some(name) => Some(
            classes
                .iter()
                .find(|c| name_of(c) == name)
                .copied()
                .ok_or_else(|| forbidden(format!("no PriorityClass with name {name} was found")))?,
        ),
        // The global default with the lowest value, as Kubernetes picks it.
        None => classes
            .iter()
            .filter(|c| c.get("globalDefault") == Some(&Value::Bool(true)))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
            .copied(),
    };
    let priority = class.and_then(|c| c.get("value")).and_then(Value::as_i64).unwrap_or(0);
    let policy = class
        .and_then(|c| c.get("preemptionPolicy"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_PREEMPTION)
        .to_string();
    let Some(Value::Object(spec)) = pod.get_mut("spec") else {
        return Ok(());
    };
    if let Some(given) = spec.get("priority").filter(|p| !p.is_null())
        && given.as_i64() != Some(priority)
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str)
        && given != policy
    {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let (None, Some(c)) = (&wanted, class) {
        spec.insert("priorityClassName".into(), json!(name_of(c)));
    }
    spec.insert("priority".into(), json!(priority));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<Value> {
        let mut all = system_classes();
        for c in &mut all {
            let name = name_of(c).to_string();
            PriorityClassStrategy.validate_and_default(&name, c).unwrap();
        }
        all
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn the_class_gives_the_priority() {
        let all = classes();
        let mut p = pod(json!({"priorityClassName": "system-node-critical"}));
        admit_pod(&mut p, all.iter()).unwrap();
        assert_eq!(p["spec"]["priority"], 2_000_001_000);
        assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        let mut p = pod(json!({}));
        admit_pod(&mut p, all.iter()).unwrap();
        assert_eq!(p["spec"]["priority"], 0);
        assert!(p["spec"].get("priorityClassName").is_none());
    }

    #[test]
    fn an_unknown_class_or_a_wrong_priority_is_forbidden() {
        let all = classes();
        let e = admit_pod(&mut pod(json!({"priorityClassName": "gold"})), all.iter()).unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: no PriorityClass with name gold was found"
        );
        let e = admit_pod(
            &mut pod(json!({"priorityClassName": "system-cluster-critical", "priority": 5})),
            all.iter(),
        )
        .unwrap_err();
        assert!(e.message.contains("computed 2000000000"), "{}", e.message);
        let mut same = pod(json!({"priorityClassName": "system-cluster-critical", "priority": 2_000_000_000}));
        admit_pod(&mut same, all.iter()).unwrap();
    }

    #[test]
    fn the_lowest_global_default_applies_to_pods_without_a_class() {
        let mut all = classes();
        for (name, value) in [("high", 100), ("low", 10)] {
            all.push(
                json!({"metadata": {"name": name}, "value": value, "globalDefault": true, "preemptionPolicy": "Never"}),
            );
        }
        let mut p = pod(json!({}));
        admit_pod(&mut p, all.iter()).unwrap();
        assert_eq!(
            (
                &p["spec"]["priorityClassName"],
                &p["spec"]["priority"],
                &p["spec"]["preemptionPolicy"]
            ),
            (&json!("low"), &json!(10), &json!("Never"))
        );
    }

    #[test]
    fn class_rules() {
        let check = |name: &str, v: Value| {
            let mut v = v;
            PriorityClassStrategy.validate_and_default(name, &mut v).map(|()| v)
        };
        let ok = check("gold", json!({"value": 1000})).unwrap();
        assert_eq!(ok["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(check("gold", json!({})).unwrap_err().code, 422);
        let e = check("gold", json!({"value": 2_000_000_000})).unwrap_err();
        assert!(e.message.contains("maximum allowed value"), "{}", e.message);
        let e = check("system-mine", json!({"value": 1})).unwrap_err();
        assert!(e.message.contains("'system-' prefix are reserved"), "{}", e.message);
        assert!(check("system-node-critical", json!({"value": 2_000_001_000})).is_ok());
        assert!(check("gold", json!({"value": 1, "preemptionPolicy": "Sometimes"})).is_err());
        let e = PriorityClassStrategy
            .check_delete(&json!({"metadata": {"name": "system-node-critical"}}))
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            PriorityClassStrategy
                .check_delete(&json!({"metadata": {"name": "gold"}}))
                .is_ok()
        );
    }
}
