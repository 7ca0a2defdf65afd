//! Reading a pod's status the way the mesh tests ask about it: its phase,
//! Istio's `istio-validation` init container, the app containers' restarts.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// The init container Istio injects when CNI is on.
pub const VALIDATION: &str = "istio-validation";

/// The pod's phase, `""` before the kubelet reports one.
pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

pub fn running(p: &Pod) -> bool {
    phase(p) == "Running"
}

/// The `istio-validation` init container's status.
pub fn validation(p: &Pod) -> Option<&ContainerStatus> {
    p.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == VALIDATION)
}

/// `(current exit code, last exit code, restarts)` of `istio-validation`.
pub fn validation_exits(p: &Pod) -> (Option<i32>, Option<i32>, i32) {
    let Some(c) = validation(p) else {
        return (None, None, 0);
    };
    let exit = |s: Option<&k8s_openapi::api::core::v1::ContainerState>| {
        s.and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code)
    };
    (exit(c.state.as_ref()), exit(c.last_state.as_ref()), c.restart_count)
}

/// Restarts of the app containers (not init containers, not native sidecars).
pub fn app_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_validation_exits_phase_and_restarts() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [{
                    "name": "istio-validation", "image": "", "imageID": "", "ready": false, "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 126}}
                }],
                "containerStatuses": [
                    {"name": "a", "image": "", "imageID": "", "ready": false, "restartCount": 1},
                    {"name": "b", "image": "", "imageID": "", "ready": false, "restartCount": 3}
                ]
            }
        }))
        .unwrap();
        assert_eq!(phase(&pod), "Pending");
        assert!(!running(&pod));
        assert_eq!(validation_exits(&pod), (None, Some(126), 2));
        assert_eq!(app_restarts(&pod), 4);
        let bare = Pod::default();
        assert_eq!(
            (phase(&bare), validation_exits(&bare), app_restarts(&bare)),
            ("", (None, None, 0), 0)
        );
    }
}
