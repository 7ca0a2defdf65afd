//! What the controller does to a broken pod (docs/repair.md#actions),
//! one [`Executor`] over the Kubernetes API and the node:
//!
//! * repair: find the pod netns in the node's `/proc` and program it exactly
//!   as the plugin would have (no pod write, no extra RBAC);
//! * delete: DELETE with uid/resourceVersion preconditions, Warning Event
//!   `DeleteBrokenPod`;
//! * label: JSON merge patch of the broken-pod label on `pods/status` (not
//!   the pod itself, so the RBAC stays narrow), Warning Event `LabelBrokenPod`.
//!
//! Every API call has a timeout; each outcome counts in
//! `istio_cni_repair_pods_repaired_total`; a 403 is logged with the verb and
//! the mode, since it means the RBAC does not match the configured mode.
//! Events are best-effort: failing to record one never fails the action.

use std::sync::Arc;
use std::time::Duration;

use istio_cni::capture::NodeEnv;
use istio_cni::pod::{Decision, PodInfo, decide};
use istio_cni::program::Backend;
use istio_cni::redirect::Redirect;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};

use super::controller::{ActionError, Done, Executor};
use super::netns::{Finder, PodTarget};
use crate::config::{RepairMode, RepairSettings};
use crate::metrics::{Metrics, RepairResult, RepairType};

/// The `source.component` of our Events.
pub const EVENT_COMPONENT: &str = "cni-repair";
/// Bound on each API request.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on finding and programming a netns.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// A write to a broken pod: the delete and label modes.
#[derive(Clone, Copy)]
enum PodWrite {
    Delete,
    Label,
}

impl PodWrite {
    fn mode(self) -> RepairMode {
        match self {
            PodWrite::Delete => RepairMode::Delete,
            PodWrite::Label => RepairMode::Label,
        }
    }

    /// The Event reason, the RBAC verb the write needs, the outcome's words
    /// (done, doing) and what the controller is told.
    fn spelling(self) -> (&'static str, &'static str, &'static str, &'static str, Done) {
        match self {
            PodWrite::Delete => ("DeleteBrokenPod", "delete pods", "deleted", "deleting", Done::Deleted),
            PodWrite::Label => (
                "LabelBrokenPod",
                "patch pods/status",
                "labeled",
                "labeling",
                Done::Labeled,
            ),
        }
    }
}

/// The real executor.
pub struct KubeActions {
    client: kube::Client,
    label_key: String,
    label_value: String,
    node_name: String,
    backend: Backend,
    node_env: NodeEnv,
    finder: Finder,
    metrics: Metrics,
}

impl KubeActions {
    pub fn new(client: kube::Client, settings: &RepairSettings, native_nftables: bool, metrics: Metrics) -> Self {
        KubeActions {
            client,
            label_key: settings.repair_broken_pod_label_key.clone(),
            label_value: settings.repair_broken_pod_label_value.clone(),
            node_name: settings.repair_node_name.clone(),
            backend: if native_nftables {
                Backend::Nftables
            } else {
                Backend::Iptables
            },
            node_env: NodeEnv::from_env(),
            finder: Finder {
                proc_root: settings.repair_host_proc.clone(),
                host_netns: settings.host_netns(),
            },
            metrics,
        }
    }

    fn count(&self, mode: RepairMode, result: RepairResult) {
        self.metrics.repaired(RepairType::from(mode), result);
    }

