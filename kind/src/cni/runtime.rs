//! The per-attachment runtime parameters (libcni's `RuntimeConf`) and the
//! `CNI_*` environment built from them.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One attachment's runtime parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID` (the sandbox id).
    pub container_id: String,
    /// `CNI_NETNS`; `None` is sent as the empty string (allowed for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments; each is passed in `runtimeConfig` to the
    /// plugins that declare the capability.
    pub capability_args: Map<String, Value>,
}

/// The pod a sandbox belongs to, for the Kubernetes `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl RuntimeConf {
    /// Parameters without `CNI_ARGS` or capabilities.
    pub fn new(container_id: impl Into<String>, netns: Option<&Path>, ifname: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            netns: netns.map(Path::to_path_buf),
            ifname: ifname.into(),
            ..Self::default()
        }
    }

    /// Parameters as kubelet/containerd send them for a pod sandbox:
    /// `CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;
    /// K8S_POD_INFRA_CONTAINER_ID=<container id>;K8S_POD_UID=..`.
    pub fn for_pod(container_id: impl Into<String>, netns: &Path, ifname: impl Into<String>, pod: &PodRef) -> Self {
        let container_id = container_id.into();
        let args = kubernetes_args(pod, &container_id);
        Self {
            args,
            ..Self::new(container_id, Some(netns), ifname)
        }
    }

    /// Adds a capability argument (e.g. `portMappings`, `bandwidth`).
    pub fn with_capability(mut self, key: impl Into<String>, value: Value) -> Self {
        self.capability_args.insert(key.into(), value);
        self
    }

    /// Adds a `CNI_ARGS` pair.
    pub fn with_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }

    /// `CNI_NETNS` as sent (empty when none).
    pub fn netns_str(&self) -> String {
        self.netns
            .as_deref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The Kubernetes `CNI_ARGS` pairs, in the order the runtimes send them.
pub fn kubernetes_args(pod: &PodRef, infra_container_id: &str) -> Vec<(String, String)> {
    [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", pod.namespace.as_str()),
        ("K8S_POD_NAME", pod.name.as_str()),
        ("K8S_POD_INFRA_CONTAINER_ID", infra_container_id),
        ("K8S_POD_UID", pod.uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `K=V;K2=V2`.
pub fn cni_args_string(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The `CNI_*` variables of one invocation, in libcni's order. Every
/// variable is set, empty when not applicable (as libcni does).
pub fn cni_env(command: &str, rt: &RuntimeConf, cni_path: &str) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".to_owned(), command.to_owned()),
        ("CNI_CONTAINERID".to_owned(), rt.container_id.clone()),
        ("CNI_NETNS".to_owned(), rt.netns_str()),
        ("CNI_ARGS".to_owned(), cni_args_string(&rt.args)),
        ("CNI_IFNAME".to_owned(), rt.ifname.clone()),
        ("CNI_PATH".to_owned(), cni_path.to_owned()),
    ]
}

/// libcni's check of a container id or network name: present, and
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`; `missing` and `invalid` are libcni's
/// words for each.
fn validate_id_like(value: &str, missing: &str, invalid: &str) -> Result<(), String> {
    let mut bytes = value.bytes();
    match bytes.next() {
        None => Err(missing.to_owned()),
        Some(first)
            if first.is_ascii_alphanumeric()
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-') =>
        {
            Ok(())
        }
        Some(_) => Err(format!("{invalid} {value:?}")),
    }
}

/// libcni's `ValidateContainerID`.
pub fn validate_container_id(id: &str) -> Result<(), String> {
    validate_id_like(id, "missing containerID", "invalid characters in containerID")
}

/// libcni's `ValidateNetworkName`: same pattern as container ids.
pub fn validate_network_name(name: &str) -> Result<(), String> {
    validate_id_like(name, "missing network name", "invalid characters found in network name")
}

/// libcni's `ValidateInterfaceName`.
pub fn validate_interface_name(name: &str) -> Result<(), String> {
    crate::node::names::validate_ifname(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: "1234-abcd".into(),
        }
    }

    #[test]
    fn kubernetes_cni_args_string() {
        let rt = RuntimeConf::for_pod("abc123", Path::new("/run/netns/x"), "eth0", &pod());
        assert_eq!(
            cni_args_string(&rt.args),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1234-abcd"
        );
    }

    #[test]
    fn env_sets_every_variable() {
        let rt = RuntimeConf::new("c1", None, "eth0").with_arg("A", "1");
        let env = cni_env("DEL", &rt, "/opt/cni/bin:/x");
        let want = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", ""),
            ("CNI_ARGS", "A=1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/x"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn id_and_name_validation() {
        assert!(validate_container_id("a.b_c-1").is_ok());
        assert_eq!(validate_container_id("").unwrap_err(), "missing containerID");
        assert!(validate_container_id("-a").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_network_name("kindnet").is_ok());
        assert_eq!(validate_network_name("").unwrap_err(), "missing network name");
        assert_eq!(
            validate_network_name("my net").unwrap_err(),
            "invalid characters found in network name \"my net\""
        );
        assert!(validate_interface_name("eth0").is_ok());
        assert!(validate_interface_name("this-is-too-long0").is_err());
    }
}
