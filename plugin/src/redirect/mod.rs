//! The redirect a pod asks for: its annotations, `istio-proxy` env and
//! securityContext, validated with Istio's rules and defaults
//! (docs/plugin.md#annotations, docs/plugin.md#derived-values). Invalid input is an error naming
//! the annotation, the value and what is allowed; there are no partial results.

pub mod values;

use std::fmt;

use crate::pod::PodInfo;
pub use values::Prefix;
use values::{parse_cidr_list, parse_go_bool, parse_interface_list, parse_port_list};

/// Annotation keys, as Istio's injector and users write them.
pub mod keys {
    pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
    pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
    /// Deprecated spelling, honoured only when the new key is absent.
    pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
}

/// Ports the agent and proxy serve that are never captured inbound.
const ALWAYS_EXCLUDED_INBOUND: [u16; 3] = [15020, 15021, 15090];
/// Istio's proxy uid/gid when the container does not set one (or sets 0).
pub const DEFAULT_PROXY_ID: u32 = 1337;
/// The largest user or group ID Kubernetes accepts in a securityContext.
pub const MAX_ID: i64 = i32::MAX as i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
}

impl fmt::Display for InterceptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::Tproxy => "TPROXY",
        })
    }
}

/// Inbound ports to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// `*`: every port except the excluded ones.
    All,
    /// Exactly these ports; empty means no inbound capture at all.
    Only(Vec<u16>),
}

/// Outbound destinations to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRanges {
    /// `*`: every destination except the excluded ranges.
    All,
    /// Only these prefixes; empty means no CIDR-based capture.
    Only(Vec<Prefix>),
}

/// Which traffic is captured: the ports, destinations and interfaces a pod
/// selects. The rule plan takes it over unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    pub include_outbound_ranges: OutboundRanges,
    pub exclude_outbound_ranges: Vec<Prefix>,
    pub include_inbound_ports: InboundPorts,
    /// For a pod, already merged with 15020, 15021 and 15090.
    pub exclude_inbound_ports: Vec<u16>,
    pub include_outbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_interfaces: Vec<String>,
    pub reroute_interfaces: Vec<String>,
}

impl Traffic {
    /// Selects nothing: no inbound ports, no outbound ranges, no exclusions.
    pub fn nothing() -> Traffic {
        Traffic {
            include_outbound_ranges: OutboundRanges::Only(Vec::new()),
            exclude_outbound_ranges: Vec::new(),
            include_inbound_ports: InboundPorts::Only(Vec::new()),
            exclude_inbound_ports: Vec::new(),
            include_outbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_interfaces: Vec::new(),
            reroute_interfaces: Vec::new(),
        }
    }

    /// Whether any inbound port is captured (an empty include list captures none).
    pub fn captures_inbound(&self) -> bool {
        self.include_inbound_ports != InboundPorts::Only(Vec::new())
    }
}

/// A validated redirect for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub mode: InterceptionMode,
    pub traffic: Traffic,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// `ISTIO_META_DNS_CAPTURE`: redirect all DNS to the agent on 15053.
    pub dns_capture: bool,
    /// `ISTIO_DUAL_STACK`: affects only how the netns's IP family is detected.
    pub dual_stack: bool,
    /// `INVALID_DROP`: drop conntrack-INVALID packets.
    pub invalid_drop: bool,
    /// Non-fatal findings, e.g. an unparseable boolean env value read as false.
    pub warnings: Vec<String>,
}

