//! The broken-pod predicate (docs/repair.md#broken-pod-predicate): a pod whose
//! `istio-validation` init container failed at least once with the validator's
//! exit code and has not passed since. Pure, unchanged from Istio 1.20 to HEAD.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::config::RepairSettings;

/// What makes a pod "broken", from the REPAIR_* settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criteria {
    /// Annotation that must be present (any value); empty: no gate.
    pub sidecar_annotation: String,
    /// Init container status to inspect; empty: any.
    pub init_container_name: String,
    /// Trimmed `lastState.terminated.message` to match; empty: any.
    pub termination_message: String,
    /// `lastState.terminated.exitCode` to match; 0: any.
    pub exit_code: i64,
}

impl Criteria {
    pub fn from_settings(s: &RepairSettings) -> Criteria {
        Criteria {
            sidecar_annotation: s.repair_sidecar_annotation.clone(),
            init_container_name: s.repair_init_container_name.clone(),
            termination_message: s.repair_init_container_termination_message.trim().to_string(),
            exit_code: s.repair_init_container_exit_code,
        }
    }
}

impl Default for Criteria {
    /// Istio's defaults (the chart's values).
    fn default() -> Self {
        Criteria {
            sidecar_annotation: "sidecar.istio.io/status".into(),
            init_container_name: "istio-validation".into(),
            termination_message: String::new(),
            exit_code: 126,
        }
    }
}

/// Whether `pod` is broken under `c`.
pub fn is_broken(pod: &Pod, c: &Criteria) -> bool {
    if !c.sidecar_annotation.is_empty() {
        let annotated = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(&c.sidecar_annotation));
        if !annotated {
            return false;
        }
    }
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    statuses
        .iter()
        .filter(|s| c.init_container_name.is_empty() || s.name == c.init_container_name)
        .any(|s| !currently_succeeded(s) && last_failure_matches(s, c))
}

/// A container whose current state is a successful exit: once validation
/// passed, the pod is fine whatever happened before.
fn currently_succeeded(s: &ContainerStatus) -> bool {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("Completed") || t.exit_code == 0)
}

