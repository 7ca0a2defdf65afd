//! rtnetlink helpers for the pod netns (the IPv6 detection input, the TPROXY routes).
//!
//! A [`Netlink`] owns a current-thread tokio runtime and a netlink socket.
//! The socket binds to the network namespace of the thread that creates it,
//! so create a `Netlink` only *after* entering the pod netns (inside
//! [`super::run_in_netns`]) and drop it on that thread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteScope, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

/// Firewall mark that TPROXY'd inbound packets carry (`--tproxy-mark 1337`).
pub const TPROXY_MARK: u32 = 1337;
/// Routing table that delivers marked packets locally.
pub const TPROXY_TABLE: u32 = 133;
/// The IPv6 inbound-passthrough source address added on `lo`.
pub const PASSTHROUGH_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// A netlink operation that failed; names the operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The tokio runtime or the netlink socket could not be created.
    #[error("netlink setup failed: {0}")]
    Setup(#[source] std::io::Error),
    /// A request was refused by the kernel or the reply was malformed.
    #[error("{op} failed: {source}")]
    Request {
        /// What was being done, e.g. `add address ::6/128 on lo`.
        op: String,
        /// The rtnetlink error (carries the errno for kernel refusals).
        #[source]
        source: rtnetlink::Error,
    },
    /// The loopback interface does not exist in this namespace.
    #[error("interface lo not found in the netns")]
    NoLoopback,
}

/// One interface address, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// Interface index.
    pub index: u32,
    /// The local address (`IFA_LOCAL` when present, else `IFA_ADDRESS`).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// What [`Netlink::ensure_tproxy_routing`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TproxyRouting {
    /// `fwmark 1337 lookup 133` rules added (one per family).
    pub rules_added: u8,
    /// Identical rules that already existed and were left alone.
    pub rules_present: u8,
    /// `local default dev lo table 133` routes added (existing ones count 0).
    pub routes_added: u8,
}

/// A netlink session bound to the calling thread's network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink socket in the current thread's netns.
    pub fn connect() -> Result<Self, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetlinkError::Setup)?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(handle)
        });
        Ok(Self {
            rt,
            handle: handle.map_err(NetlinkError::Setup)?,
        })
    }

    /// All interface addresses, in kernel dump order (IPv4 before IPv6).
    pub fn addresses(&self) -> Result<Vec<InterfaceAddress>, NetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .rt
            .block_on(self.handle.address().get().execute().try_collect())
            .map_err(|source| request("list interface addresses", source))?;
        Ok(msgs.iter().filter_map(interface_address).collect())
    }

    /// Adds `::6/128` on `lo` (the IPv6 inbound passthrough source).
    /// Returns false when it was already there (EEXIST is not an error).
    pub fn add_passthrough_v6(&self) -> Result<bool, NetlinkError> {
        let lo = self.loopback_index()?;
        let add = self.handle.address().add(lo, IpAddr::V6(PASSTHROUGH_V6), 128).execute();
        ignore_exists(self.rt.block_on(add)).map_err(|source| request("add address ::6/128 on lo", source))
    }

    /// Installs the TPROXY policy routing: `ip rule add fwmark 1337 lookup 133`
    /// and `ip route add local default dev lo table 133`, for IPv4 and, when
    /// `ipv6`, IPv6.
    ///
    /// Unlike Istio (which fails a re-run with EEXIST on the rule), an
    /// identical existing rule is treated as success, so programming the same
    /// netns twice works. A *different* rule the kernel considers a duplicate
    /// still fails. Existing routes are ignored, as in Istio.
    pub fn ensure_tproxy_routing(&self, ipv6: bool) -> Result<TproxyRouting, NetlinkError> {
        let lo = self.loopback_index()?;
        let mut out = TproxyRouting::default();
        let families: &[IpVersion] = if ipv6 {
            &[IpVersion::V4, IpVersion::V6]
        } else {
            &[IpVersion::V4]
        };
        for family in families {
            if self.ensure_mark_rule(family)? {
                out.rules_added += 1;
            } else {
                out.rules_present += 1;
            }
            if self.add_local_default_route(family, lo)? {
                out.routes_added += 1;
            }
        }
        Ok(out)
    }

    /// Returns true if a rule was added, false if an identical one existed.
    fn ensure_mark_rule(&self, family: &IpVersion) -> Result<bool, NetlinkError> {
        let name = family_name(family);
        let rules: Vec<RuleMessage> = self
            .rt
            .block_on(self.handle.rule().get(family.clone()).execute().try_collect())
            .map_err(|source| request(&format!("list {name} ip rules"), source))?;
        if rules.iter().any(is_tproxy_rule) {
            return Ok(false);
        }
        let base = self
            .handle
            .rule()
            .add()
            .fw_mark(TPROXY_MARK)
            .table_id(TPROXY_TABLE)
            .action(RuleAction::ToTable);
        let result = match family {
            IpVersion::V4 => self.rt.block_on(base.v4().execute()),
            IpVersion::V6 => self.rt.block_on(base.v6().execute()),
        };
        result.map_err(|source| {
            request(
                &format!("add {name} ip rule fwmark {TPROXY_MARK} lookup {TPROXY_TABLE}"),
                source,
            )
        })?;
        Ok(true)
    }

    fn add_local_default_route(&self, family: &IpVersion, lo: u32) -> Result<bool, NetlinkError> {
        let message = match family {
            IpVersion::V4 => local_default_route(
                lo,
                RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(Ipv4Addr::UNSPECIFIED, 0),
            ),
            IpVersion::V6 => local_default_route(
                lo,
                RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(Ipv6Addr::UNSPECIFIED, 0),
            ),
        };
        let result = self.rt.block_on(self.handle.route().add(message).execute());
        ignore_exists(result).map_err(|source| {
            request(
                &format!(
                    "add {} route local default dev lo table {TPROXY_TABLE}",
                    family_name(family)
                ),
                source,
            )
        })
    }

    fn loopback_index(&self) -> Result<u32, NetlinkError> {
        // A by-name GET is a single reply, not a dump, so it cannot be
        // interrupted the way Istio's link dump can (no retry needed).
        let links: Vec<_> = self
            .rt
            .block_on(
                self.handle
                    .link()
                    .get()
                    .match_name("lo".to_owned())
                    .execute()
                    .try_collect(),
            )
            .map_err(|source| request("look up interface lo", source))?;
        links.first().map(|l| l.header.index).ok_or(NetlinkError::NoLoopback)
    }
}