/// An annotation (or `istio-proxy` field) whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_kind} {key}: invalid value {value:?}: {reason}")]
pub struct RedirectError {
    /// `annotation`, or `istio-proxy container` for its fields.
    pub source_kind: &'static str,
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl Redirect {
    /// Builds the redirect for a pod the decision step chose to redirect.
    pub fn from_pod(pod: &PodInfo) -> Result<Redirect, RedirectError> {
        let a = Annotations(pod);
        let mode = match a.get(keys::INTERCEPTION_MODE) {
            None | Some("REDIRECT") => InterceptionMode::Redirect,
            Some("TPROXY") => InterceptionMode::Tproxy,
            Some(other) => {
                return Err(a.error(
                    keys::INTERCEPTION_MODE,
                    other,
                    "expected REDIRECT or TPROXY (case-sensitive)",
                ));
            }
        };

        let include_outbound_ranges = match a.get(keys::INCLUDE_OUTBOUND_IP_RANGES) {
            None | Some("*") => OutboundRanges::All,
            Some(v) => OutboundRanges::Only(a.cidrs(keys::INCLUDE_OUTBOUND_IP_RANGES, v)?),
        };
        let exclude_outbound_ranges = match a.get(keys::EXCLUDE_OUTBOUND_IP_RANGES) {
            None => Vec::new(),
            Some(v) if v.split(',').any(|c| c == "*") => {
                return Err(a.error(
                    keys::EXCLUDE_OUTBOUND_IP_RANGES,
                    v,
                    "`*` is not allowed here; list the CIDRs to exclude",
                ));
            }
            Some(v) => a.cidrs(keys::EXCLUDE_OUTBOUND_IP_RANGES, v)?,
        };

        let include_inbound_ports = match a.get(keys::INCLUDE_INBOUND_PORTS).map(str::trim) {
            None | Some("*") => InboundPorts::All,
            Some(v) => InboundPorts::Only(a.ports(keys::INCLUDE_INBOUND_PORTS, v)?),
        };
        // A `*` exclusion would reach the rules only alongside a `*` include,
        // where iptables would reject `--dport *`; Istio fails late there.
        let exclude_inbound = match a.get(keys::EXCLUDE_INBOUND_PORTS).map(str::trim) {
            Some("*") if include_inbound_ports == InboundPorts::All => {
                return Err(a.error(
                    keys::EXCLUDE_INBOUND_PORTS,
                    "*",
                    "`*` cannot exclude every port while includeInboundPorts is `*`; list ports, or set includeInboundPorts to \"\" to capture no inbound traffic",
                ));
            }
            Some("*") => Vec::new(), // unused: exclusions apply only to a `*` include
            Some(v) => a.ports(keys::EXCLUDE_INBOUND_PORTS, v)?,
            None => vec![15020],
        };
        let mut exclude_inbound_ports = Vec::new();
        for port in exclude_inbound.into_iter().chain(ALWAYS_EXCLUDED_INBOUND) {
            if !exclude_inbound_ports.contains(&port) {
                exclude_inbound_ports.push(port);
            }
        }

        let include_outbound_ports = a.explicit_ports(keys::INCLUDE_OUTBOUND_PORTS, None)?;
        let exclude_outbound_ports = a.explicit_ports(keys::EXCLUDE_OUTBOUND_PORTS, Some(15020))?;

        let exclude_interfaces = a.interfaces(keys::EXCLUDE_INTERFACES)?;
        let reroute_interfaces = if a.get(keys::REROUTE_VIRTUAL_INTERFACES).is_some() {
            a.interfaces(keys::REROUTE_VIRTUAL_INTERFACES)?
        } else {
            a.interfaces(keys::KUBEVIRT_INTERFACES)?
        };

        let proxy = pod.proxy.clone().unwrap_or_default();
        let proxy_uid = proxy_id("securityContext.runAsUser", proxy.run_as_user)?;
        let proxy_gid = proxy_id("securityContext.runAsGroup", proxy.run_as_group)?;
        let mut warnings = Vec::new();
        let mut flag = |name: &str| match proxy.env.get(name) {
            None => false,
            Some(v) => parse_go_bool(v).unwrap_or_else(|| {
                warnings.push(format!(
                    "istio-proxy env {name}={v:?} is not a boolean; treating it as false"
                ));
                false
            }),
        };
        let dns_capture = flag("ISTIO_META_DNS_CAPTURE");
        let dual_stack = flag("ISTIO_DUAL_STACK");
        let invalid_drop = flag("INVALID_DROP");

        Ok(Redirect {
            mode,
            traffic: Traffic {
                include_outbound_ranges,
                exclude_outbound_ranges,
                include_inbound_ports,
                exclude_inbound_ports,
                include_outbound_ports,
                exclude_outbound_ports,
                exclude_interfaces,
                reroute_interfaces,
            },
            proxy_uid,
            proxy_gid,
            dns_capture,
            dual_stack,
            invalid_drop,
            warnings,
        })
    }
}

/// The proxy's uid or gid for the owner match: unset or 0 means Istio's
/// default. Out of Kubernetes' range (0 to 2^31-1) is an error, never a rule
/// like `--uid-owner -5`: the API server refuses such pods, so only a
/// hand-written manifest or a non-conforming server produces one.
fn proxy_id(field: &'static str, value: Option<i64>) -> Result<u32, RedirectError> {
    match value {
        None | Some(0) => Ok(DEFAULT_PROXY_ID),
        Some(id) => u32::try_from(id)
            .ok()
            .filter(|&id| i64::from(id) <= MAX_ID)
            .ok_or_else(|| RedirectError {
                source_kind: "istio-proxy container",
                key: field,
                value: id.to_string(),
                reason: format!("must be between 0 and {MAX_ID}"),
            }),
    }
}

/// Annotation lookups that turn parse failures into [`RedirectError`]s.
struct Annotations<'a>(&'a PodInfo);

