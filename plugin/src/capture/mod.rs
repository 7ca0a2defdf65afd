//! The generator's configuration: everything the rule plan needs, combined
//! from a pod's [`Redirect`], the plugin process's environment ([`NodeEnv`])
//! and what was found in the pod's netns (whether it has IPv6).
//!
//! It is a superset of what a pod can express (DNS servers, uid/gid lists,
//! owner groups) so that the same generator reproduces every configuration of
//! Istio's rule builder, not only the ones the plugin produces.

use std::net::IpAddr;

use crate::redirect::values::Prefix;
use crate::redirect::{InterceptionMode, Redirect, Traffic};

/// Fixed ports and marks of Istio's sidecar data plane.
pub mod consts {
    pub const PROXY_PORT: u16 = 15001;
    pub const INBOUND_CAPTURE_PORT: u16 = 15006;
    pub const INBOUND_TUNNEL_PORT: u16 = 15008;
    pub const DNS_AGENT_PORT: u16 = 15053;
    pub const TPROXY_MARK: u32 = 1337;
    pub const OUTBOUND_MARK: u32 = 1338;
    pub const TPROXY_ROUTE_TABLE: u32 = 133;
    pub const PASSTHROUGH_V4: &str = "127.0.0.6/32";
    pub const PASSTHROUGH_V6: &str = "::6/128";
    pub const LOOPBACK_V6: &str = "::1/128";
}

