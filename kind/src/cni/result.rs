//! What plugins print: results, error objects and version reports.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An ADD result. The typed fields are a view; [`CniResult::raw`] is what the
/// plugin printed, passed unchanged as the next plugin's `prevResult` and
/// stored in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    /// `cniVersion` of the result.
    pub cni_version: String,
    /// `interfaces`.
    pub interfaces: Vec<ResultInterface>,
    /// `ips` (0.1.0/0.2.0 `ip4`/`ip6` are converted).
    pub ips: Vec<ResultIp>,
    /// `routes` (0.1.0/0.2.0 per-family routes are merged).
    pub routes: Vec<ResultRoute>,
    /// `dns`.
    pub dns: ResultDns,
    /// The result exactly as printed.
    pub raw: Value,
}

/// An entry of `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultInterface {
    /// Interface name.
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// MTU (1.1.0).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the sandbox; absent on the host.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// Socket path (1.1.0).
    #[serde(default)]
    pub socket_path: Option<String>,
    /// PCI id (1.1.0).
    #[serde(default, rename = "pciID")]
    pub pci_id: Option<String>,
}

/// An entry of `ips`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResultIp {
    /// `a.b.c.d/len` or an IPv6 CIDR.
    pub address: String,
    /// Gateway.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
    /// `"4"`/`"6"` in 0.3.x and 0.4.0.
    #[serde(default)]
    pub version: Option<String>,
}

impl ResultIp {
    /// The address without its prefix length, if it parses.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next().and_then(|a| a.parse().ok())
    }

    /// The prefix length, if present.
    pub fn prefix_len(&self) -> Option<u8> {
        self.address.split_once('/').and_then(|(_, p)| p.parse().ok())
    }
}

/// An entry of `routes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResultRoute {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    #[serde(default)]
    pub gw: Option<IpAddr>,
    /// MTU (1.1.0).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default)]
    pub advmss: Option<u32>,
    /// Priority (1.1.0).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Table (1.1.0).
    #[serde(default)]
    pub table: Option<u32>,
    /// Scope (1.1.0).
    #[serde(default)]
    pub scope: Option<u32>,
}

/// `dns`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResultDns {
    /// Name servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Modern {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<ResultInterface>,
    #[serde(default)]
    ips: Vec<ResultIp>,
    #[serde(default)]
    routes: Vec<ResultRoute>,
    #[serde(default)]
    dns: Option<ResultDns>,
}

#[derive(Deserialize)]
struct LegacyFamily {
    ip: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<ResultRoute>,
}

impl CniResult {
    /// Parses a plugin's ADD output: a JSON object in any spec version.
    pub fn parse(stdout: &[u8]) -> Result<Self, String> {
        let raw: Value = serde_json::from_slice(stdout).map_err(|e| format!("result is not JSON: {e}"))?;
        Self::from_value(raw)
    }

    /// Interprets a result object (e.g. from the cache).
    pub fn from_value(raw: Value) -> Result<Self, String> {
        if !raw.is_object() {
            return Err("result is not a JSON object".to_owned());
        }
        let modern: Modern =
            serde_json::from_value(raw.clone()).map_err(|e| format!("result has an unexpected shape: {e}"))?;
        let mut result = CniResult {
            cni_version: modern.cni_version,
            interfaces: modern.interfaces,
            ips: modern.ips,
            routes: modern.routes,
            dns: modern.dns.unwrap_or_default(),
            raw,
        };
        // 0.1.0 / 0.2.0: {"ip4": {"ip", "gateway", "routes"}, "ip6": {...}}.
        for (key, family) in [("ip4", "4"), ("ip6", "6")] {
            if let Some(v) = result.raw.get(key).filter(|v| !v.is_null()) {
                let legacy: LegacyFamily =
                    serde_json::from_value(v.clone()).map_err(|e| format!("result has a bad {key:?}: {e}"))?;
                result.ips.push(ResultIp {
                    address: legacy.ip,
                    gateway: legacy.gateway,
                    interface: None,
                    version: Some(family.to_owned()),
                });
                result.routes.extend(legacy.routes);
            }
        }
        Ok(result)
    }

    /// The addresses assigned inside the sandbox: entries whose interface has
    /// a `sandbox`, or every address when no interface is referenced.
    pub fn sandbox_ips(&self) -> Vec<&ResultIp> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                Some(i) => self.interfaces.get(i).is_some_and(|iface| iface.sandbox.is_some()),
                None => true,
            })
            .collect()
    }
}

/// The error object a failing plugin prints (`code`, `msg`, `details`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PluginError {
    /// `cniVersion` of the error, if given.
    #[serde(default, rename = "cniVersion", skip_serializing_if = "Option::is_none")]
    pub cni_version: Option<String>,
    /// Error code (0 when the output was not an error object).
    #[serde(default)]
    pub code: u32,
    /// Message.
    #[serde(default)]
    pub msg: String,
    /// Details.
    #[serde(default)]
    pub details: String,
}

