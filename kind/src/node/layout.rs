//! Where a node keeps its CNI files, per Kubernetes distribution.
//!
//! The paths are the host paths Istio's `istio-cni` Helm chart uses for each
//! `global.platform` (the chart's `cniConfDir`, `cniBinDir`, `cniNetnsDir`);
//! the harness re-creates them under each node's own root directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A node directory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// kind and kubeadm: `/etc/cni/net.d`, `/opt/cni/bin`.
    #[default]
    Default,
    /// GKE: the plugins live in `/home/kubernetes/bin`.
    Gke,
    /// k3s: config under the agent dir, plugins in `data/cni`.
    K3s,
    /// k3d (k3s in Docker): k3s's config dir, plugins in `/bin`.
    K3d,
    /// MicroK8s: everything under the snap's `current` dir.
    Microk8s,
    /// minikube: default dirs, sandboxes under `/var/run/docker/netns`.
    Minikube,
    /// OpenShift: Multus reads additional networks (where Istio's own
    /// `istio-cni.conf` goes) from `/etc/cni/multus/net.d`; plugins in
    /// `/var/lib/cni/bin`.
    Openshift,
}

impl Layout {
    /// Every layout, default first.
    pub const ALL: [Layout; 7] = [
        Layout::Default,
        Layout::Gke,
        Layout::K3s,
        Layout::K3d,
        Layout::Microk8s,
        Layout::Minikube,
        Layout::Openshift,
    ];

    /// The layout's name, as in Istio's `global.platform` (`default` for none).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Default => "default",
            Layout::Gke => "gke",
            Layout::K3s => "k3s",
            Layout::K3d => "k3d",
            Layout::Microk8s => "microk8s",
            Layout::Minikube => "minikube",
            Layout::Openshift => "openshift",
        }
    }

    /// The CNI config dir (the chart's `cniConfDir`), as an absolute node path.
    pub fn conf_dir(self) -> &'static str {
        match self {
            Layout::Default | Layout::Gke | Layout::Minikube => "/etc/cni/net.d",
            Layout::K3s | Layout::K3d => "/var/lib/rancher/k3s/agent/etc/cni/net.d",
            Layout::Microk8s => "/var/snap/microk8s/current/args/cni-network",
            Layout::Openshift => "/etc/cni/multus/net.d",
        }
    }

    /// The dir the container runtime itself loads the primary network from.
    /// The same as [`Layout::conf_dir`] except on OpenShift, where CRI-O
    /// reads Multus's config from `/etc/kubernetes/cni/net.d` and Multus
    /// delegates to the networks in [`Layout::conf_dir`].
    pub fn runtime_conf_dir(self) -> &'static str {
        match self {
            Layout::Openshift => "/etc/kubernetes/cni/net.d",
            other => other.conf_dir(),
        }
    }

    /// The CNI plugin dirs (the chart's `cniBinDir` first), as absolute node
    /// paths; all of them go into `CNI_PATH`.
    pub fn bin_dirs(self) -> &'static [&'static str] {
        match self {
            Layout::Default | Layout::Minikube => &["/opt/cni/bin"],
            Layout::Gke => &["/home/kubernetes/bin"],
            Layout::K3s => &["/var/lib/rancher/k3s/data/cni"],
            Layout::K3d => &["/bin"],
            Layout::Microk8s => &["/var/snap/microk8s/current/opt/cni/bin"],
            Layout::Openshift => &["/var/lib/cni/bin"],
        }
    }

    /// Where the runtime keeps sandbox network namespaces (the chart's
    /// `cniNetnsDir`).
    pub fn netns_dir(self) -> &'static str {
        match self {
            Layout::Minikube => "/var/run/docker/netns",
            _ => "/var/run/netns",
        }
    }

    /// Every directory the layout needs on a node, absolute node paths,
    /// deduplicated, in a stable order.
    pub fn dirs(self) -> Vec<&'static str> {
        let mut dirs = vec![self.conf_dir(), self.runtime_conf_dir()];
        dirs.extend_from_slice(self.bin_dirs());
        dirs.extend_from_slice(&[self.netns_dir(), "/var/run/istio-cni", "/var/lib/cni"]);
        let mut seen = Vec::new();
        dirs.retain(|d| {
            if seen.contains(d) {
                false
            } else {
                seen.push(*d);
                true
            }
        });
        dirs
    }
}

/// `root` joined with the absolute node path `node_path`
/// (`/root` + `/etc/cni/net.d` → `/root/etc/cni/net.d`).
pub fn under(root: &Path, node_path: &str) -> PathBuf {
    root.join(node_path.trim_start_matches('/'))
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "" | "default" | "kind" | "kubeadm" => Ok(Layout::Default),
            other => Layout::ALL.into_iter().find(|l| l.name() == other).ok_or_else(|| {
                let names: Vec<_> = Layout::ALL.iter().map(|l| l.name()).collect();
                format!("unknown layout {s:?}; expected one of {}", names.join(", "))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_paths_match_the_istio_chart() {
        let rows: Vec<String> = Layout::ALL
            .iter()
            .map(|l| {
                format!(
                    "{l}: conf={} bin={:?} netns={}",
                    l.conf_dir(),
                    l.bin_dirs(),
                    l.netns_dir()
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                "default: conf=/etc/cni/net.d bin=[\"/opt/cni/bin\"] netns=/var/run/netns",
                "gke: conf=/etc/cni/net.d bin=[\"/home/kubernetes/bin\"] netns=/var/run/netns",
                "k3s: conf=/var/lib/rancher/k3s/agent/etc/cni/net.d bin=[\"/var/lib/rancher/k3s/data/cni\"] netns=/var/run/netns",
                "k3d: conf=/var/lib/rancher/k3s/agent/etc/cni/net.d bin=[\"/bin\"] netns=/var/run/netns",
                "microk8s: conf=/var/snap/microk8s/current/args/cni-network bin=[\"/var/snap/microk8s/current/opt/cni/bin\"] netns=/var/run/netns",
                "minikube: conf=/etc/cni/net.d bin=[\"/opt/cni/bin\"] netns=/var/run/docker/netns",
                "openshift: conf=/etc/cni/multus/net.d bin=[\"/var/lib/cni/bin\"] netns=/var/run/netns",
            ]
        );
    }

    #[test]
    fn names_parse_back() {
        for l in Layout::ALL {
            assert_eq!(l.name().parse::<Layout>().unwrap(), l);
        }
        assert_eq!("kind".parse::<Layout>().unwrap(), Layout::Default);
        assert_eq!("K3S".parse::<Layout>().unwrap(), Layout::K3s);
        assert!("eks".parse::<Layout>().unwrap_err().contains("openshift"));
    }

    #[test]
    fn dirs_are_deduplicated_and_complete() {
        let dirs = Layout::Default.dirs();
        assert_eq!(
            dirs,
            [
                "/etc/cni/net.d",
                "/opt/cni/bin",
                "/var/run/netns",
                "/var/run/istio-cni",
                "/var/lib/cni"
            ]
        );
        assert!(Layout::Openshift.dirs().contains(&"/etc/kubernetes/cni/net.d"));
        assert_eq!(
            under(Path::new("/r/n1"), "/etc/cni/net.d"),
            PathBuf::from("/r/n1/etc/cni/net.d")
        );
    }
}
