//! Every rule the API server has about pods: defaults and validation, the
//! initial status, what a `pods/status` write may change, `pods/binding`,
//! which container `pods/log` reads, and the STATUS column kubectl shows.

use serde_json::{Map, Value, json};

use super::Strategy;
use crate::apiserver::registry::meta::name_of;
use crate::apiserver::status::ApiError;

pub(crate) struct PodStrategy;

impl Strategy for PodStrategy {
    fn validate_and_default(&self, name: &str, obj: &mut Value) -> Result<(), ApiError> {
        validate_containers("Pod", name, obj.get("spec"), "spec")?;
        if let Some(Value::Object(spec)) = obj.get_mut("spec") {
            default_spec(spec);
            default_tolerations(spec);
        }
        Ok(())
    }

    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    /// kube-apiserver's pod status strategy keeps the spec, owner references
    /// and deletion timestamp but takes labels and annotations from the
    /// request: controllers with only `pods/status` rights (Istio's
    /// labelPods) label pods this way.
    fn status_metadata(&self) -> &'static [&'static str] {
        &["labels", "annotations"]
    }

    /// Pods are deleted gracefully: the requested period, else the spec's
    /// `terminationGracePeriodSeconds`, else 30 s; a pod no kubelet runs
    /// (unbound, or finished) has nothing to wait for; a negative period is 1 s.
    fn grace_period(&self, pod: &Value, requested: Option<i64>) -> Option<i64> {
        let spec = |p: &str| pod.pointer(p).and_then(Value::as_i64);
        let mut period = requested
            .or_else(|| spec("/spec/terminationGracePeriodSeconds"))
            .unwrap_or(30);
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if node.is_empty() || matches!(phase, "Succeeded" | "Failed") {
            period = 0;
        }
        Some(if period < 0 { 1 } else { period })
    }
}

/// The containers of a pod spec (or a template's, at `path`): at least one,
/// each with a name and an image.
pub(crate) fn validate_containers(kind: &str, name: &str, spec: Option<&Value>, path: &str) -> Result<(), ApiError> {
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    let Some(cs) = containers.filter(|cs| !cs.is_empty()) else {
        return Err(ApiError::invalid(
            kind,
            name,
            &format!("{path}.containers"),
            "Required value",
        ));
    };
    for (i, c) in cs.iter().enumerate() {
        for field in ["name", "image"] {
            if c.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    &format!("{path}.containers[{i}].{field}"),
                    "Required value",
                ));
            }
        }
    }
    Ok(())
}

/// Kubernetes' defaults for a pod spec (also a pod template's).
pub(crate) fn default_spec(spec: &mut Map<String, Value>) {
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("serviceAccountName", json!("default")),
        // Clients rely on it being there (kubectl debug reads its fields).
        ("securityContext", json!({})),
    ];
    for (k, v) in defaults {
        spec.entry(k).or_insert(v);
    }
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        spec.entry("serviceAccount").or_insert(sa);
    }
}

