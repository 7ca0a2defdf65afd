//! The primary CNIs a kind cluster can run, and the steps that install them.

use super::{Effective, KindSpec};
use crate::backend::plan::{Cmd, ManifestSource, Step, path_arg};
use crate::backend::preflight::Tool;
use crate::backend::versions;

/// The primary CNI of a cluster: istio-cni is chained onto its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PrimaryCni {
    /// kind's own CNI (writes `10-kindnet.conflist`, cniVersion 0.4.0).
    #[default]
    Kindnet,
    /// Calico, from its manifest (`10-calico.conflist`).
    Calico,
    /// Cilium with kube-proxy replacement, from its Helm chart (`05-cilium.conflist`).
    Cilium,
    /// Flannel, from its manifest (`10-flannel.conflist`).
    Flannel,
}

impl PrimaryCni {
    /// Every primary CNI.
    pub const ALL: [PrimaryCni; 4] = [
        PrimaryCni::Kindnet,
        PrimaryCni::Calico,
        PrimaryCni::Cilium,
        PrimaryCni::Flannel,
    ];

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            PrimaryCni::Kindnet => "kindnet",
            PrimaryCni::Calico => "calico",
            PrimaryCni::Cilium => "cilium",
            PrimaryCni::Flannel => "flannel",
        }
    }

    /// Name and pinned version.
    pub fn describe(self) -> String {
        match self {
            PrimaryCni::Kindnet => "kindnet (kind's default CNI)".to_string(),
            PrimaryCni::Calico => format!("calico {}", versions::CALICO),
            PrimaryCni::Cilium => format!("cilium {}", versions::CILIUM),
            PrimaryCni::Flannel => format!("flannel {}", versions::FLANNEL),
        }
    }

    /// Whether kind's default CNI is disabled (`networking.disableDefaultCNI`).
    pub fn disables_default_cni(self) -> bool {
        self != PrimaryCni::Kindnet
    }

    /// The pod CIDR (`networking.podSubnet`): Calico's default IP pool, kind's default otherwise.
    pub fn pod_subnet(self) -> &'static str {
        match self {
            PrimaryCni::Calico => "192.168.0.0/16",
            _ => "10.244.0.0/16",
        }
    }

    /// `networking.kubeProxyMode`: Cilium replaces kube-proxy, the others keep it in iptables mode.
    pub fn kube_proxy_mode(self) -> &'static str {
        match self {
            PrimaryCni::Cilium => "none",
            _ => "iptables",
        }
    }

    /// The conflist the CNI writes into the node's conf dir (the file istio-cni is inserted into).
    pub fn primary_conflist(self) -> &'static str {
        match self {
            PrimaryCni::Kindnet => "10-kindnet.conflist",
            PrimaryCni::Calico => "10-calico.conflist",
            PrimaryCni::Cilium => "05-cilium.conflist",
            PrimaryCni::Flannel => "10-flannel.conflist",
        }
    }

    /// Tools its installation needs besides docker, kind and kubectl.
    pub fn required_tools(self) -> Vec<Tool> {
        match self {
            PrimaryCni::Cilium => vec![Tool::Helm],
            PrimaryCni::Flannel => vec![Tool::Curl, Tool::Tar],
            PrimaryCni::Kindnet | PrimaryCni::Calico => Vec::new(),
        }
    }

    /// The workloads (`namespace`, `kind/name`) that must roll out before the CNI works.
    pub fn workloads(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PrimaryCni::Kindnet => &[("kube-system", "daemonset/kindnet")],
            PrimaryCni::Calico => &[
                ("kube-system", "daemonset/calico-node"),
                ("kube-system", "deployment/calico-kube-controllers"),
            ],
            PrimaryCni::Cilium => &[
                ("kube-system", "daemonset/cilium"),
                ("kube-system", "deployment/cilium-operator"),
            ],
            PrimaryCni::Flannel => &[("kube-flannel", "daemonset/kube-flannel-ds")],
        }
    }

    /// A comment for the cluster config: how the CNI gets installed.
    pub(super) fn config_comment(self) -> &'static str {
        match self {
            PrimaryCni::Kindnet => "kindnet is kind's default CNI, installed by kind itself",
            PrimaryCni::Calico => "calico.yaml is applied after create; podSubnet is Calico's default IP pool",
            PrimaryCni::Cilium => "the Cilium chart is applied after create and replaces kube-proxy",
            PrimaryCni::Flannel => "kube-flannel.yml is applied after create, with the bridge plugin copied in",
        }
    }
}

