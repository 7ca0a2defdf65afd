//! The plugin's entry of the network config list, as Istio's installers of
//! 1.20 to today write it. Go's `encoding/json` rules apply: keys match
//! case-insensitively (an exact match wins), unknown keys are ignored and
//! `null` keeps the default (docs/plugin.md#network-config).
//!
//! Only the top level is decoded up front; every value stays raw JSON text
//! until a known key is read. Unknown keys and `prevResult` therefore cost
//! no more memory than their bytes on stdin (a generic JSON tree costs up to
//! ~100 times its text), and `prevResult` is decoded straight into its typed,
//! size-checked form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::error::{CniError, Code};

/// Where the node agent keeps the plugin's kubeconfig and sockets when the
/// config does not say (Istio's Helm default).
pub const DEFAULT_AGENT_RUN_DIR: &str = "/var/run/istio-cni";
/// The kubeconfig's file name inside the agent run dir.
pub const KUBECONFIG_FILE: &str = "istio-cni-kubeconfig";

/// A JSON object whose values are still undecoded text. Sorted by key, so
/// the case-insensitive lookup sees keys in the same order as before.
type Object = BTreeMap<String, Box<RawValue>>;

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    /// Undecoded: only ADD decodes it, with the config's version
    /// ([`super::result::CniResult::decode`]).
    pub prev_result: Option<Box<RawValue>>,
    /// `plugin_log_level` (1.23+) or `log_level` (≤1.22).
    pub log_level: Option<String>,
    /// `cni_agent_run_dir` (1.24+); [`DEFAULT_AGENT_RUN_DIR`] when absent.
    pub agent_run_dir: PathBuf,
    /// Whether `cni_agent_run_dir` was in the config (≤1.23 configs lack it).
    pub has_agent_run_dir: bool,
    pub ambient_enabled: bool,
    /// Ambient only; kept undecoded.
    pub enablement_selectors: Option<Box<RawValue>>,
    /// Top-level `exclude_namespaces` (1.24+) and `kubernetes.exclude_namespaces` (≤1.23).
    pub exclude_namespaces: Vec<String>,
    pub pod_namespace: String,
    pub native_nftables: bool,
    pub enable_ambient_detection_retry: bool,
    /// `kubernetes.kubeconfig` (≤1.23: a file in the CNI conf dir).
    pub legacy_kubeconfig: Option<PathBuf>,
    /// `log_uds_address` (≤1.23): the agent's log socket.
    pub log_uds_address: Option<PathBuf>,
    /// Ours: STATUS reports code 50 while the node agent is not ready.
    pub status_check: bool,
}