/// Plugin-process environment that shapes rules on every node (inherited
/// from the runtime, not from the pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEnv {
    /// `ISTIO_OUTBOUND_OWNER_GROUPS` (default `*`).
    pub owner_groups_include: String,
    /// `ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE` (default "").
    pub owner_groups_exclude: String,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR` (default `127.0.0.1/32`).
    pub ipv4_loopback_cidr: String,
}

impl Default for NodeEnv {
    fn default() -> Self {
        NodeEnv {
            owner_groups_include: "*".into(),
            owner_groups_exclude: String::new(),
            ipv4_loopback_cidr: "127.0.0.1/32".into(),
        }
    }
}

impl NodeEnv {
    /// Reads the three variables from the process environment.
    pub fn from_env() -> NodeEnv {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `lookup`; unset keeps Istio's default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> NodeEnv {
        let d = NodeEnv::default();
        NodeEnv {
            owner_groups_include: lookup("ISTIO_OUTBOUND_OWNER_GROUPS").unwrap_or(d.owner_groups_include),
            owner_groups_exclude: lookup("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE").unwrap_or(d.owner_groups_exclude),
            ipv4_loopback_cidr: lookup("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR").unwrap_or(d.ipv4_loopback_cidr),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR {value:?} is invalid: {reason}; expected an IPv4 loopback CIDR like 127.0.0.1/32"
    )]
    LoopbackCidr { value: String, reason: String },
    #[error(
        "ISTIO_OUTBOUND_OWNER_GROUPS and ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE are both set ({include:?}, {exclude:?}); set only one"
    )]
    OwnerGroupsConflict { include: String, exclude: String },
}

/// Which outbound traffic is captured by the process's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Every group, except these (names or gids).
    AllExcept(Vec<String>),
    /// Only these groups.
    Only(Vec<String>),
}

/// The proxy's identity: whose traffic is the proxy's own, and which
/// processes' outbound traffic is captured at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// Proxy uids and gids, as the rule text spells them.
    pub uids: Vec<String>,
    pub gids: Vec<String>,
    pub owner_groups: OwnerGroups,
}

/// One owner match of the proxy, with its spelling in either backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// `--uid-owner` or `--gid-owner`.
    pub iptables: &'static str,
    /// `skuid` or `skgid`.
    pub nft: &'static str,
    pub id: &'a str,
    pub is_uid: bool,
}

impl ProxyIdentity {
    /// Every uid, then every gid: the order Istio emits owner rules in.
    pub fn owners(&self) -> impl Iterator<Item = Owner<'_>> {
        let kinds = [
            (&self.uids, "--uid-owner", "skuid", true),
            (&self.gids, "--gid-owner", "skgid", false),
        ];
        kinds.into_iter().flat_map(|(ids, iptables, nft, is_uid)| {
            ids.iter().map(move |id| Owner {
                iptables,
                nft,
                id,
                is_uid,
            })
        })
    }
}

/// DNS capture by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsCapture {
    /// Redirect DNS to the agent on 15053.
    pub redirect: bool,
    /// All DNS, not only the listed servers (always equal to `redirect` for pods).
    pub capture_all: bool,
    /// Nameservers whose traffic is captured when not capturing all DNS,
    /// spelled as they appear in the rules (`/32` or `/128` is appended).
    pub servers_v4: Vec<String>,
    pub servers_v6: Vec<String>,
}

impl DnsCapture {
    /// Whether any DNS rule is emitted: redirecting with nothing to capture is a no-op.
    pub fn is_active(&self) -> bool {
        self.redirect && (self.capture_all || !self.servers_v4.is_empty() || !self.servers_v6.is_empty())
    }
}

/// The complete input of the rule plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    pub mode: InterceptionMode,
    pub traffic: Traffic,
    pub proxy: ProxyIdentity,
    pub dns: DnsCapture,
    pub drop_invalid: bool,
    /// Also generate and apply IPv6 rules.
    pub enable_ipv6: bool,
    /// The IPv4 loopback CIDR, `L` in the reference.
    pub ipv4_loopback: Prefix,
}

impl CaptureConfig {
    /// The configuration the plugin programs for a pod.
    pub fn new(redirect: &Redirect, node: &NodeEnv, enable_ipv6: bool) -> Result<CaptureConfig, CaptureError> {
        let loopback = node.ipv4_loopback_cidr.as_str();
        let ipv4_loopback = loopback
            .parse::<Prefix>()
            .and_then(|p| match p.addr {
                IpAddr::V4(a) if a.is_loopback() => Ok(p),
                _ => Err("not an IPv4 loopback prefix".to_string()),
            })
            .map_err(|reason| CaptureError::LoopbackCidr {
                value: loopback.to_string(),
                reason,
            })?;
        Ok(CaptureConfig {
            mode: redirect.mode,
            traffic: redirect.traffic.clone(),
            proxy: ProxyIdentity {
                uids: vec![redirect.proxy_uid.to_string()],
                gids: vec![redirect.proxy_gid.to_string()],
                owner_groups: owner_groups(&node.owner_groups_include, &node.owner_groups_exclude)?,
            },
            dns: DnsCapture {
                redirect: redirect.dns_capture,
                capture_all: redirect.dns_capture,
                ..DnsCapture::default()
            },
            drop_invalid: redirect.invalid_drop,
            enable_ipv6,
            ipv4_loopback,
        })
    }

    /// The base configuration of Istio's rule-builder tests: no inbound ports,
    /// no outbound ranges, uid/gid 1337, IPv4 only. Used to reproduce those goldens.
    pub fn builder_default() -> CaptureConfig {
        CaptureConfig {
            mode: InterceptionMode::Redirect,
            traffic: Traffic::nothing(),
            proxy: ProxyIdentity {
                uids: vec!["1337".into()],
                gids: vec!["1337".into()],
                owner_groups: OwnerGroups::AllExcept(Vec::new()),
            },
            dns: DnsCapture::default(),
            drop_invalid: false,
            enable_ipv6: false,
            ipv4_loopback: Prefix {
                addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
                len: 32,
            },
        }
    }

    /// TPROXY needs a policy route (`fwmark 1337 lookup 133`) when inbound is captured.
    pub fn needs_tproxy_routes(&self) -> bool {
        self.mode == InterceptionMode::Tproxy && self.traffic.captures_inbound()
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

/// Istio treats the include list `*` as "all groups"; an exclude list only
/// applies then. Setting both is a configuration error in Istio's validator.
fn owner_groups(include: &str, exclude: &str) -> Result<OwnerGroups, CaptureError> {
    let include = include.trim();
    if include == "*" || include.is_empty() {
        Ok(OwnerGroups::AllExcept(split_list(exclude)))
    } else if !exclude.trim().is_empty() {
        Err(CaptureError::OwnerGroupsConflict {
            include: include.to_string(),
            exclude: exclude.to_string(),
        })
    } else {
        Ok(OwnerGroups::Only(split_list(include)))
    }
}