/// `lastState.terminated` matches the message and exit-code filters. Only
/// set after a restart, so a first failure (or `restartPolicy: Never`) never
/// matches — as in Istio (#49210).
fn last_failure_matches(s: &ContainerStatus, c: &Criteria) -> bool {
    let Some(t) = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()) else {
        return false;
    };
    let message_ok =
        c.termination_message.is_empty() || t.message.as_deref().unwrap_or_default().trim() == c.termination_message;
    let code_ok = c.exit_code == 0 || i64::from(t.exit_code) == c.exit_code;
    message_ok && code_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(annotated: bool, inits: Value) -> Pod {
        let ann = if annotated {
            json!({"sidecar.istio.io/status": "{}"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "annotations": ann},
            "status": {"initContainerStatuses": inits},
        }))
        .unwrap()
    }

    fn terminated(code: i32, reason: &str, message: &str) -> Value {
        json!({"terminated": {"exitCode": code, "reason": reason, "message": message}})
    }

    fn validation(state: Value, last: Value) -> Value {
        json!({"name": "istio-validation", "image": "proxyv2", "imageID": "", "ready": false,
               "restartCount": 1, "state": state, "lastState": last})
    }

    fn crashloop() -> Value {
        json!({"waiting": {"reason": "CrashLoopBackOff"}})
    }

    #[test]
    fn crash_looping_validation_is_broken_in_every_retry_state() {
        let c = Criteria::default();
        for state in [
            crashloop(),
            json!({"running": {}}),
            terminated(126, "Error", ""),
            json!({"waiting": {"reason": "PodInitializing"}}),
        ] {
            let p = pod(true, json!([validation(state.clone(), terminated(126, "Error", ""))]));
            assert!(is_broken(&p, &c), "{state}");
        }
    }

    #[test]
    fn the_sidecar_annotation_gates_and_its_value_is_ignored() {
        let mut c = Criteria::default();
        let inits = json!([validation(crashloop(), terminated(126, "Error", ""))]);
        assert!(!is_broken(&pod(false, inits.clone()), &c));
        let mut p = pod(false, inits.clone());
        p.metadata.annotations = Some([("sidecar.istio.io/status".to_string(), String::new())].into());
        assert!(is_broken(&p, &c), "empty value still counts");
        c.sidecar_annotation.clear();
        assert!(is_broken(&pod(false, inits), &c), "no gate when the setting is empty");
    }

    #[test]
    fn a_first_failure_without_last_state_does_not_match() {
        // Also what restartPolicy Never looks like: terminated, never restarted.
        let p = pod(true, json!([validation(terminated(126, "Error", ""), json!({}))]));
        assert!(!is_broken(&p, &Criteria::default()));
        let mut bare = validation(terminated(126, "Error", ""), json!({}));
        bare.as_object_mut().unwrap().remove("lastState");
        assert!(!is_broken(&pod(true, json!([bare])), &Criteria::default()));
    }

    #[test]
    fn passed_after_a_failure_is_not_broken() {
        let c = Criteria::default();
        let done = pod(
            true,
            json!([validation(terminated(0, "Completed", ""), terminated(126, "Error", ""))]),
        );
        assert!(!is_broken(&done, &c));
        // Either signal suffices: reason Completed or exit code 0.
        let odd = pod(
            true,
            json!([validation(terminated(3, "Completed", ""), terminated(126, "Error", ""))]),
        );
        assert!(!is_broken(&odd, &c));
    }

    #[test]
    fn exit_code_and_message_filters() {
        let last = |code, msg| pod(true, json!([validation(crashloop(), terminated(code, "Error", msg))]));
        let mut c = Criteria::default();
        assert!(!is_broken(&last(1, ""), &c), "config error exit 1 is not the race");
        c.exit_code = 0;
        assert!(is_broken(&last(1, ""), &c), "0 = any exit code");
        c.termination_message = "not ready".into();
        assert!(is_broken(&last(1, "  not ready\n"), &c), "trimmed exact match");
        assert!(!is_broken(&last(1, "not ready at all"), &c));
        assert!(!is_broken(&last(1, ""), &c));
    }

    #[test]
    fn the_name_filter_keeps_native_sidecars_out() {
        // istio-proxy (restartPolicy Always) is an init container status too;
        // its restart after a crash must not count as a validation failure.
        let proxy = json!({"name": "istio-proxy", "image": "proxyv2", "imageID": "", "ready": false,
            "restartCount": 2, "state": {"running": {}}, "lastState": terminated(126, "Error", "")});
        let ok = validation(terminated(0, "Completed", ""), json!({}));
        let p = pod(true, json!([ok, proxy]));
        assert!(!is_broken(&p, &Criteria::default()));
        let mut any = Criteria::default();
        any.init_container_name.clear();
        assert!(is_broken(&p, &any), "empty name = any init container");
        let broken = pod(
            true,
            json!([
                validation(crashloop(), terminated(126, "Error", "")),
                json!({"name": "istio-proxy", "image": "proxyv2", "imageID": "", "ready": false, "restartCount": 0})
            ]),
        );
        assert!(is_broken(&broken, &Criteria::default()));
    }

    #[test]
    fn pods_without_status_are_not_broken() {
        let mut p = pod(true, json!([]));
        assert!(!is_broken(&p, &Criteria::default()));
        p.status = None;
        assert!(!is_broken(&p, &Criteria::default()));
    }

    #[test]
    fn criteria_come_from_the_settings() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            r: RepairSettings,
        }
        let s = Cli::try_parse_from([
            "x",
            "--repair-init-container-termination-message",
            " boom ",
            "--repair-init-container-exit-code",
            "7",
        ])
        .unwrap()
        .r;
        let c = Criteria::from_settings(&s);
        assert_eq!(c.termination_message, "boom");
        assert_eq!(c.exit_code, 7);
        assert_eq!(c.init_container_name, "istio-validation");
        assert_eq!(
            Criteria::from_settings(&Cli::try_parse_from(["x"]).unwrap().r),
            Criteria::default()
        );
    }
}