fn request(op: &str, source: rtnetlink::Error) -> NetlinkError {
    NetlinkError::Request {
        op: op.to_owned(),
        source,
    }
}

fn family_name(family: &IpVersion) -> &'static str {
    match family {
        IpVersion::V4 => "IPv4",
        IpVersion::V6 => "IPv6",
    }
}

/// `local default dev lo table 133`; `to_default` is the family's builder
/// with the default destination set (that setter is typed per family).
fn local_default_route<T>(lo: u32, to_default: RouteMessageBuilder<T>) -> RouteMessage {
    to_default
        .output_interface(lo)
        .table_id(TPROXY_TABLE)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .build()
}

/// Maps "already exists" to `Ok(false)` and success to `Ok(true)`.
fn ignore_exists(result: Result<(), rtnetlink::Error>) -> Result<bool, rtnetlink::Error> {
    match result {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::EEXIST => Ok(false),
        Err(e) => Err(e),
    }
}

fn interface_address(msg: &AddressMessage) -> Option<InterfaceAddress> {
    // Point-to-point links report the peer in IFA_ADDRESS; the local side is
    // IFA_LOCAL, so prefer it.
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if want_local => Some(*ip),
            AddressAttribute::Address(ip) if !want_local => Some(*ip),
            _ => None,
        })
    };
    let addr = pick(true).or_else(|| pick(false))?;
    Some(InterfaceAddress {
        index: msg.header.index,
        addr,
        prefix_len: msg.header.prefix_len,
    })
}

/// Whether `rule` is exactly `fwmark 1337 lookup 133` with no other selector.
fn is_tproxy_rule(rule: &RuleMessage) -> bool {
    let h = &rule.header;
    if h.action != RuleAction::ToTable
        || h.flags.contains(RuleFlags::Invert)
        || h.src_len != 0
        || h.dst_len != 0
        || h.tos != 0
        || !matches!(h.family, AddressFamily::Inet | AddressFamily::Inet6)
    {
        return false;
    }
    let mut table = u32::from(h.table);
    let mut mark = None;
    for attr in &rule.attributes {
        match attr {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) if *m != u32::MAX => return false,
            // The kernel reports "no suppression" as all-ones.
            RuleAttribute::SuppressPrefixLen(v) | RuleAttribute::SuppressIfGroup(v) if *v != u32::MAX => {
                return false;
            }
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Source(_)
            | RuleAttribute::Destination(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_) => return false,
            _ => {}
        }
    }
    table == TPROXY_TABLE && mark == Some(TPROXY_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(attrs: Vec<RuleAttribute>) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.action = RuleAction::ToTable;
        msg.header.table = 133;
        msg.attributes = attrs;
        msg
    }

    #[test]
    fn recognises_the_tproxy_rule_as_the_kernel_dumps_it() {
        let r = rule(vec![
            RuleAttribute::Table(133),
            RuleAttribute::SuppressPrefixLen(u32::MAX),
            RuleAttribute::Priority(32765),
            RuleAttribute::FwMark(1337),
            RuleAttribute::FwMask(u32::MAX),
        ]);
        assert!(is_tproxy_rule(&r));
    }

    #[test]
    fn other_rules_do_not_count() {
        assert!(!is_tproxy_rule(&rule(vec![RuleAttribute::FwMark(1338)])));
        assert!(!is_tproxy_rule(&rule(vec![
            RuleAttribute::FwMark(1337),
            RuleAttribute::FwMask(0xff)
        ])));
        assert!(!is_tproxy_rule(&rule(vec![
            RuleAttribute::FwMark(1337),
            RuleAttribute::Iifname("eth0".into())
        ])));
        let mut other_table = rule(vec![RuleAttribute::FwMark(1337)]);
        other_table.header.table = 254;
        assert!(!is_tproxy_rule(&other_table));
        let mut inverted = rule(vec![RuleAttribute::FwMark(1337)]);
        inverted.header.flags = RuleFlags::Invert;
        assert!(!is_tproxy_rule(&inverted));
        // The kernel's default rules (lookup local/main/default) have no mark.
        assert!(!is_tproxy_rule(&rule(vec![RuleAttribute::Table(133)])));
    }

    #[test]
    fn prefers_ifa_local_over_ifa_address() {
        let mut msg = AddressMessage::default();
        msg.header.index = 3;
        msg.header.prefix_len = 32;
        msg.attributes = vec![
            AddressAttribute::Address("10.0.0.9".parse().unwrap()),
            AddressAttribute::Local("10.0.0.1".parse().unwrap()),
        ];
        let a = interface_address(&msg).unwrap();
        assert_eq!(a.addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((a.index, a.prefix_len), (3, 32));
        msg.attributes.remove(1);
        assert_eq!(
            interface_address(&msg).unwrap().addr,
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        msg.attributes.clear();
        assert_eq!(interface_address(&msg), None);
    }
}
