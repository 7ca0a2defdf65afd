//! Results as a runtime reads them from a plugin, and moved between the
//! three formats the way libcni's converters do: 0.1.0/0.2.0 `ip4`/`ip6`
//! become `ips` (routes merged), 0.3.x/0.4.0 and 1.x differ in
//! `ips[].version` and the 1.1.0 interface fields, and going back to 0.2.0
//! keeps the first address of each IP family with the routes of its family.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{CniError, Code};
use crate::result::{
    CniResult, Interface040, Interface100, IpConfig020, IpConfig040, IpConfig100, IpNet, Result020, Result040,
    Result100, Route, ip_version,
};
use crate::version::Family;

impl CniResult {
    /// A plugin's ADD output as libcni reads it: in the version of its own
    /// `cniVersion`, or — when that is missing or empty, as plugins of old
    /// releases print — in the config's version (`conf_version`, empty for
    /// 0.1.0). Any supported version is accepted; the caller converts.
    pub fn from_plugin_output(stdout: &[u8], conf_version: &str) -> Result<CniResult, String> {
        let raw: &RawValue = serde_json::from_slice(stdout).map_err(|e| format!("result is not JSON: {e}"))?;
        if !raw.get().starts_with('{') {
            return Err("result is not a JSON object".to_owned());
        }
        #[derive(Deserialize)]
        struct Own {
            #[serde(rename = "cniVersion", default)]
            cni_version: Option<Value>,
        }
        let own = serde_json::from_str::<Own>(raw.get()).ok().and_then(|o| o.cni_version);
        let version = match own {
            Some(Value::String(v)) if !v.is_empty() => v,
            _ if conf_version.is_empty() => "0.1.0".to_owned(),
            _ => conf_version.to_owned(),
        };
        let family = Family::of(&version).ok_or_else(|| format!("unsupported CNI result version {version:?}"))?;
        let mut result =
            CniResult::decode_as(raw, family).map_err(|e| format!("result has an unexpected shape: {e}"))?;
        result.set_version(&version);
        Ok(result)
    }

    /// The result as a `to` result (libcni's `GetAsVersion`). Going to
    /// 0.1.0/0.2.0 fails when the result has no address, which that format
    /// cannot express.
    pub fn convert(&self, to: &str) -> Result<CniResult, CniError> {
        let family = Family::of(to).ok_or_else(|| {
            CniError::new(
                Code::IncompatibleVersion,
                format!("cannot convert a result to unsupported version {to:?}"),
            )
        })?;
        let mut out = match (self, family) {
            (CniResult::V020(r), Family::V020) => CniResult::V020(r.clone()),
            (_, Family::V020) => CniResult::V020(to_020(&self.to_100()).ok_or_else(|| {
                CniError::new(
                    Code::IncompatibleVersion,
                    format!("cannot convert the result to {to}: no valid IP addresses"),
                )
            })?),
            (_, Family::V040) => CniResult::V040(to_040(self.to_100())),
            (_, Family::V100) => CniResult::V100(self.to_100()),
        };
        out.set_version(to);
        Ok(out)
    }

    /// The result in the 1.x format: every field a newer reader looks at.
    pub fn to_100(&self) -> Result100 {
        match self {
            CniResult::V100(r) => r.clone(),
            CniResult::V040(r) => Result100 {
                cni_version: r.cni_version.clone(),
                interfaces: r
                    .interfaces
                    .iter()
                    .map(|i| Interface100 {
                        name: i.name.clone(),
                        mac: i.mac.clone(),
                        mtu: 0,
                        sandbox: i.sandbox.clone(),
                        socket_path: String::new(),
                        pci_id: String::new(),
                    })
                    .collect(),
                ips: r
                    .ips
                    .iter()
                    .map(|ip| IpConfig100 {
                        interface: ip.interface,
                        address: ip.address,
                        gateway: ip.gateway,
                    })
                    .collect(),
                routes: r.routes.clone(),
                dns: r.dns.clone(),
            },
            CniResult::V020(r) => {
                let families = r.ip4.iter().chain(&r.ip6);
                Result100 {
                    cni_version: r.cni_version.clone(),
                    interfaces: vec![],
                    ips: families
                        .clone()
                        .map(|c| IpConfig100 {
                            interface: None,
                            address: c.ip,
                            gateway: c.gateway,
                        })
                        .collect(),
                    routes: families.flat_map(|c| c.routes.iter().cloned()).collect(),
                    dns: r.dns.clone(),
                }
            }
        }
    }
}

impl Result100 {
    /// The addresses assigned inside the sandbox: entries whose interface has
    /// a `sandbox`, and entries that name no interface.
    pub fn sandbox_ips(&self) -> Vec<IpNet> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                Some(i) => usize::try_from(i)
                    .ok()
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(|iface| !iface.sandbox.is_empty()),
                None => true,
            })
            .map(|ip| ip.address)
            .collect()
    }
}

fn to_040(r: Result100) -> Result040 {
    Result040 {
        cni_version: r.cni_version,
        interfaces: r
            .interfaces
            .into_iter()
            .map(|i| Interface040 {
                name: i.name,
                mac: i.mac,
                sandbox: i.sandbox,
            })
            .collect(),
        ips: r
            .ips
            .into_iter()
            .map(|ip| IpConfig040 {
                version: ip_version(&ip.address).to_owned(),
                interface: ip.interface,
                address: ip.address,
                gateway: ip.gateway,
            })
            .collect(),
        routes: r.routes,
        dns: r.dns,
    }
}