impl NetConf {
    /// Parses the plugin's stdin. Not JSON → code 6; a missing or invalid
    /// `name`, or a known key of the wrong type → code 7.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let obj: Object = serde_json::from_slice(stdin).map_err(|e| {
            // A syntax error says where; a type error can only be the top level.
            let reason = if e.is_data() {
                "not a JSON object".to_string()
            } else {
                e.to_string()
            };
            CniError::new(Code::Decode, format!("error unmarshaling network config: {reason}"))
        })?;
        let name = string(&obj, "name")?.unwrap_or_default();
        if !valid_name(&name) {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!(
                    "invalid network config: name {name:?} must be non-empty and match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
                ),
            ));
        }
        let kubernetes: Object = decode(&obj, "kubernetes", "an object")?.unwrap_or_default();
        let run_dir = string(&obj, "cni_agent_run_dir")?.filter(|d| !d.is_empty());
        let mut exclude_namespaces = strings(&obj, "exclude_namespaces")?;
        for ns in strings(&kubernetes, "exclude_namespaces")? {
            if !exclude_namespaces.contains(&ns) {
                exclude_namespaces.push(ns);
            }
        }
        Ok(NetConf {
            cni_version: string(&obj, "cniVersion")?.unwrap_or_else(|| "0.1.0".into()),
            name,
            plugin_type: string(&obj, "type")?.unwrap_or_default(),
            prev_result: get(&obj, "prevResult").map(ToOwned::to_owned),
            log_level: match string(&obj, "plugin_log_level")? {
                Some(level) => Some(level),
                None => string(&obj, "log_level")?,
            },
            has_agent_run_dir: run_dir.is_some(),
            agent_run_dir: PathBuf::from(run_dir.unwrap_or_else(|| DEFAULT_AGENT_RUN_DIR.into())),
            ambient_enabled: boolean(&obj, "ambient_enabled")?,
            enablement_selectors: get(&obj, "enablement_selectors").map(ToOwned::to_owned),
            exclude_namespaces,
            pod_namespace: string(&obj, "pod_namespace")?.unwrap_or_default(),
            native_nftables: boolean(&obj, "native_nftables")?,
            enable_ambient_detection_retry: boolean(&obj, "enable_ambient_detection_retry")?,
            legacy_kubeconfig: string(&kubernetes, "kubeconfig")?
                .filter(|k| !k.is_empty())
                .map(PathBuf::from),
            log_uds_address: string(&obj, "log_uds_address")?
                .filter(|a| !a.is_empty())
                .map(PathBuf::from),
            status_check: boolean(&obj, "status_check")?,
        })
    }

    /// The kubeconfig the plugin reads: `<cni_agent_run_dir>/istio-cni-kubeconfig`
    /// (1.24+), else the legacy `kubernetes.kubeconfig`, else the default run dir's.
    pub fn kubeconfig_path(&self) -> PathBuf {
        match (&self.legacy_kubeconfig, self.has_agent_run_dir) {
            (Some(legacy), false) => legacy.clone(),
            _ => self.agent_run_dir.join(KUBECONFIG_FILE),
        }
    }

    /// The agent's log socket: `<run dir>/log.sock`, or the legacy address.
    pub fn log_socket(&self) -> PathBuf {
        match (&self.log_uds_address, self.has_agent_run_dir) {
            (Some(legacy), false) => legacy.clone(),
            _ => self.agent_run_dir.join("log.sock"),
        }
    }
}

/// The same rule as the container ID: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Go's field matching: the exact key, else the first case-insensitive one.
fn get<'a>(obj: &'a Object, key: &str) -> Option<&'a RawValue> {
    let found = obj
        .get(key)
        .or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v));
    found.map(|v| &**v).filter(|v| v.get().trim() != "null")
}

fn wrong_type(key: &str, expected: &str) -> CniError {
    CniError::new(
        Code::InvalidConfig,
        format!("failed to parse network configuration: {key} must be {expected}"),
    )
}

/// A known key's value as `T`; a value of another type is code 7. Decoding
/// into the target type directly stops at the first wrong token.
fn decode<T: DeserializeOwned>(obj: &Object, key: &str, expected: &str) -> Result<Option<T>, CniError> {
    get(obj, key)
        .map(|raw| serde_json::from_str(raw.get()).map_err(|_| wrong_type(key, expected)))
        .transpose()
}

fn string(obj: &Object, key: &str) -> Result<Option<String>, CniError> {
    decode(obj, key, "a string")
}

fn boolean(obj: &Object, key: &str) -> Result<bool, CniError> {
    Ok(decode(obj, key, "true or false")?.unwrap_or(false))
}

