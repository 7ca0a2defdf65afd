//! What the plugin reads from a pod: container names, the `istio-proxy`
//! container's env/args/securityContext, labels and annotations; the
//! skip-or-redirect decision; and loading pods from workload manifests.

mod decision;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use decision::{Decision, SkipReason, decide};
pub use workload::{LoadError, WorkloadPod, load_pods};

/// Name of the sidecar container Istio's injector adds.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// Name of the privileged init container used when Istio CNI is off.
pub const INIT_CONTAINER: &str = "istio-init";

/// The parts of a pod that decide whether and how traffic is redirected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    /// Names of all containers: initContainers first, then containers.
    pub containers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The `istio-proxy` container, when the pod has one (as a regular
    /// container or as a native sidecar in initContainers).
    pub proxy: Option<ProxyContainer>,
}

/// What the plugin reads from the `istio-proxy` container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyContainer {
    /// Literal env values; entries set through `valueFrom` read as "".
    pub env: BTreeMap<String, String>,
    pub args: Vec<String>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    /// Declared in initContainers with `restartPolicy: Always`.
    pub native_sidecar: bool,
}

impl ProxyContainer {
    /// The proxy type: `args[1]` when `args[0] == "proxy"` (e.g. `sidecar`, `router`).
    pub fn proxy_type(&self) -> Option<&str> {
        match self.args.as_slice() {
            [first, kind, ..] if first == "proxy" => Some(kind.as_str()),
            _ => None,
        }
    }
}

impl PodInfo {
    /// Extracts the pod's relevant fields.
    pub fn from_pod(pod: &Pod) -> PodInfo {
        Self::from_parts(&pod.metadata, pod.spec.as_ref())
    }

    /// Extracts from metadata and a spec (a pod, or a workload's pod template).
    pub fn from_parts(meta: &ObjectMeta, spec: Option<&PodSpec>) -> PodInfo {
        let mut info = PodInfo {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            ..PodInfo::default()
        };
        let Some(spec) = spec else { return info };
        let init = spec.init_containers.iter().flatten().map(|c| (c, true));
        let regular = spec.containers.iter().map(|c| (c, false));
        for (container, is_init) in init.chain(regular) {
            info.containers.push(container.name.clone());
            // Istio keeps the last `istio-proxy` it sees when the name repeats.
            if container.name == PROXY_CONTAINER {
                info.proxy = Some(ProxyContainer::from_container(container, is_init));
            }
        }
        info
    }

    pub fn has_container(&self, name: &str) -> bool {
        self.containers.iter().any(|c| c == name)
    }
}

impl ProxyContainer {
    fn from_container(c: &Container, is_init: bool) -> ProxyContainer {
        let env = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        let sc = c.security_context.as_ref();
        ProxyContainer {
            env,
            args: c.args.clone().unwrap_or_default(),
            run_as_user: sc.and_then(|s| s.run_as_user),
            run_as_group: sc.and_then(|s| s.run_as_group),
            native_sidecar: is_init && c.restart_policy.as_deref() == Some("Always"),
        }
    }
}