/// The steps that install the primary CNI into a created cluster (none for kindnet).
pub(super) fn install_steps(spec: &KindSpec, eff: &Effective) -> Vec<Step> {
    let apply = |source: ManifestSource, purpose: String| Step::ApplyManifest {
        kubeconfig: eff.kubeconfig.clone(),
        source,
        purpose,
    };
    match spec.cni {
        PrimaryCni::Kindnet => Vec::new(),
        PrimaryCni::Calico => vec![apply(
            ManifestSource::Url(format!(
                "https://raw.githubusercontent.com/projectcalico/calico/{}/manifests/calico.yaml",
                versions::CALICO
            )),
            format!("install calico {}", versions::CALICO),
        )],
        PrimaryCni::Cilium => vec![apply(
            ManifestSource::HelmTemplate {
                release: "cilium".to_string(),
                chart: format!("https://helm.cilium.io/cilium-{}.tgz", versions::CILIUM),
                namespace: "kube-system".to_string(),
                kube_version: spec.k8s_version.version().to_string(),
                values: cilium_values(&eff.name),
            },
            format!(
                "install cilium {} (kube-proxy replacement; the settings Istio requires)",
                versions::CILIUM
            ),
        )],
        PrimaryCni::Flannel => {
            let mut steps = bridge_plugin_steps(eff);
            steps.push(apply(
                ManifestSource::Url(format!(
                    "https://github.com/flannel-io/flannel/releases/download/{}/kube-flannel.yml",
                    versions::FLANNEL
                )),
                format!("install flannel {}", versions::FLANNEL),
            ));
            steps
        }
    }
}

/// Cilium's Helm values: kind-friendly IPAM and image pulls, kube-proxy
/// replacement (the API server reached by the control plane's container
/// name), and what Istio needs next to Cilium: a non-exclusive CNI config
/// (so Cilium leaves the istio-cni entry alone), socket load balancing only
/// in the host namespace (so service traffic still reaches the sidecar
/// redirect), and no BPF masquerading.
fn cilium_values(cluster: &str) -> Vec<(String, String)> {
    [
        ("image.pullPolicy", "IfNotPresent".to_string()),
        ("ipam.mode", "kubernetes".to_string()),
        ("kubeProxyReplacement", "true".to_string()),
        ("k8sServiceHost", format!("{cluster}-control-plane")),
        ("k8sServicePort", "6443".to_string()),
        ("cni.exclusive", "false".to_string()),
        ("socketLB.hostNamespaceOnly", "true".to_string()),
        ("bpf.masquerade", "false".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// Flannel delegates to the reference `bridge` plugin, which kind's node
/// image does not ship: fetch the pinned plugins release once and copy
/// `bridge` into every node.
fn bridge_plugin_steps(eff: &Effective) -> Vec<Step> {
    let tarball_name = format!("cni-plugins-linux-{}-{}.tgz", eff.arch.go_name(), versions::CNI_PLUGINS);
    let tarball = path_arg(&eff.dir.join(&tarball_name));
    let bridge = path_arg(&eff.dir.join("bridge"));
    let url = format!(
        "https://github.com/containernetworking/plugins/releases/download/{}/{tarball_name}",
        versions::CNI_PLUGINS
    );
    let mut steps = vec![
        Cmd::new("curl", ["-fsSL", "--retry", "3", "-o", &tarball, &url]).step(format!(
            "fetch containernetworking/plugins {} (flannel delegates to bridge)",
            versions::CNI_PLUGINS
        )),
        Cmd::new("tar", ["-xzf", &tarball, "-C", &path_arg(&eff.dir), "./bridge"]).step("unpack the bridge plugin"),
    ];
    for node in &eff.nodes {
        steps.push(
            Cmd::new(
                "docker",
                ["cp", &bridge, &format!("{node}:{}/bridge", super::CNI_BIN_DIR)],
            )
            .step(format!("copy bridge into {node}")),
        );
    }
    steps
}
