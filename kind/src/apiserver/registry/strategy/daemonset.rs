//! DaemonSets: the defaults of the spec and its pod template, and the
//! counters their status starts with.

use serde_json::{Value, json};

use super::{Strategy, pod};
use crate::apiserver::status::ApiError;

pub(crate) struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {
    fn validate_and_default(&self, _name: &str, obj: &mut Value) -> Result<(), ApiError> {
        if let Some(Value::Object(spec)) = obj.get_mut("spec") {
            spec.entry("updateStrategy").or_insert_with(
                || json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
        }
        if let Some(Value::Object(spec)) = obj.pointer_mut("/spec/template/spec") {
            pod::default_spec(spec);
        }
        Ok(())
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({
            "currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0,
        });
    }
}