impl Annotations<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.annotations.get(key).map(String::as_str)
    }

    fn error(&self, key: &'static str, value: &str, reason: impl Into<String>) -> RedirectError {
        RedirectError {
            source_kind: "annotation",
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn cidrs(&self, key: &'static str, value: &str) -> Result<Vec<Prefix>, RedirectError> {
        parse_cidr_list(value).map_err(|r| {
            self.error(
                key,
                value,
                format!("{r}; expected comma-separated CIDRs like 10.0.0.0/8,fd00::/8"),
            )
        })
    }

    fn ports(&self, key: &'static str, value: &str) -> Result<Vec<u16>, RedirectError> {
        parse_port_list(value).map_err(|r| {
            let hint = if value.split(',').any(|p| p.trim() == "*") {
                "`*` is only valid alone in includeInboundPorts; list ports explicitly".to_string()
            } else {
                "expected comma-separated ports like 80,443".to_string()
            };
            self.error(key, value, format!("{r}; {hint}"))
        })
    }

    /// A port list where `*` would reach the rules as `--dport *`.
    fn explicit_ports(&self, key: &'static str, default: Option<u16>) -> Result<Vec<u16>, RedirectError> {
        match self.get(key) {
            None => Ok(default.into_iter().collect()),
            Some(v) if v.trim() == "*" => Err(self.error(
                key,
                v,
                "`*` is not a port (iptables would reject `--dport *`); list ports explicitly like 80,443",
            )),
            Some(v) => self.ports(key, v),
        }
    }

    fn interfaces(&self, key: &'static str) -> Result<Vec<String>, RedirectError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(v) => parse_interface_list(v).map_err(|r| self.error(key, v, r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::ProxyContainer;

    fn pod(annotations: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            proxy: Some(ProxyContainer::default()),
            ..Default::default()
        }
    }

    fn redirect(annotations: &[(&str, &str)]) -> Redirect {
        Redirect::from_pod(&pod(annotations)).unwrap()
    }

    fn error(annotations: &[(&str, &str)]) -> RedirectError {
        Redirect::from_pod(&pod(annotations)).unwrap_err()
    }

    #[test]
    fn defaults_match_istio() {
        let r = redirect(&[]);
        assert_eq!(r.mode, InterceptionMode::Redirect);
        assert_eq!(r.traffic.include_outbound_ranges, OutboundRanges::All);
        assert!(r.traffic.exclude_outbound_ranges.is_empty());
        assert_eq!(r.traffic.include_inbound_ports, InboundPorts::All);
        assert_eq!(r.traffic.exclude_inbound_ports, vec![15020, 15021, 15090]);
        assert!(r.traffic.include_outbound_ports.is_empty());
        assert_eq!(r.traffic.exclude_outbound_ports, vec![15020]);
        assert_eq!((r.proxy_uid, r.proxy_gid), (1337, 1337));
        assert!(!r.dns_capture && !r.dual_stack && !r.invalid_drop);
    }

    #[test]
    fn excluded_inbound_ports_merge_with_the_agent_ports() {
        let cases: &[(&str, &[u16])] = &[
            ("3306", &[3306, 15020, 15021, 15090]),
            ("", &[15020, 15021, 15090]),
            ("15021, 8080", &[15021, 8080, 15020, 15090]),
            ("80,80", &[80, 15020, 15021, 15090]),
        ];
        for (value, expected) in cases {
            let r = redirect(&[(keys::EXCLUDE_INBOUND_PORTS, value)]);
            assert_eq!(
                &r.traffic.exclude_inbound_ports, expected,
                "excludeInboundPorts={value:?}"
            );
        }
    }

    #[test]
    fn excluded_outbound_ports_replace_the_default() {
        assert_eq!(
            redirect(&[(keys::EXCLUDE_OUTBOUND_PORTS, "")])
                .traffic
                .exclude_outbound_ports,
            Vec::<u16>::new()
        );
        assert_eq!(
            redirect(&[(keys::EXCLUDE_OUTBOUND_PORTS, "5555,6666")])
                .traffic
                .exclude_outbound_ports,
            vec![5555, 6666]
        );
    }

    #[test]
    fn empty_include_inbound_means_no_inbound_capture() {
        assert_eq!(
            redirect(&[(keys::INCLUDE_INBOUND_PORTS, "")])
                .traffic
                .include_inbound_ports,
            InboundPorts::Only(vec![])
        );
        assert_eq!(
            redirect(&[(keys::INCLUDE_INBOUND_PORTS, " * ")])
                .traffic
                .include_inbound_ports,
            InboundPorts::All
        );
    }

    #[test]
    fn interception_mode_is_case_sensitive() {
        assert_eq!(
            redirect(&[(keys::INTERCEPTION_MODE, "TPROXY")]).mode,
            InterceptionMode::Tproxy
        );
        for bad in ["tproxy", "", "NONE", "redirect"] {
            let e = error(&[(keys::INTERCEPTION_MODE, bad)]);
            assert_eq!(e.key, keys::INTERCEPTION_MODE);
            assert!(e.to_string().contains("REDIRECT or TPROXY"), "{e}");
        }
    }

    #[test]
    fn invalid_values_name_the_annotation_value_and_what_is_allowed() {
        let cases = [
            (keys::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,", "CIDR"),
            (keys::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.1", "CIDR"),
            (keys::EXCLUDE_OUTBOUND_IP_RANGES, "*", "list the CIDRs"),
            (keys::EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8, 11.0.0.0/8", "CIDR"),
            (keys::INCLUDE_INBOUND_PORTS, "80,http", "ports like"),
            (keys::INCLUDE_INBOUND_PORTS, "80,*", "only valid alone"),
            (keys::EXCLUDE_INBOUND_PORTS, "*", "cannot exclude every port"),
            (keys::EXCLUDE_INBOUND_PORTS, "70000", "0-65535"),
            (keys::INCLUDE_OUTBOUND_PORTS, "*", "not a port"),
            (keys::EXCLUDE_OUTBOUND_PORTS, "*", "not a port"),
            (keys::EXCLUDE_OUTBOUND_PORTS, "443,", "empty element"),
            (keys::EXCLUDE_INTERFACES, "eth0,", "empty interface name"),
            (keys::REROUTE_VIRTUAL_INTERFACES, "net-1;x", "invalid characters"),
            (keys::KUBEVIRT_INTERFACES, "a-very-long-interface", "too long"),
        ];
        for (key, value, hint) in cases {
            let e = error(&[(key, value)]);
            let text = e.to_string();
            assert_eq!(e.key, key);
            assert!(
                text.contains(key) && text.contains(&format!("{value:?}")) && text.contains(hint),
                "{text}"
            );
        }
    }

    #[test]
    fn a_star_exclusion_is_harmless_when_inbound_is_a_list() {
        let r = redirect(&[
            (keys::INCLUDE_INBOUND_PORTS, "8080"),
            (keys::EXCLUDE_INBOUND_PORTS, "*"),
        ]);
        assert_eq!(r.traffic.include_inbound_ports, InboundPorts::Only(vec![8080]));
    }

    #[test]
    fn reroute_prefers_the_new_annotation() {
        let both = redirect(&[
            (keys::REROUTE_VIRTUAL_INTERFACES, "net1"),
            (keys::KUBEVIRT_INTERFACES, "old0"),
        ]);
        assert_eq!(both.traffic.reroute_interfaces, vec!["net1"]);
        let old = redirect(&[(keys::KUBEVIRT_INTERFACES, "old0, old1")]);
        assert_eq!(old.traffic.reroute_interfaces, vec!["old0", "old1"]);
        // An empty new annotation still wins over the deprecated one.
        let empty = redirect(&[
            (keys::REROUTE_VIRTUAL_INTERFACES, ""),
            (keys::KUBEVIRT_INTERFACES, "old0"),
        ]);
        assert!(empty.traffic.reroute_interfaces.is_empty());
    }

    #[test]
    fn uid_and_gid_come_from_the_proxy_security_context() {
        let mut p = pod(&[]);
        let proxy = p.proxy.as_mut().unwrap();
        proxy.run_as_user = Some(1000670000);
        proxy.run_as_group = Some(0);
        let r = Redirect::from_pod(&p).unwrap();
        assert_eq!((r.proxy_uid, r.proxy_gid), (1000670000, 1337));
    }

    #[test]
    fn uids_and_gids_outside_kubernetes_range_are_errors_naming_the_field() {
        let cases = [
            (Some(-5), None, "securityContext.runAsUser: invalid value \"-5\""),
            (None, Some(-1), "securityContext.runAsGroup: invalid value \"-1\""),
            (Some(1 << 31), None, "runAsUser: invalid value \"2147483648\""),
            (Some(1 << 32), None, "runAsUser: invalid value \"4294967296\""),
            (
                None,
                Some(i64::MIN),
                "runAsGroup: invalid value \"-9223372036854775808\"",
            ),
        ];
        for (uid, gid, expected) in cases {
            let mut p = pod(&[]);
            let proxy = p.proxy.as_mut().unwrap();
            (proxy.run_as_user, proxy.run_as_group) = (uid, gid);
            let e = Redirect::from_pod(&p).unwrap_err().to_string();
            assert!(
                e.starts_with("istio-proxy container securityContext.") && e.contains(expected),
                "{e}"
            );
            assert!(e.ends_with("must be between 0 and 2147483647"), "{e}");
        }
        let mut p = pod(&[]);
        let proxy = p.proxy.as_mut().unwrap();
        (proxy.run_as_user, proxy.run_as_group) = (Some(MAX_ID), Some(1));
        let r = Redirect::from_pod(&p).unwrap();
        assert_eq!((r.proxy_uid, r.proxy_gid), (2147483647, 1));
    }

    #[test]
    fn env_switches_parse_as_go_bools_and_warn_otherwise() {
        let mut p = pod(&[]);
        let env = &mut p.proxy.as_mut().unwrap().env;
        env.insert("ISTIO_META_DNS_CAPTURE".into(), "True".into());
        env.insert("ISTIO_DUAL_STACK".into(), "1".into());
        env.insert("INVALID_DROP".into(), "yes".into());
        let r = Redirect::from_pod(&p).unwrap();
        assert!(r.dns_capture && r.dual_stack && !r.invalid_drop);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("INVALID_DROP"), "{:?}", r.warnings);
    }
}