fn strings(obj: &Object, key: &str) -> Result<Vec<String>, CniError> {
    Ok(decode(obj, key, "a list of strings")?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    /// What each Istio installer writes into the conflist (docs/repair.md#entries-per-version),
    /// as one entry of a 0.3.1 list.
    fn written_by(version: &str) -> Value {
        let base = json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "istio-cni"});
        let mut v = base.as_object().unwrap().clone();
        let extra = match version {
            "1.20" => json!({"log_level": "info", "log_uds_address": "/var/run/istio-cni/log.sock",
                "kubernetes": {"kubeconfig": "/etc/cni/net.d/ZZZ-istio-cni-kubeconfig", "cni_bin_dir": "/opt/cni/bin", "exclude_namespaces": ["istio-system", "kube-system"]}}),
            "1.23" => {
                json!({"plugin_log_level": "info", "log_uds_address": "/var/run/istio-cni/log.sock", "cni_event_address": "/var/run/istio-cni/pluginevent.sock", "ambient_enabled": false,
                "kubernetes": {"kubeconfig": "/etc/cni/net.d/ZZZ-istio-cni-kubeconfig", "exclude_namespaces": ["kube-system"]}})
            }
            "1.24" => {
                json!({"plugin_log_level": "info", "cni_agent_run_dir": "/var/run/istio-cni", "ambient_enabled": false, "exclude_namespaces": ["kube-system"]})
            }
            "1.26" => {
                json!({"plugin_log_level": "info", "cni_agent_run_dir": "/var/run/istio-cni", "ambient_enabled": false, "exclude_namespaces": ["kube-system"], "pod_namespace": "istio-system"})
            }
            "1.29" => {
                json!({"plugin_log_level": "info", "cni_agent_run_dir": "/var/run/istio-cni", "ambient_enabled": false, "enablement_selectors": [{"podSelector": {"matchLabels": {"istio.io/dataplane-mode": "ambient"}}}],
                "exclude_namespaces": null, "pod_namespace": "istio-system", "native_nftables": false, "enable_ambient_detection_retry": false})
            }
            other => panic!("{other}"),
        };
        v.extend(extra.as_object().unwrap().clone());
        Value::Object(v)
    }

    #[test]
    fn every_installer_generation_is_accepted() {
        for version in ["1.20", "1.23", "1.24", "1.26", "1.29"] {
            let conf = parse(written_by(version)).unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!(conf.log_level.as_deref(), Some("info"), "{version}");
            let kubeconfig = conf.kubeconfig_path();
            if ["1.20", "1.23"].contains(&version) {
                assert_eq!(kubeconfig, PathBuf::from("/etc/cni/net.d/ZZZ-istio-cni-kubeconfig"));
                assert!(conf.exclude_namespaces.contains(&"kube-system".to_string()));
            } else {
                assert_eq!(kubeconfig, PathBuf::from("/var/run/istio-cni/istio-cni-kubeconfig"));
            }
        }
        let newest = parse(written_by("1.29")).unwrap();
        assert!(newest.exclude_namespaces.is_empty(), "null keeps the default");
        assert_eq!(newest.pod_namespace, "istio-system");
    }

    #[test]
    fn keys_match_case_insensitively_and_exact_wins() {
        let conf = parse(json!({"cniVersion": "1.0.0", "Name": "net", "Native_NFTables": true, "POD_NAMESPACE": "x", "pod_namespace": "exact"})).unwrap();
        assert_eq!(conf.name, "net");
        assert!(conf.native_nftables);
        assert_eq!(conf.pod_namespace, "exact");
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let conf = parse(json!({"name": "net", "type": "istio-cni", "some_future_key": {"x": 1}})).unwrap();
        assert_eq!(conf.cni_version, "0.1.0");
        assert_eq!(
            conf.kubeconfig_path(),
            PathBuf::from("/var/run/istio-cni/istio-cni-kubeconfig")
        );
        assert_eq!(conf.log_socket(), PathBuf::from("/var/run/istio-cni/log.sock"));
        assert!(!conf.status_check);
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        assert_eq!(NetConf::parse(b"{\"name\": \"net\"").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code, 6);
        assert_eq!(parse(json!({"cniVersion": "1.0.0"})).unwrap_err().code, 7);
        assert_eq!(parse(json!({"name": "-bad"})).unwrap_err().code, 7);
        let e = parse(json!({"name": "net", "native_nftables": "yes"})).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("native_nftables"), "{e}");
        assert_eq!(
            parse(json!({"name": "net", "exclude_namespaces": "kube-system"}))
                .unwrap_err()
                .code,
            7
        );
    }
}