/// The taints of a node that is not ready or unreachable, which every pod
/// tolerates for [`DEFAULT_TOLERATION_SECONDS`] unless it says otherwise.
const NODE_PROBLEM_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];
/// kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
pub(crate) const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The DefaultTolerationSeconds admission: a pod not tolerating a node
/// problem's `NoExecute` taint gets a toleration of it for 300 s, so the
/// taint manager evicts it only after that long on a failed node.
fn default_tolerations(spec: &mut Map<String, Value>) {
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in NODE_PROBLEM_TAINTS {
        let covered = list.iter().any(|t| {
            let field = |f: &str| t.get(f).and_then(Value::as_str).unwrap_or("");
            let key_matches = field("key") == key || (field("key").is_empty() && field("operator") == "Exists");
            key_matches && matches!(field("effect"), "" | "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
}

/// `pods/ephemeralcontainers`: the stored pod with the request's
/// `spec.ephemeralContainers` and nothing else of it. Ephemeral containers
/// can be added, never changed or removed; each needs a name no other
/// container of the pod has, and an image; probes, ports, resources and
/// lifecycle hooks are not allowed on them.
pub(crate) fn ephemeral_containers(old: &Value, new: &Value) -> Result<Value, ApiError> {
    let name = name_of(old);
    let invalid = |field: &str, why: &str| ApiError::invalid("Pod", name, field, why);
    let list = |v: &Value| {
        v.pointer("/spec/ephemeralContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (before, after) = (list(old), list(new));
    for (i, kept) in before.iter().enumerate() {
        if after.get(i) != Some(kept) {
            return Err(invalid(
                &format!("spec.ephemeralContainers[{i}]"),
                "Forbidden: existing ephemeral containers may not be changed",
            ));
        }
    }
    let mut names: Vec<String> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| old.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    for (i, c) in after.iter().enumerate() {
        let field = |f: &str| format!("spec.ephemeralContainers[{i}].{f}");
        let text = |f: &str| c.get(f).and_then(Value::as_str).unwrap_or("");
        for f in ["name", "image"] {
            if text(f).is_empty() {
                return Err(invalid(&field(f), "Required value"));
            }
        }
        if names.iter().any(|n| n == text("name")) {
            return Err(invalid(&field("name"), &format!("Duplicate value: {:?}", text("name"))));
        }
        for f in [
            "ports",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "resources",
        ] {
            let set = c.get(f).is_some_and(|v| match v {
                Value::Null => false,
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                _ => true,
            });
            if set {
                return Err(invalid(
                    &field(f),
                    "Forbidden: cannot be set for an Ephemeral Container",
                ));
            }
        }
        names.push(text("name").to_string());
    }
    let mut out = old.clone();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("ephemeralContainers".into(), Value::Array(after));
    }
    Ok(out)
}

/// `pods/binding`: the pod assigned to `node`; a pod already on a node is a
/// conflict.
pub(crate) fn bind(pod: &Value, node: &str) -> Result<Value, ApiError> {
    let name = name_of(pod);
    let current = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
    if !current.is_empty() {
        return Err(ApiError::conflict(
            "",
            "pods",
            name,
            &format!("pod {name} is already assigned to node \"{current}\""),
        ));
    }
    let mut pod = pod.clone();
    pod["spec"]["nodeName"] = json!(node);
    Ok(pod)
}

/// The node a `Binding` body names.
pub(crate) fn binding_target(binding: &Value, pod_name: &str) -> Result<String, ApiError> {
    binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid("Binding", pod_name, "target.name", "Required value"))
}

fn container_names(pod: &Value) -> Vec<String> {
    ["/spec/containers", "/spec/initContainers", "/spec/ephemeralContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container a `pods/log` request is for (the only one when not named).
pub(crate) fn log_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = name_of(pod);
    let all = container_names(pod);
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<String> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            match main.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(ApiError::bad_request(format!("pod {name} has no containers"))),
                many => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                ))),
            }
        }
    }
}

