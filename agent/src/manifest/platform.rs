//! Kubernetes distributions (`--platform`, the chart's `global.platform`) and
//! the value profiles layered under the user's values (docs/agent.md#platforms).

use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};

/// A Kubernetes distribution whose nodes keep CNI files in non-default places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Platform {
    /// GKE: plugins in `/home/kubernetes/bin`; a ResourceQuota for system-node-critical pods.
    Gke,
    /// k3s in Docker: k3s's config dir, plugins in `/bin`.
    K3d,
    /// k3s: config under the agent dir, plugins in `data/cni`.
    K3s,
    /// MicroK8s: everything under the snap's `current` dir.
    Microk8s,
    /// minikube: default dirs, sandboxes under `/var/run/docker/netns`.
    Minikube,
    /// OpenShift: Multus, a standalone `istio-cni.conf`, SELinux `spc_t`, the `privileged` SCC.
    Openshift,
}

impl Platform {
    /// Every platform, in the chart's alphabetical order.
    pub const ALL: [Platform; 6] = [
        Platform::Gke,
        Platform::K3d,
        Platform::K3s,
        Platform::Microk8s,
        Platform::Minikube,
        Platform::Openshift,
    ];

    /// The name used by `--platform` and `global.platform`.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Gke => "gke",
            Platform::K3d => "k3d",
            Platform::K3s => "k3s",
            Platform::Microk8s => "microk8s",
            Platform::Minikube => "minikube",
            Platform::Openshift => "openshift",
        }
    }

    /// The values this platform's profile sets (the chart's
    /// `files/profile-platform-<name>.yaml`), below every user value.
    pub fn profile(self) -> Value {
        match self {
            // The chart leaves cniBinDir empty and guesses from the API server's
            // version; `--platform gke` already says it is GKE.
            Platform::Gke => json!({
                "cniBinDir": GKE_BIN_DIR,
                "resourceQuotas": {"enabled": true},
            }),
            Platform::K3d => json!({
                "cniBinDir": "/bin",
                "cniConfDir": K3S_CONF_DIR,
            }),
            Platform::K3s => json!({
                "cniBinDir": "/var/lib/rancher/k3s/data/cni",
                "cniConfDir": K3S_CONF_DIR,
            }),
            Platform::Microk8s => json!({
                "cniBinDir": "/var/snap/microk8s/current/opt/cni/bin",
                "cniConfDir": "/var/snap/microk8s/current/args/cni-network",
            }),
            Platform::Minikube => json!({
                "cniNetnsDir": "/var/run/docker/netns",
            }),
            Platform::Openshift => json!({
                "cniBinDir": "/var/lib/cni/bin",
                "cniConfDir": "/etc/cni/multus/net.d",
                "chained": false,
                "cniConfFileName": "istio-cni.conf",
                "provider": "multus",
                "seLinuxOptions": {"type": "spc_t"},
            }),
        }
    }
}

/// GKE's CNI plugin dir (what the chart autodetects on a `-gke` cluster).
pub const GKE_BIN_DIR: &str = "/home/kubernetes/bin";
const K3S_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Platform::ALL.iter().map(|p| p.name()).collect();
            format!("unknown platform {s:?} (one of {})", names.join(", "))
        })
    }
}

/// The chart's `profile` / `global.profile` (istioctl's `spec.profile`), as far
/// as it touches the CNI chart. `openshift` is istioctl's name for the
/// default profile on OpenShift.
pub(crate) fn profile_values(name: &str) -> Result<(Value, Option<Platform>), String> {
    match name {
        "" | "default" | "minimal" | "empty" | "remote" | "preview" | "stable" => Ok((json!({}), None)),
        "demo" => Ok((
            json!({"resources": {"requests": {"cpu": "10m", "memory": "40Mi"}}}),
            None,
        )),
        "openshift" => Ok((json!({}), Some(Platform::Openshift))),
        "ambient" | "openshift-ambient" => Err(format!(
            "profile {name:?} enables ambient mode, which istio-cni-agent does not implement (sidecar mode only)"
        )),
        other => Err(format!(
            "unknown profile {other:?} (one of default, demo, empty, minimal, openshift, preview, remote, stable)"
        )),
    }
}

/// The chart's `compatibilityVersion`. Its files for the CNI chart only touch
/// ambient settings, so in sidecar mode they are accepted and change nothing.
pub(crate) fn check_compatibility_version(v: &str) -> Result<(), String> {
    const KNOWN: [&str; 6] = ["1.25", "1.26", "1.27", "1.28", "1.29", "1.30"];
    if v.is_empty() || KNOWN.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "unknown compatibilityVersion {v:?} (one of {})",
            KNOWN.join(", ")
        ))
    }
}
