//! `prevResult`: decoded with the *config's* version family and printed back
//! in that version's format, unchanged (reference: istio-cni-plugin.md §1.6).
//! Field order, omission rules and the 4-space indentation follow the Go
//! library the runtime side uses, so chained output is byte-compatible.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::{CniError, Code};
use super::version::Family;
use crate::redirect::Prefix;

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// An address with its prefix length, host bits kept (`10.0.0.2/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(pub Prefix);

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Prefix>().map(IpNet).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub advmss: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub table: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scope: i64,
}

/// 0.1.0 / 0.2.0 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Result020 {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip4: Option<IpConfig020>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpConfig020>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig020 {
    pub ip: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// 0.3.x / 0.4.0 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Result040 {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface040>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig040>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface040 {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig040 {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// 1.0.0 / 1.1.0 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Result100 {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface100>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig100>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface100 {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig100 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<i64>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A result in one of the three formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniResult {
    V020(Result020),
    V040(Result040),
    V100(Result100),
}

impl CniResult {
    /// The result a plugin prints when there was no `prevResult`: only the version.
    pub fn empty(family: Family) -> CniResult {
        match family {
            Family::V020 => CniResult::V020(Result020 {
                cni_version: String::new(),
                ip4: None,
                ip6: None,
                dns: Dns::default(),
            }),
            Family::V040 => CniResult::V040(Result040 {
                cni_version: String::new(),
                interfaces: vec![],
                ips: vec![],
                routes: vec![],
                dns: Dns::default(),
            }),
            Family::V100 => CniResult::V100(Result100 {
                cni_version: String::new(),
                interfaces: vec![],
                ips: vec![],
                routes: vec![],
                dns: Dns::default(),
            }),
        }
    }

    /// Decodes `prevResult` with the config's version: the object's own
    /// `cniVersion` must belong to the same family.
    pub fn decode(prev: &serde_json::Value, conf_version: &str) -> Result<CniResult, CniError> {
        let family = Family::of(conf_version).ok_or_else(|| {
            CniError::new(
                Code::IncompatibleVersion,
                format!("unsupported cniVersion {conf_version:?}"),
            )
        })?;
        let own = prev.get("cniVersion").and_then(|v| v.as_str()).unwrap_or_default();
        let bad = |detail: String| CniError::new(Code::Decode, format!("could not parse prevResult: {detail}"));
        if !family.versions().contains(&own) {
            return Err(bad(format!(
                "result type supports {:?} but unmarshalled CNIVersion is {own:?}",
                family.versions()
            )));
        }
        let decoded = match family {
            Family::V020 => serde_json::from_value(prev.clone()).map(CniResult::V020),
            Family::V040 => serde_json::from_value(prev.clone()).map(CniResult::V040),
            Family::V100 => serde_json::from_value(prev.clone()).map(CniResult::V100),
        };
        decoded.map_err(|e| bad(e.to_string()))
    }

    /// The result's IP addresses (for logs and IPv6 decisions).
    pub fn addresses(&self) -> Vec<Prefix> {
        match self {
            CniResult::V020(r) => r.ip4.iter().chain(&r.ip6).map(|c| c.ip.0).collect(),
            CniResult::V040(r) => r.ips.iter().map(|c| c.address.0).collect(),
            CniResult::V100(r) => r.ips.iter().map(|c| c.address.0).collect(),
        }
    }

    /// Prints the result as version `conf_version` (same family): JSON with
    /// 4-space indentation and no trailing newline.
    pub fn print(&self, conf_version: &str) -> String {
        let mut result = self.clone();
        match &mut result {
            CniResult::V020(r) => r.cni_version = conf_version.into(),
            CniResult::V040(r) => {
                r.cni_version = conf_version.into();
                // Go derives `version` from the address when converting back.
                for ip in &mut r.ips {
                    ip.version = if ip.address.0.is_v4() { "4" } else { "6" }.into();
                }
            }
            CniResult::V100(r) => r.cni_version = conf_version.into(),
        }
        let mut out = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
        let written = match &result {
            CniResult::V020(r) => r.serialize(&mut ser),
            CniResult::V040(r) => r.serialize(&mut ser),
            CniResult::V100(r) => r.serialize(&mut ser),
        };
        // Plain structs of strings and numbers always serialize.
        debug_assert!(written.is_ok());
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result(version: &str) -> serde_json::Value {
        let mut ip = json!({"address": "10.251.0.5/24", "gateway": "10.251.0.1", "interface": 2});
        if Family::of(version) == Some(Family::V040) {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.251.0.1"}],
            "dns": {}
        })
    }

    #[test]
    fn results_round_trip_in_their_own_format() {
        for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let prev = bridge_result(version);
            let out = CniResult::decode(&prev, version).unwrap().print(version);
            let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
            let mut expected = prev.clone();
            if Family::of(version) == Some(Family::V100) {
                expected.as_object_mut().unwrap().remove("dns");
            }
            assert_eq!(printed, expected, "{version}: {out}");
            assert!(!out.ends_with('\n'));
            assert!(out.contains("\n    \"cniVersion\""), "4-space indent: {out}");
        }
    }

    #[test]
    fn the_output_takes_the_config_version_within_the_family() {
        let out = CniResult::decode(&bridge_result("0.3.0"), "0.4.0")
            .unwrap()
            .print("0.4.0");
        assert!(out.contains("\"cniVersion\": \"0.4.0\""), "{out}");
    }

    #[test]
    fn a_prev_result_from_another_family_is_rejected() {
        let e = CniResult::decode(&bridge_result("1.0.0"), "0.4.0").unwrap_err();
        assert!(e.msg.contains("unmarshalled CNIVersion is \"1.0.0\""), "{e}");
        let e = CniResult::decode(&json!({"ips": []}), "1.0.0").unwrap_err();
        assert!(e.msg.contains("CNIVersion is \"\""), "{e}");
    }

    #[test]
    fn malformed_addresses_are_decode_errors() {
        let mut prev = bridge_result("1.0.0");
        prev["ips"][0]["address"] = json!("10.251.0.5");
        let e = CniResult::decode(&prev, "1.0.0").unwrap_err();
        assert_eq!(e.code, 6);
    }

    #[test]
    fn empty_results_per_family() {
        assert_eq!(
            CniResult::empty(Family::V100).print("1.1.0"),
            "{\n    \"cniVersion\": \"1.1.0\"\n}"
        );
        assert_eq!(
            CniResult::empty(Family::V040).print("0.4.0"),
            "{\n    \"cniVersion\": \"0.4.0\",\n    \"dns\": {}\n}"
        );
        assert!(CniResult::empty(Family::V020).print("0.2.0").contains("\"dns\": {}"));
    }

    #[test]
    fn legacy_020_results() {
        let prev = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.2/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]}, "dns": {"nameservers": ["10.96.0.10"]}});
        let r = CniResult::decode(&prev, "0.2.0").unwrap();
        assert_eq!(r.addresses()[0].to_string(), "10.1.0.2/16");
        let printed: serde_json::Value = serde_json::from_str(&r.print("0.2.0")).unwrap();
        assert_eq!(printed, prev);
    }
}