/// The first address of each IP family, each with the routes (destination
/// and gateway only) of its family; `None` without any address.
fn to_020(r: &Result100) -> Option<Result020> {
    let first = |v4: bool| {
        r.ips.iter().find(|ip| ip.address.is_v4() == v4).map(|ip| IpConfig020 {
            ip: ip.address,
            gateway: ip.gateway,
            routes: r
                .routes
                .iter()
                .filter(|route| route.dst.is_v4() == v4)
                .map(|route| Route {
                    dst: route.dst,
                    gw: route.gw,
                    mtu: 0,
                    advmss: 0,
                    priority: 0,
                    table: 0,
                    scope: 0,
                })
                .collect(),
        })
    };
    let (ip4, ip6) = (first(true), first(false));
    (ip4.is_some() || ip6.is_some()).then(|| Result020 {
        cni_version: r.cni_version.clone(),
        ip4,
        ip6,
        dns: r.dns.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BRIDGE_100: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa"},{"name":"eth0","mac":"bb","mtu":1450,"sandbox":"/run/netns/p"}],
        "ips":[{"address":"10.251.0.2/24","gateway":"10.251.0.1","interface":1},{"address":"fd00::2/64","interface":1},{"address":"10.9.9.9/32","interface":0}],
        "routes":[{"dst":"0.0.0.0/0","gw":"10.251.0.1","mtu":1400},{"dst":"::/0"}],"dns":{"nameservers":["10.96.0.10"]}}"#;

    fn printed(r: &CniResult, version: &str) -> Value {
        serde_json::from_str(&r.print(version)).unwrap()
    }

    #[test]
    fn plugin_output_takes_its_own_version_or_the_configs() {
        let r = CniResult::from_plugin_output(BRIDGE_100.as_bytes(), "0.4.0").unwrap();
        assert_eq!(r.cni_version(), "1.0.0");
        let sandbox: Vec<String> = r.to_100().sandbox_ips().iter().map(ToString::to_string).collect();
        assert_eq!(sandbox, ["10.251.0.2/24", "fd00::2/64"]);
        // No cniVersion: read as the config's version, and carries it.
        let r =
            CniResult::from_plugin_output(br#"{"ips":[{"version":"4","address":"10.1.0.2/24"}]}"#, "0.3.1").unwrap();
        assert!(matches!(r, CniResult::V040(_)));
        assert_eq!(r.cni_version(), "0.3.1");
        // Neither: 0.1.0.
        let r = CniResult::from_plugin_output(br#"{"ip4":{"ip":"10.1.0.2/24"}}"#, "").unwrap();
        assert_eq!((r.cni_version(), r.addresses().len()), ("0.1.0", 1));
    }

    #[test]
    fn bad_plugin_output_is_explained() {
        let err = |out: &[u8]| CniResult::from_plugin_output(out, "1.0.0").unwrap_err();
        assert!(err(b"").contains("result is not JSON"));
        assert!(err(b"[]").contains("result is not a JSON object"));
        assert!(err(br#"{"cniVersion":"9.9.9"}"#).contains("unsupported CNI result version \"9.9.9\""));
        assert!(err(br#"{"ips":[{"address":1}]}"#).contains("unexpected shape"));
        assert!(err(br#"{"ips":[{"address":"10.1.0.2"}]}"#).contains("missing /prefix-length"));
    }

    #[test]
    fn the_1x_and_04x_formats_convert_both_ways() {
        let r = CniResult::from_plugin_output(BRIDGE_100.as_bytes(), "1.0.0").unwrap();
        let old = r.convert("0.4.0").unwrap();
        let doc = printed(&old, "0.4.0");
        assert_eq!(doc["cniVersion"], "0.4.0");
        assert_eq!(doc["ips"][1]["version"], "6");
        assert!(doc["interfaces"][1].get("mtu").is_none(), "mtu is a 1.1.0 field: {doc}");
        let back = old.convert("1.1.0").unwrap();
        let doc = printed(&back, "1.1.0");
        assert!(doc["ips"][0].get("version").is_none(), "{doc}");
        assert_eq!(doc["routes"][0]["mtu"], 1400);
        assert_eq!(back.addresses(), r.addresses());
    }

    #[test]
    fn the_020_format_converts_like_libcni() {
        let r = CniResult::from_plugin_output(BRIDGE_100.as_bytes(), "1.0.0").unwrap();
        let doc = printed(&r.convert("0.2.0").unwrap(), "0.2.0");
        assert_eq!(
            doc,
            json!({"cniVersion": "0.2.0",
                "ip4": {"ip": "10.251.0.2/24", "gateway": "10.251.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.251.0.1"}]},
                "ip6": {"ip": "fd00::2/64", "routes": [{"dst": "::/0"}]},
                "dns": {"nameservers": ["10.96.0.10"]}})
        );
        let up = CniResult::from_plugin_output(doc.to_string().as_bytes(), "0.2.0")
            .unwrap()
            .convert("0.3.1")
            .unwrap();
        let doc = printed(&up, "0.3.1");
        assert_eq!(
            doc["ips"][0],
            json!({"version": "4", "address": "10.251.0.2/24", "gateway": "10.251.0.1"})
        );
        assert_eq!(doc["routes"].as_array().unwrap().len(), 2);
        let empty = CniResult::empty(Family::V100).convert("0.2.0").unwrap_err();
        assert!(empty.msg.contains("no valid IP addresses"), "{empty}");
        assert_eq!(r.convert("2.0.0").unwrap_err().code, 1);
    }
}