    async fn repair(&self, pod: &Pod, name: &str) -> Result<Done, ActionError> {
        let info = PodInfo::from_pod(pod);
        if let Decision::Skip(reason) = decide(&info) {
            // The plugin would not program it either; rules would only differ
            // from what the pod was built for.
            tracing::info!(pod = %name, %reason, "broken pod is not one the plugin programs; not repairing");
            self.count(RepairMode::Repair, RepairResult::skip);
            return Ok(Done::Skipped);
        }
        let redirect = Redirect::from_pod(&info).map_err(|e| ActionError(format!("pod {name}: {e}")))?;
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| ActionError(format!("pod {name} has no status.podIP yet")))?;
        let target = PodTarget {
            pod: name.to_string(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ip: ip
                .parse()
                .map_err(|_| ActionError(format!("pod {name}: status.podIP {ip:?} is not an IP address")))?,
        };
        tracing::info!(pod = %name, ip = %target.ip, "Repairing pod...");
        let (finder, node_env, backend) = (self.finder.clone(), self.node_env.clone(), self.backend);
        let work = tokio::task::spawn_blocking(move || {
            let netns = finder.find(&target).map_err(|e| e.to_string())?;
            let path = netns.path();
            tracing::info!(pod = %target.pod, pid = netns.pid, inode = netns.inode, "found the pod netns");
            istio_cni::program::program(&path, &redirect, &node_env, backend)
                .map_err(|e| match e.stderr() {
                    Some(stderr) => format!("{e}: {}", stderr.trim()),
                    None => e.to_string(),
                })
                // Keep the netns open until programming is over.
                .map(|p| (p, netns.pid))
        });
        let outcome = match tokio::time::timeout(PROGRAM_TIMEOUT, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!("programming thread failed: {join}")),
            Err(_) => Err(format!("timed out after {PROGRAM_TIMEOUT:?}")),
        };
        match outcome {
            Ok((programmed, pid)) => {
                tracing::info!(pod = %name, pid, binary = %programmed.binary, applied = programmed.applied, "pod repaired");
                self.count(RepairMode::Repair, RepairResult::success);
                Ok(Done::Repaired)
            }
            Err(e) => {
                tracing::error!(pod = %name, "failed to setup redirection: {e}");
                self.count(RepairMode::Repair, RepairResult::fail);
                Err(ActionError(format!("pod {name}: failed to setup redirection: {e}")))
            }
        }
    }

    async fn delete(&self, pod: &Pod, ns: &str, name: &str) -> Result<Done, ActionError> {
        tracing::info!(pod = %format!("{ns}/{name}"), "Pod detected as broken, deleting");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        // Preconditions: never delete a newer pod of the same name, nor one
        // that changed since we judged it broken (a 409 is retried).
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        let result = timed(api.delete(name, &params)).await;
        self.reported(PodWrite::Delete, pod, ns, name, result).await
    }

    async fn label(&self, pod: &Pod, ns: &str, name: &str) -> Result<Done, ActionError> {
        if pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(&self.label_key))
        {
            tracing::info!(pod = %format!("{ns}/{name}"), label = %self.label_key, "broken pod already labeled");
            self.count(RepairMode::Label, RepairResult::skip);
            return Ok(Done::Skipped);
        }
        tracing::info!(pod = %format!("{ns}/{name}"), "Pod detected as broken, labeling");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({"metadata": {"labels": {&self.label_key: &self.label_value}}});
        let result = timed(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))).await;
        self.reported(PodWrite::Label, pod, ns, name, result).await
    }

    /// Counts the outcome of a pod write and records it as the write's
    /// Event; a failure is also logged and returned.
    async fn reported<T>(
        &self,
        write: PodWrite,
        pod: &Pod,
        ns: &str,
        name: &str,
        result: Result<T, CallError>,
    ) -> Result<Done, ActionError> {
        let mode = write.mode();
        let (reason, verb, did, doing, done) = write.spelling();
        match result {
            Ok(_) => {
                self.count(mode, RepairResult::success);
                self.event(pod, reason, &format!("pod detected as broken, {did}")).await;
                Ok(done)
            }
            Err(e) => {
                self.count(mode, RepairResult::fail);
                let msg = self.failure(mode, verb, ns, name, &e);
                let message = format!("pod detected as broken, but failed to {}: {msg}", mode.as_str());
                self.event(pod, reason, &message).await;
                Err(ActionError(format!("pod {ns}/{name}: {doing}: {msg}")))
            }
        }
    }

    /// Logs a failed API call; a 403 says which RBAC rule is missing.
    fn failure(&self, mode: RepairMode, verb: &str, ns: &str, name: &str, e: &CallError) -> String {
        let msg = e.to_string();
        if e.is_forbidden() {
            tracing::warn!(
                pod = %format!("{ns}/{name}"),
                verb,
                mode = mode.as_str(),
                "forbidden: the agent's service account may not {verb} in {} mode (check istio-cni-repair-role): {msg}",
                mode.as_str()
            );
        } else {
            tracing::warn!(pod = %format!("{ns}/{name}"), verb, mode = mode.as_str(), "{msg}");
        }
        msg
    }

    /// Records a Warning Event on the pod (core/v1, like Istio's recorder).
    async fn event(&self, pod: &Pod, reason: &str, message: &str) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some(EVENT_COMPONENT.into()),
                host: Some(self.node_name.clone()).filter(|h| !h.is_empty()),
            }),
            reporting_component: Some(EVENT_COMPONENT.into()),
            reporting_instance: Some(self.node_name.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = timed(api.create(&PostParams::default(), &event)).await {
            tracing::warn!(pod = %format!("{ns}/{name}"), %reason, "recording the event failed: {e}");
        }
    }
}

impl Executor for KubeActions {
    async fn execute(&self, mode: RepairMode, pod: Arc<Pod>) -> Result<Done, ActionError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        match mode {
            RepairMode::Repair => self.repair(&pod, &format!("{ns}/{name}")).await,
            RepairMode::Delete => self.delete(&pod, &ns, &name).await,
            RepairMode::Label => self.label(&pod, &ns, &name).await,
        }
    }
}

/// An API call that failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("no answer from the API server within {API_TIMEOUT:?}")]
    Timeout,
}

impl CallError {
    pub fn is_forbidden(&self) -> bool {
        matches!(self, CallError::Kube(kube::Error::Api(s)) if s.code == 403)
    }
}

async fn timed<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, CallError> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result.map_err(CallError::from),
        Err(_) => Err(CallError::Timeout),
    }
}
