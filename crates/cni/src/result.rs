//! CNI results in the three formats of the spec's history: decoded with a
//! version ([`CniResult::decode`], libcni's `NewResult`), read from a
//! plugin's output ([`CniResult::from_plugin_output`]), converted between
//! versions ([`CniResult::convert`]) and printed ([`CniResult::print`]).
//! Field order, omission rules and the 4-space indentation follow the Go
//! library the runtime side uses, so chained output is byte-compatible.
//! Every list is limited to [`MAX_ENTRIES`] while it is decoded.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{CniError, Code};
pub use crate::ipnet::IpNet;
use crate::version::Family;

/// The most entries of any one list in a `prevResult` (interfaces, ips,
/// routes, DNS nameservers, search domains, options). A pod's result has a
/// few of each, a multi-network pod's some tens; 1024 is far above any real
/// result, and refusing more while decoding keeps a hostile result from
/// costing memory.
pub const MAX_ENTRIES: usize = 1024;

/// A list of at most [`MAX_ENTRIES`]; `what` names it in the error.
fn limited<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D, what: &'static str) -> Result<Vec<T>, D::Error> {
    struct Limited<T>(&'static str, PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Limited<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX_ENTRIES} {}", self.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX_ENTRIES {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_ENTRIES} {} (the limit for a previous result)",
                        self.0
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Limited(what, PhantomData))
}

fn interfaces<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    limited(d, "interfaces")
}

fn ips<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    limited(d, "ips")
}

fn routes<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    limited(d, "routes")
}

fn nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    limited(d, "DNS nameservers")
}

fn search<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    limited(d, "DNS search domains")
}

