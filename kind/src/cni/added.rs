//! What the runner's ADD returns: the final plugin's result as libcni reads
//! it (typed, any spec version), and the JSON exactly as the plugin printed
//! it, which the runner chains into the next plugin and caches unchanged.

use serde_json::Value;

use cni_spec::CniResult;
use cni_spec::result::{Interface100, IpNet};

/// An ADD result.
#[derive(Debug, Clone, PartialEq)]
pub struct AddResult {
    /// `cniVersion` as printed ("" when the plugin printed none).
    pub cni_version: String,
    /// The result in its version's format ([`CniResult::from_plugin_output`]).
    pub result: CniResult,
    /// The result exactly as printed.
    pub raw: Value,
}

impl AddResult {
    /// Parses a plugin's ADD output for a list of version `conf_version`.
    pub fn parse(stdout: &[u8], conf_version: &str) -> Result<Self, String> {
        let result = CniResult::from_plugin_output(stdout, conf_version)?;
        let raw: Value = serde_json::from_slice(stdout).map_err(|e| format!("result is not JSON: {e}"))?;
        let cni_version = raw
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            cni_version,
            result,
            raw,
        })
    }

    /// The addresses assigned inside the sandbox.
    pub fn sandbox_ips(&self) -> Vec<IpNet> {
        self.result.to_100().sandbox_ips()
    }

    /// Every address of the result.
    pub fn ips(&self) -> Vec<IpNet> {
        self.result.addresses()
    }

    /// The interfaces (none in a 0.1.0/0.2.0 result).
    pub fn interfaces(&self) -> Vec<Interface100> {
        self.result.to_100().interfaces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_printed_json_and_reads_the_typed_result() {
        let out = br#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa"},{"name":"eth0","mac":"bb","sandbox":"/run/netns/p"}],
            "ips":[{"address":"10.251.0.2/24","gateway":"10.251.0.1","interface":1}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.251.0.1"}],"dns":{"nameservers":["10.96.0.10"]},"x-extra":1}"#;
        let r = AddResult::parse(out, "1.0.0").unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces()[1].sandbox, "/run/netns/p");
        assert_eq!(r.sandbox_ips()[0].to_string(), "10.251.0.2/24");
        assert_eq!(r.raw["x-extra"], 1, "unknown keys are chained as printed");
    }

    #[test]
    fn a_result_without_version_is_read_in_the_lists() {
        let r = AddResult::parse(br#"{"ips":[{"version":"4","address":"10.1.0.5/16"}]}"#, "0.4.0").unwrap();
        assert_eq!(r.cni_version, "");
        assert_eq!(r.result.cni_version(), "0.4.0");
        assert_eq!(r.ips()[0].to_string(), "10.1.0.5/16");
        assert!(AddResult::parse(b"", "1.0.0").unwrap_err().contains("not JSON"));
    }
}
