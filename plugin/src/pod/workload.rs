//! Loads pods from manifests: a Pod, a workload with a pod template
//! (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob), or a `List`
//! of those; YAML (several documents) or JSON.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use serde::Deserialize;
use serde_json::Value;

use super::PodInfo;

/// One pod found in a manifest, named after the object that holds it.
#[derive(Debug, Clone)]
pub struct WorkloadPod {
    /// The object's kind, e.g. `Pod` or `Deployment`.
    pub kind: String,
    /// The object's `metadata.name` ("" when absent).
    pub name: String,
    pub pod: PodInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("document {index}: not valid YAML or JSON: {reason}")]
    Syntax { index: usize, reason: String },
    #[error("document {index}: {reason}")]
    Shape { index: usize, reason: String },
    #[error("document {index} ({kind}/{name}): {reason}")]
    Object {
        index: usize,
        kind: String,
        name: String,
        reason: String,
    },
    #[error("no Kubernetes objects found")]
    Empty,
}

/// Parses every document in `text` and returns the pods they describe, in order.
pub fn load_pods(text: &str) -> Result<Vec<WorkloadPod>, LoadError> {
    let mut pods = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = Value::deserialize(doc).map_err(|e| LoadError::Syntax {
            index,
            reason: e.to_string(),
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        collect(index, value, &mut pods)?;
    }
    if pods.is_empty() {
        return Err(LoadError::Empty);
    }
    Ok(pods)
}

fn collect(index: usize, value: Value, out: &mut Vec<WorkloadPod>) -> Result<(), LoadError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| LoadError::Shape {
            index,
            reason: "missing `kind`: expected a Pod or a workload with a pod template".into(),
        })?
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let object_err = |reason: String| LoadError::Object {
        index,
        kind: kind.clone(),
        name: name.clone(),
        reason,
    };

    let pod = match kind.as_str() {
        "List" | "PodList" | "DeploymentList" | "StatefulSetList" | "DaemonSetList" | "ReplicaSetList" | "JobList"
        | "CronJobList" => {
            let Some(Value::Array(items)) = value.get("items") else {
                return Err(object_err("a List needs an `items` array".into()));
            };
            for item in items {
                collect(index, item.clone(), out)?;
            }
            return Ok(());
        }
        "Pod" => {
            let pod: Pod = serde_json::from_value(value).map_err(|e| object_err(e.to_string()))?;
            PodInfo::from_pod(&pod)
        }
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "CronJob" => {
            let path = if kind == "CronJob" {
                "/spec/jobTemplate/spec/template"
            } else {
                "/spec/template"
            };
            let template = value
                .pointer(path)
                .cloned()
                .ok_or_else(|| object_err(format!("missing the pod template at {path}")))?;
            let template: PodTemplateSpec =
                serde_json::from_value(template).map_err(|e| object_err(format!("{path}: {e}")))?;
            let mut meta = template.metadata.unwrap_or_default();
            // Pods made from a template live in the workload's namespace.
            if meta.namespace.is_none() {
                meta.namespace = value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            PodInfo::from_parts(&meta, template.spec.as_ref())
        }
        other => {
            return Err(object_err(format!(
                "unsupported kind {other:?}: expected Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob or List"
            )));
        }
    };
    out.push(WorkloadPod { kind, name, pod });
    Ok(())
}