/// Whether the pod's status says `container` has terminated.
pub(crate) fn container_terminated(pod: &Value, container: &str) -> bool {
    ["/status/containerStatuses", "/status/initContainerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        .is_some_and(|c| c.pointer("/state/terminated").is_some())
}

/// The STATUS column of `kubectl get pods`: the pod's reason or phase, the
/// last container's waiting or terminated reason, `Terminating`.
pub(crate) fn display_status(pod: &Value) -> String {
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let mut reason = s(pod, "/status/reason");
    if reason.is_empty() {
        reason = s(pod, "/status/phase");
    }
    if let Some(statuses) = pod.pointer("/status/containerStatuses").and_then(Value::as_array) {
        for cs in statuses.iter().rev() {
            let waiting = s(cs, "/state/waiting/reason");
            let terminated = s(cs, "/state/terminated/reason");
            if !waiting.is_empty() {
                reason = waiting;
            } else if !terminated.is_empty() {
                reason = terminated;
            } else if cs.pointer("/state/terminated").is_some() {
                let code = cs
                    .pointer("/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                reason = format!("ExitCode:{code}");
            }
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_for_logs() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(log_container(&one, None).unwrap(), "a");
        assert_eq!(log_container(&one, Some("i")).unwrap(), "i");
        assert_eq!(log_container(&one, Some("x")).unwrap_err().code, 400);
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let e = log_container(&two, None).unwrap_err();
        assert!(e.message.contains("choose one of: [a b]"), "{}", e.message);
        let done = json!({"status": {"containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0}}}]}});
        assert!(container_terminated(&done, "a"));
        assert!(!container_terminated(&done, "b"));
    }

    #[test]
    fn grace_periods() {
        let pod = |spec: Value, phase: &str| json!({"spec": spec, "status": {"phase": phase}});
        let bound = pod(json!({"nodeName": "n"}), "Running");
        assert_eq!(PodStrategy.grace_period(&bound, None), Some(30));
        assert_eq!(PodStrategy.grace_period(&bound, Some(5)), Some(5));
        assert_eq!(PodStrategy.grace_period(&bound, Some(-3)), Some(1));
        let custom = pod(json!({"nodeName": "n", "terminationGracePeriodSeconds": 7}), "Running");
        assert_eq!(PodStrategy.grace_period(&custom, None), Some(7));
        assert_eq!(PodStrategy.grace_period(&custom, Some(0)), Some(0));
        assert_eq!(PodStrategy.grace_period(&pod(json!({}), "Pending"), Some(5)), Some(0));
        let done = pod(json!({"nodeName": "n"}), "Succeeded");
        assert_eq!(PodStrategy.grace_period(&done, None), Some(0));
    }

    #[test]
    fn default_tolerations_of_node_problems() {
        let mut spec = serde_json::Map::new();
        default_tolerations(&mut spec);
        let keys: Vec<&str> = spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                assert_eq!(
                    (&t["effect"], &t["tolerationSeconds"]),
                    (&json!("NoExecute"), &json!(300))
                );
                t["key"].as_str().unwrap()
            })
            .collect();
        assert_eq!(keys, NODE_PROBLEM_TAINTS);
        // Idempotent: a second pass (an update) adds nothing.
        default_tolerations(&mut spec);
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        // A pod's own toleration of a problem (or of everything) stands.
        let mut own = json!({"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 5}]});
        default_tolerations(own.as_object_mut().unwrap());
        assert_eq!(own["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(own["tolerations"][0]["tolerationSeconds"], 5);
        let mut all = json!({"tolerations": [{"operator": "Exists"}]});
        default_tolerations(all.as_object_mut().unwrap());
        assert_eq!(all["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn ephemeral_containers_are_only_added() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "i"}],
            "nodeName": "n"}, "status": {"phase": "Running"}});
        let debug = json!({"name": "dbg", "image": "busybox", "stdin": true, "tty": true, "resources": {}});
        let mut req = pod.clone();
        req["spec"]["ephemeralContainers"] = json!([debug]);
        // Only the ephemeral containers are taken from the request.
        req["spec"]["nodeName"] = json!("elsewhere");
        let added = ephemeral_containers(&pod, &req).unwrap();
        assert_eq!(added["spec"]["ephemeralContainers"], json!([debug]));
        assert_eq!(added["spec"]["nodeName"], "n");
        let err = |new: Value| ephemeral_containers(&added, &new).unwrap_err();
        let mut changed = added.clone();
        changed["spec"]["ephemeralContainers"][0]["image"] = json!("other");
        assert!(err(changed).message.contains("may not be changed"));
        let mut removed = added.clone();
        removed["spec"]["ephemeralContainers"] = json!([]);
        assert_eq!(err(removed).code, 422);
        let with = |c: Value| {
            let mut v = added.clone();
            v["spec"]["ephemeralContainers"].as_array_mut().unwrap().push(c);
            v
        };
        assert!(
            err(with(json!({"name": "app", "image": "x"})))
                .message
                .contains("Duplicate value")
        );
        assert!(
            err(with(json!({"name": "dbg", "image": "x"})))
                .message
                .contains("Duplicate value")
        );
        assert!(
            err(with(json!({"name": "x"})))
                .message
                .contains("image: Required value")
        );
        let probed = json!({"name": "x", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}});
        assert!(err(with(probed)).message.contains("readinessProbe: Forbidden"));
        let two = ephemeral_containers(&added, &with(json!({"name": "dbg2", "image": "i"}))).unwrap();
        assert_eq!(two["spec"]["ephemeralContainers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn binding_assigns_once() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let bound = bind(&pod, "n1").unwrap();
        assert_eq!(bound["spec"]["nodeName"], "n1");
        let e = bind(&bound, "n2").unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e.message.contains("already assigned to node \"n1\""), "{}", e.message);
        assert_eq!(binding_target(&json!({}), "p").unwrap_err().code, 422);
    }
}