fn options<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    limited(d, "DNS options")
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, deserialize_with = "nameservers", skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, deserialize_with = "search", skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, deserialize_with = "options", skip_serializing_if = "Vec::is_empty")]
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
    #[serde(default, deserialize_with = "routes", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// 0.3.x / 0.4.0 result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Result040 {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(default, deserialize_with = "interfaces", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface040>,
    #[serde(default, deserialize_with = "ips", skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig040>,
    #[serde(default, deserialize_with = "routes", skip_serializing_if = "Vec::is_empty")]
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
    #[serde(default, deserialize_with = "interfaces", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface100>,
    #[serde(default, deserialize_with = "ips", skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig100>,
    #[serde(default, deserialize_with = "routes", skip_serializing_if = "Vec::is_empty")]
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

    /// Decodes a result (`prevResult`) with the config's version, as libcni's
    /// `NewResult`: the object's own `cniVersion` must belong to the same
    /// family.
    pub fn decode(prev: &RawValue, conf_version: &str) -> Result<CniResult, CniError> {
        let family = Family::of(conf_version).ok_or_else(|| {
            CniError::new(
                Code::IncompatibleVersion,
                format!("unsupported cniVersion {conf_version:?}"),
            )
        })?;
        #[derive(Deserialize)]
        struct Own {
            #[serde(rename = "cniVersion")]
            cni_version: Option<String>,
        }
        // Not an object, or a cniVersion that is not a string: no version.
        let own = serde_json::from_str::<Own>(prev.get())
            .ok()
            .and_then(|o| o.cni_version)
            .unwrap_or_default();
        let own = own.as_str();
        let bad = |detail: String| CniError::new(Code::Decode, format!("could not parse prevResult: {detail}"));
        if !family.versions().contains(&own) {
            return Err(bad(format!(
                "result type supports {:?} but unmarshalled CNIVersion is {own:?}",
                family.versions()
            )));
        }
        Self::decode_as(prev, family).map_err(|e| bad(e.to_string()))
    }

    /// The result in `family`'s format, whatever its own `cniVersion` says.
    pub(crate) fn decode_as(raw: &RawValue, family: Family) -> Result<CniResult, serde_json::Error> {
        match family {
            Family::V020 => serde_json::from_str(raw.get()).map(CniResult::V020),
            Family::V040 => serde_json::from_str(raw.get()).map(CniResult::V040),
            Family::V100 => serde_json::from_str(raw.get()).map(CniResult::V100),
        }
    }

    /// Sets the `cniVersion` the result carries.
    pub(crate) fn set_version(&mut self, version: &str) {
        match self {
            CniResult::V020(r) => r.cni_version = version.into(),
            CniResult::V040(r) => r.cni_version = version.into(),
            CniResult::V100(r) => r.cni_version = version.into(),
        }
    }

    /// The result's IP addresses (for logs and IPv6 decisions).
    pub fn addresses(&self) -> Vec<IpNet> {
        match self {
            CniResult::V020(r) => r.ip4.iter().chain(&r.ip6).map(|c| c.ip).collect(),
            CniResult::V040(r) => r.ips.iter().map(|c| c.address).collect(),
            CniResult::V100(r) => r.ips.iter().map(|c| c.address).collect(),
        }
    }

    /// The `cniVersion` the result carries.
    pub fn cni_version(&self) -> &str {
        match self {
            CniResult::V020(r) => &r.cni_version,
            CniResult::V040(r) => &r.cni_version,
            CniResult::V100(r) => &r.cni_version,
        }
    }

    /// Prints the result as version `conf_version` (same family): JSON with
    /// 4-space indentation and no trailing newline.
    pub fn print(&self, conf_version: &str) -> String {
        let mut result = self.clone();
        result.set_version(conf_version);
        if let CniResult::V040(r) = &mut result {
            // Go derives `version` from the address when converting back.
            for ip in &mut r.ips {
                ip.version = ip_version(&ip.address).into();
            }
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

/// `"4"` or `"6"`: `ips[].version` of the 0.3.x/0.4.0 format.
pub(crate) fn ip_version(address: &IpNet) -> &'static str {
    if address.is_v4() { "4" } else { "6" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(prev: &serde_json::Value, conf_version: &str) -> Result<CniResult, CniError> {
        CniResult::decode(&serde_json::value::to_raw_value(prev).unwrap(), conf_version)
    }

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
            let out = decode(&prev, version).unwrap().print(version);
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
        let out = decode(&bridge_result("0.3.0"), "0.4.0").unwrap().print("0.4.0");
        assert!(out.contains("\"cniVersion\": \"0.4.0\""), "{out}");
    }

    #[test]
    fn a_prev_result_from_another_family_is_rejected() {
        let e = decode(&bridge_result("1.0.0"), "0.4.0").unwrap_err();
        assert!(e.msg.contains("unmarshalled CNIVersion is \"1.0.0\""), "{e}");
        let e = decode(&json!({"ips": []}), "1.0.0").unwrap_err();
        assert!(e.msg.contains("CNIVersion is \"\""), "{e}");
    }

    #[test]
    fn malformed_addresses_are_decode_errors() {
        let mut prev = bridge_result("1.0.0");
        prev["ips"][0]["address"] = json!("10.251.0.5");
        let e = decode(&prev, "1.0.0").unwrap_err();
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
        let r = decode(&prev, "0.2.0").unwrap();
        assert_eq!(r.addresses()[0].to_string(), "10.1.0.2/16");
        let printed: serde_json::Value = serde_json::from_str(&r.print("0.2.0")).unwrap();
        assert_eq!(printed, prev);
    }

    #[test]
    fn every_list_is_limited_while_decoding() {
        let many = |item: serde_json::Value, n: usize| json!(vec![item; n]);
        let ip = json!({"address": "10.0.0.2/24"});
        let iface = json!({"name": "eth0"});
        let route = json!({"dst": "0.0.0.0/0"});
        let dns = |key: &str, n: usize| json!({key: many(json!("x"), n)});
        let cases = [
            ("1.0.0", json!({"ips": many(ip.clone(), 1025)}), "more than 1024 ips"),
            (
                "1.0.0",
                json!({"interfaces": many(iface.clone(), 1025)}),
                "more than 1024 interfaces",
            ),
            (
                "1.0.0",
                json!({"routes": many(route.clone(), 1025)}),
                "more than 1024 routes",
            ),
            (
                "1.0.0",
                json!({"dns": dns("nameservers", 1025)}),
                "more than 1024 DNS nameservers",
            ),
            (
                "0.4.0",
                json!({"dns": dns("search", 1025)}),
                "more than 1024 DNS search domains",
            ),
            (
                "0.4.0",
                json!({"dns": dns("options", 1025)}),
                "more than 1024 DNS options",
            ),
            (
                "0.4.0",
                json!({"interfaces": many(iface.clone(), 1025)}),
                "more than 1024 interfaces",
            ),
            (
                "0.2.0",
                json!({"ip4": {"ip": "10.0.0.2/24", "routes": many(route.clone(), 1025)}}),
                "more than 1024 routes",
            ),
        ];
        for (version, mut prev, expected) in cases {
            prev["cniVersion"] = json!(version);
            let e = decode(&prev, version).unwrap_err();
            assert_eq!(e.code, 6);
            assert!(
                e.msg.starts_with("could not parse prevResult: ") && e.msg.contains(expected),
                "{version}: {e}"
            );
        }
        // Exactly the limit is fine, and printed back whole.
        let full = json!({"cniVersion": "1.0.0", "interfaces": many(iface, 1024), "ips": many(ip, 1024),
            "routes": many(route, 1024), "dns": dns("nameservers", 1024)});
        let r = decode(&full, "1.0.0").unwrap();
        assert_eq!(r.addresses().len(), 1024);
        let printed: serde_json::Value = serde_json::from_str(&r.print("1.0.0")).unwrap();
        assert_eq!(printed, full);
    }
}