impl PluginError {
    /// libcni's interpretation of a failed plugin's output: the error object
    /// from stdout; without stdout, a message quoting stderr; unparsable
    /// stdout is quoted (code 0 in both fallbacks).
    pub fn from_output(stdout: &[u8], stderr: &[u8], status: &str) -> Self {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            let msg = if stderr.iter().all(u8::is_ascii_whitespace) {
                format!("netplugin failed with no error message: {status}")
            } else {
                format!("netplugin failed: {:?}", String::from_utf8_lossy(stderr))
            };
            return Self { msg, ..Self::default() };
        }
        serde_json::from_slice::<PluginError>(stdout).unwrap_or_else(|e| Self {
            msg: format!(
                "netplugin failed but error parsing its diagnostic message {:?}: {e}",
                String::from_utf8_lossy(stdout)
            ),
            ..Self::default()
        })
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        write!(f, " (code {})", self.code)
    }
}

/// A plugin's answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// `cniVersion` of the answer.
    #[serde(default)]
    pub cni_version: String,
    /// `supportedVersions`.
    #[serde(default)]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// Parses a VERSION answer; an empty answer is a pre-0.3.0 plugin
    /// supporting 0.1.0 and 0.2.0 (as libcni assumes).
    pub fn parse(stdout: &[u8]) -> Result<Self, String> {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                cni_version: "0.1.0".to_owned(),
                supported_versions: vec!["0.1.0".to_owned(), "0.2.0".to_owned()],
            });
        }
        let info: VersionInfo =
            serde_json::from_slice(stdout).map_err(|e| format!("VERSION output is not a version report: {e}"))?;
        if info.supported_versions.is_empty() {
            // A 0.1.0-era answer carrying only cniVersion.
            return Ok(Self {
                supported_versions: vec![info.cni_version.clone()],
                ..info
            });
        }
        Ok(info)
    }

    /// Whether `version` is supported (exact string match, as skel does).
    pub fn supports(&self, version: &str) -> bool {
        self.supported_versions.iter().any(|v| v == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_result_parses() {
        let out = br#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa"},{"name":"eth0","mac":"bb","sandbox":"/run/netns/p"}],
            "ips":[{"address":"10.251.0.2/24","gateway":"10.251.0.1","interface":1}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.251.0.1"}],"dns":{"nameservers":["10.96.0.10"]}}"#;
        let r = CniResult::parse(out).unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/run/netns/p"));
        assert_eq!(r.ips[0].ip(), Some("10.251.0.2".parse().unwrap()));
        assert_eq!(r.ips[0].prefix_len(), Some(24));
        assert_eq!(r.routes[0].gw, Some("10.251.0.1".parse().unwrap()));
        assert_eq!(r.dns.nameservers, ["10.96.0.10"]);
        assert_eq!(r.sandbox_ips().len(), 1);
        assert_eq!(r.raw["interfaces"][0]["name"], "cni0");
    }

    #[test]
    fn legacy_result_is_converted() {
        let r = CniResult::parse(
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]}}"#,
        )
        .unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.ips[0].version.as_deref(), Some("4"));
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
    }

    #[test]
    fn bad_results_are_explained() {
        assert!(CniResult::parse(b"").unwrap_err().contains("not JSON"));
        assert!(CniResult::parse(b"[]").unwrap_err().contains("not a JSON object"));
        assert!(
            CniResult::parse(br#"{"ips":[{"address":1}]}"#)
                .unwrap_err()
                .contains("unexpected shape")
        );
    }

    #[test]
    fn error_output_like_libcni() {
        let e = PluginError::from_output(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"d"}"#,
            b"log",
            "exit 1",
        );
        assert_eq!((e.code, e.msg.as_str(), e.details.as_str()), (7, "bad", "d"));
        assert_eq!(e.to_string(), "bad; d (code 7)");
        let e = PluginError::from_output(b"", b"boom\n", "exit 1");
        assert_eq!(e.msg, "netplugin failed: \"boom\\n\"");
        let e = PluginError::from_output(b"", b"", "exit status: 2");
        assert_eq!(e.msg, "netplugin failed with no error message: exit status: 2");
        let e = PluginError::from_output(b"garbage", b"", "exit 1");
        assert!(
            e.msg
                .starts_with("netplugin failed but error parsing its diagnostic message \"garbage\"")
        );
    }

    #[test]
    fn version_reports() {
        let v = VersionInfo::parse(br#"{"cniVersion":"1.0.0","supportedVersions":["0.3.1","1.0.0"]}"#).unwrap();
        assert!(v.supports("1.0.0"));
        assert!(!v.supports("1.1.0"));
        assert_eq!(VersionInfo::parse(b"").unwrap().supported_versions, ["0.1.0", "0.2.0"]);
        assert_eq!(
            VersionInfo::parse(br#"{"cniVersion":"0.1.0"}"#)
                .unwrap()
                .supported_versions,
            ["0.1.0"]
        );
        assert!(VersionInfo::parse(b"nope").is_err());
    }
}
