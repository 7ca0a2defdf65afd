//! Istio's rule-emission algorithm (docs/plugin.md#rule-emission, docs/plugin.md#dns-capture,
//! docs/plugin.md#nftables), producing both spellings of every rule at its call site. Order is
//! significant: it is the order of the restore file and of the nft
//! transaction, including inserts.

use super::{Chain, Family, Position, Rule, Table};
use crate::capture::consts::*;
use crate::capture::{CaptureConfig, Owner, OwnerGroups};
use crate::redirect::{InboundPorts, InterceptionMode, OutboundRanges, Prefix};

use Chain::*;
use Table::*;

/// The address-family literals a versioned rule is written with.
struct Fam<'a> {
    /// `ip` or `ip6`, the nftables address-match keyword.
    ip: &'static str,
    /// The address literal of this family.
    addr: &'a str,
}

/// Collects rules; IPv6 rules are dropped unless IPv6 is enabled.
struct Builder {
    rules: Vec<Rule>,
    enable_ipv6: bool,
}

impl Builder {
    /// Records one rule; `nft` is `None` where the nft table needs no rule
    /// of its own (one inet rule serves both families).
    fn push(
        &mut self,
        table: Table,
        chain: Chain,
        position: Position,
        family: Family,
        ipt: impl Into<String>,
        nft: Option<String>,
    ) {
        if family == Family::V6 && !self.enable_ipv6 {
            return;
        }
        self.rules.push(Rule {
            table,
            chain,
            position,
            family,
            iptables: Some(ipt.into()),
            nft,
        });
    }

    /// Appends a rule for both families.
    fn add(&mut self, table: Table, chain: Chain, ipt: impl Into<String>, nft: impl Into<String>) {
        self.add_only(Family::Both, table, chain, ipt, nft);
    }

    /// Appends a rule for one family.
    fn add_only(&mut self, family: Family, table: Table, chain: Chain, ipt: impl Into<String>, nft: impl Into<String>) {
        self.push(table, chain, Position::Append, family, ipt, Some(nft.into()));
    }

    fn insert(
        &mut self,
        family: Family,
        table: Table,
        chain: Chain,
        at: u32,
        ipt: impl Into<String>,
        nft: impl Into<String>,
    ) {
        self.push(table, chain, Position::Insert(at), family, ipt, Some(nft.into()));
    }

    /// A rule written once per family with that family's literal: the IPv4
    /// rule, then the IPv6 one.
    fn versioned(
        &mut self,
        table: Table,
        chain: Chain,
        position: Position,
        v4: &str,
        v6: &str,
        rule: impl Fn(&Fam) -> (String, String),
    ) {
        for (family, fam) in [
            (Family::V4, Fam { ip: "ip", addr: v4 }),
            (Family::V6, Fam { ip: "ip6", addr: v6 }),
        ] {
            let (ipt, nft) = rule(&fam);
            self.push(table, chain, position, family, ipt, Some(nft));
        }
    }
}

/// Outbound capture split by family, as Istio's builder sees it.
struct Ranges {
    wildcard: bool,
    v4: Vec<Prefix>,
    v6: Vec<Prefix>,
}

impl Ranges {
    fn split(prefixes: &[Prefix]) -> Ranges {
        Ranges {
            wildcard: false,
            v4: prefixes.iter().filter(|p| p.is_v4()).copied().collect(),
            v6: prefixes.iter().filter(|p| !p.is_v4()).copied().collect(),
        }
    }

    fn has_loopback(&self) -> bool {
        self.v4.iter().chain(&self.v6).any(Prefix::is_loopback)
    }
}

/// Computes every rule for `cfg`, in Istio's emission order.
pub fn plan(cfg: &CaptureConfig) -> Vec<Rule> {
    let mut b = Builder {
        rules: Vec::new(),
        enable_ipv6: cfg.enable_ipv6,
    };
    let loopback = cfg.ipv4_loopback.to_string();
    let l4 = loopback.as_str();
    let tproxy = cfg.mode == InterceptionMode::Tproxy;

    let traffic = &cfg.traffic;
    let exclude = Ranges::split(&traffic.exclude_outbound_ranges);
    let include = match &traffic.include_outbound_ranges {
        OutboundRanges::All => Ranges {
            wildcard: true,
            v4: Vec::new(),
            v6: Vec::new(),
        },
        OutboundRanges::Only(list) => Ranges::split(list),
    };
    let redirect_dns = cfg.dns.is_active();

    // Interfaces whose traffic bypasses the proxy entirely.
    let exclude_tables: &[Table] = if tproxy { &[Nat, Mangle] } else { &[Nat] };
    for &table in exclude_tables {
        for x in &traffic.exclude_interfaces {
            b.add(
                table,
                Prerouting,
                format!("-i {x} -j RETURN"),
                format!("iifname {x} counter return"),
            );
            b.add(
                table,
                Output,
                format!("-o {x} -j RETURN"),
                format!("oifname {x} counter return"),
            );
        }
    }
    for x in &traffic.reroute_interfaces {
        b.insert(
            Family::Both,
            Nat,
            Prerouting,
            1,
            format!("-i {x} -j RETURN"),
            format!("iifname {x} counter return"),
        );
    }

    if cfg.drop_invalid {
        // nft matches TCP only, as Istio's nft builder does.
        b.add(
            Mangle,
            Prerouting,
            "-m conntrack --ctstate INVALID -j ISTIO_DROP",
            "meta l4proto tcp ct state invalid counter jump istio-drop",
        );
        b.add(Mangle, IstioDrop, "-j DROP", "counter drop");
    }

    b.add(
        Nat,
        IstioInbound,
        format!("-p tcp --dport {INBOUND_TUNNEL_PORT} -j RETURN"),
        format!("meta l4proto tcp tcp dport {INBOUND_TUNNEL_PORT} counter return"),
    );
    b.add(
        Nat,
        IstioRedirect,
        format!("-p tcp -j REDIRECT --to-ports {PROXY_PORT}"),
        format!("meta l4proto tcp counter redirect to :{PROXY_PORT}"),
    );
    b.add(
        Nat,
        IstioInRedirect,
        format!("-p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}"),
        format!("meta l4proto tcp counter redirect to :{INBOUND_CAPTURE_PORT}"),
    );

    inbound(&mut b, cfg, l4);

    b.add(Nat, Output, "-j ISTIO_OUTPUT", "counter jump istio-output");
    for p in &traffic.exclude_outbound_ports {
        b.add(
            Nat,
            IstioOutput,
            format!("-p tcp --dport {p} -j RETURN"),
            format!("tcp dport {p} counter return"),
        );
        b.add(
            Nat,
            IstioOutput,
            format!("-p udp --dport {p} -j RETURN"),
            format!("udp dport {p} counter return"),
        );
    }
    b.versioned(
        Nat,
        IstioOutput,
        Position::Append,
        PASSTHROUGH_V4,
        PASSTHROUGH_V6,
        |f| {
            (
                format!("-o lo -s {} -j RETURN", f.addr),
                format!("oifname lo {} saddr {} counter return", f.ip, f.addr),
            )
        },
    );

    // The proxy's own traffic: loopback self-calls go to inbound capture,
    // everything else it sends leaves uncaptured.
    for Owner {
        iptables,
        nft,
        id,
        is_uid,
    } in cfg.proxy.owners()
    {
        // Istio never uses the DNS form of the self-call rule for gids.
        let dns_form = redirect_dns && is_uid;
        b.versioned(Nat, IstioOutput, Position::Append, l4, LOOPBACK_V6, |f| {
            let (ipt_ports, nft_ports) = if dns_form {
                (
                    format!("-m multiport ! --dports 53,{INBOUND_TUNNEL_PORT}"),
                    format!("tcp dport != {{ 53, {INBOUND_TUNNEL_PORT} }}"),
                )
            } else {
                (
                    format!("! --dport {INBOUND_TUNNEL_PORT}"),
                    format!("tcp dport != {INBOUND_TUNNEL_PORT}"),
                )
            };
            (
                format!(
                    "-o lo ! -d {} -p tcp {ipt_ports} -m owner {iptables} {id} -j ISTIO_IN_REDIRECT",
                    f.addr
                ),
                format!(
                    "oifname lo meta l4proto tcp {} daddr != {} {nft_ports} {nft} {id} counter jump istio-in-redirect",
                    f.ip, f.addr
                ),
            )
        });
        if !include.has_loopback() {
            if redirect_dns {
                b.add(
                    Nat,
                    IstioOutput,
                    format!("-o lo -p tcp ! --dport 53 -m owner ! {iptables} {id} -j RETURN"),
                    format!("oifname lo meta l4proto tcp tcp dport != 53 {nft} != {id} counter return"),
                );
            } else {
                b.add(
                    Nat,
                    IstioOutput,
                    format!("-o lo -m owner ! {iptables} {id} -j RETURN"),
                    format!("oifname lo {nft} != {id} counter return"),
                );
            }
        }
        b.add(
            Nat,
            IstioOutput,
            format!("-m owner {iptables} {id} -j RETURN"),
            format!("{nft} {id} counter return"),
        );
    }

    match &cfg.proxy.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for g in groups {
                b.add(
                    Nat,
                    IstioOutput,
                    format!("-m owner --gid-owner {g} -j RETURN"),
                    format!("skgid {g} counter return"),
                );
            }
        }
        OwnerGroups::Only(groups) => {
            let ipt: String = groups.iter().map(|g| format!("-m owner ! --gid-owner {g} ")).collect();
            let nft: String = groups.iter().map(|g| format!("skgid != {g} ")).collect();
            b.add(
                Nat,
                IstioOutput,
                format!("{ipt}-j RETURN"),
                format!("{nft}counter return"),
            );
        }
    }

    if redirect_dns {
        dns(&mut b, cfg);
    }

    b.versioned(Nat, IstioOutput, Position::Append, l4, LOOPBACK_V6, |f| {
        (
            format!("-d {} -j RETURN", f.addr),
            format!("{} daddr {} counter return", f.ip, f.addr),
        )
    });
    for (family, ip, list) in [(Family::V4, "ip", &exclude.v4), (Family::V6, "ip6", &exclude.v6)] {
        for c in list {
            b.add_only(
                family,
                Nat,
                IstioOutput,
                format!("-d {c} -j RETURN"),
                format!("{ip} daddr {c} counter return"),
            );
        }
    }
    for p in &traffic.include_outbound_ports {
        b.add(
            Nat,
            IstioOutput,
            format!("-p tcp --dport {p} -j ISTIO_REDIRECT"),
            format!("tcp dport {p} counter jump istio-redirect"),
        );
    }

    if include.wildcard {
        b.add(Nat, IstioOutput, "-j ISTIO_REDIRECT", "counter jump istio-redirect");
        for x in &traffic.reroute_interfaces {
            b.insert(
                Family::Both,
                Nat,
                Prerouting,
                1,
                format!("-i {x} -j ISTIO_REDIRECT"),
                format!("iifname {x} counter jump istio-redirect"),
            );
        }
    } else {
        for (family, ip, list) in [(Family::V4, "ip", &include.v4), (Family::V6, "ip6", &include.v6)] {
            for c in list {
                for x in &traffic.reroute_interfaces {
                    b.insert(
                        family,
                        Nat,
                        Prerouting,
                        1,
                        format!("-i {x} -d {c} -j ISTIO_REDIRECT"),
                        format!("iifname {x} {ip} daddr {c} counter jump istio-redirect"),
                    );
                }
                b.add_only(
                    family,
                    Nat,
                    IstioOutput,
                    format!("-d {c} -j ISTIO_REDIRECT"),
                    format!("{ip} daddr {c} counter jump istio-redirect"),
                );
            }
        }
    }

    if tproxy {
        tproxy_tail(&mut b, cfg, l4);
    }
    b.rules
}

/// Inbound capture (docs/plugin.md#inbound-capture): nothing when the include list is empty.
fn inbound(b: &mut Builder, cfg: &CaptureConfig, l4: &str) {
    if !cfg.traffic.captures_inbound() {
        return;
    }
    let tproxy = cfg.mode == InterceptionMode::Tproxy;
    let table = if tproxy {
        b.add(
            Mangle,
            IstioDivert,
            format!("-j MARK --set-mark {TPROXY_MARK}"),
            format!("counter meta mark set {TPROXY_MARK}"),
        );
        b.add(Mangle, IstioDivert, "-j ACCEPT", "counter accept");
        b.versioned(Mangle, IstioTproxy, Position::Append, l4, LOOPBACK_V6, |f| {
            (
                format!("! -d {} -p tcp -j TPROXY --tproxy-mark {TPROXY_MARK}/0xffffffff --on-port {INBOUND_CAPTURE_PORT}", f.addr),
                format!("meta l4proto tcp {ip} daddr != {} tproxy {ip} to :{INBOUND_CAPTURE_PORT} meta mark set {TPROXY_MARK} counter accept", f.addr, ip = f.ip),
            )
        });
        Mangle
    } else {
        Nat
    };
    b.add(
        table,
        Prerouting,
        "-p tcp -j ISTIO_INBOUND",
        "meta l4proto tcp counter jump istio-inbound",
    );
    match &cfg.traffic.include_inbound_ports {
        InboundPorts::All => {
            for p in &cfg.traffic.exclude_inbound_ports {
                b.add(
                    table,
                    IstioInbound,
                    format!("-p tcp --dport {p} -j RETURN"),
                    format!("meta l4proto tcp tcp dport {p} counter return"),
                );
            }
            if tproxy {
                b.add(
                    Mangle,
                    IstioInbound,
                    "-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
                    "meta l4proto tcp ct state related,established counter jump istio-divert",
                );
                b.add(
                    Mangle,
                    IstioInbound,
                    "-p tcp -j ISTIO_TPROXY",
                    "meta l4proto tcp counter jump istio-tproxy",
                );
            } else {
                b.add(
                    Nat,
                    IstioInbound,
                    "-p tcp -j ISTIO_IN_REDIRECT",
                    "meta l4proto tcp counter jump istio-in-redirect",
                );
            }
        }
        InboundPorts::Only(ports) => {
            for p in ports {
                if tproxy {
                    b.add(
                        Mangle,
                        IstioInbound,
                        format!("-p tcp --dport {p} -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT"),
                        format!(
                            "meta l4proto tcp ct state related,established tcp dport {p} counter jump istio-divert"
                        ),
                    );
                    b.add(
                        Mangle,
                        IstioInbound,
                        format!("-p tcp --dport {p} -j ISTIO_TPROXY"),
                        format!("meta l4proto tcp tcp dport {p} counter jump istio-tproxy"),
                    );
                } else {
                    b.add(
                        Nat,
                        IstioInbound,
                        format!("-p tcp --dport {p} -j ISTIO_IN_REDIRECT"),
                        format!("meta l4proto tcp tcp dport {p} counter jump istio-in-redirect"),
                    );
                }
            }
        }
    }
}

/// DNS capture (docs/plugin.md#dns-capture): redirect to the agent on 15053, and conntrack zones
/// that keep the proxy's upstream queries apart from the app's.
fn dns(b: &mut Builder, cfg: &CaptureConfig) {
    let (v4, v6) = (&cfg.dns.servers_v4, &cfg.dns.servers_v6);
    let all = cfg.dns.capture_all;
    b.add(Raw, Output, "-j ISTIO_OUTPUT_DNS", "counter jump istio-output-dns");
    // iptables jumps per family that has servers; nft has one inet jump.
    let jump_family = match (all || !v4.is_empty(), all || !v6.is_empty()) {
        (true, true) => Some(Family::Both),
        (true, false) => Some(Family::V4),
        (false, true) => Some(Family::V6),
        (false, false) => None,
    };
    if let Some(family) = jump_family {
        b.add_only(
            family,
            Nat,
            IstioOutput,
            "-j ISTIO_OUTPUT_DNS",
            "counter jump istio-output-dns",
        );
    }

    if all {
        b.add(
            Nat,
            IstioOutputDns,
            format!("-p tcp --dport 53 -j REDIRECT --to-ports {DNS_AGENT_PORT}"),
            format!("meta l4proto tcp tcp dport 53 counter redirect to :{DNS_AGENT_PORT}"),
        );
        // Istio spells the UDP rule with the singular `--to-port`.
        b.add(
            Nat,
            IstioOutputDns,
            format!("-p udp --dport 53 -j REDIRECT --to-port {DNS_AGENT_PORT}"),
            format!("udp dport 53 counter redirect to :{DNS_AGENT_PORT}"),
        );
    } else {
        let servers = || {
            let v4 = v4.iter().map(|s| (Family::V4, "ip", format!("{s}/32")));
            v4.chain(v6.iter().map(|s| (Family::V6, "ip6", format!("{s}/128"))))
        };
        for (family, ip, s) in servers() {
            b.add_only(
                family,
                Nat,
                IstioOutputDns,
                format!("-p tcp --dport 53 -d {s} -j REDIRECT --to-ports {DNS_AGENT_PORT}"),
                format!("{ip} daddr {s} tcp dport 53 counter redirect to :{DNS_AGENT_PORT}"),
            );
        }
        for (family, ip, s) in servers() {
            b.add_only(
                family,
                Nat,
                IstioOutputDns,
                format!("-p udp --dport 53 -d {s} -j REDIRECT --to-port {DNS_AGENT_PORT}"),
                format!("{ip} daddr {s} udp dport 53 counter redirect to :{DNS_AGENT_PORT}"),
            );
        }
    }

    for Owner { iptables, nft, id, .. } in cfg.proxy.owners() {
        b.add(
            Raw,
            IstioOutputDns,
            format!("-p udp --dport 53 -m owner {iptables} {id} -j CT --zone 1"),
            format!("udp dport 53 meta {nft} {id} counter ct zone set 1"),
        );
        b.add(
            Raw,
            IstioOutputDns,
            format!("-p udp --sport {DNS_AGENT_PORT} -m owner {iptables} {id} -j CT --zone 2"),
            format!("udp sport {DNS_AGENT_PORT} meta {nft} {id} counter ct zone set 2"),
        );
    }

    if all {
        b.add(Raw, Prerouting, "-j ISTIO_INBOUND", "counter jump istio-inbound");
        b.add(
            Raw,
            IstioOutputDns,
            "-p udp --dport 53 -j CT --zone 2",
            "udp dport 53 counter ct zone set 2",
        );
        b.add(
            Raw,
            IstioInbound,
            "-p udp --sport 53 -j CT --zone 1",
            "udp sport 53 counter ct zone set 1",
        );
        return;
    }
    for (family, ip, bits, list) in [(Family::V4, "ip", 32, v4), (Family::V6, "ip6", 128, v6)] {
        if list.is_empty() {
            continue;
        }
        // nft has a single prerouting jump for both families.
        let nft_jump = (family == Family::V4 || v4.is_empty()).then(|| "counter jump istio-inbound".to_string());
        b.push(Raw, Prerouting, Position::Append, family, "-j ISTIO_INBOUND", nft_jump);
        for s in list {
            b.add_only(
                family,
                Raw,
                IstioOutputDns,
                format!("-p udp --dport 53 -d {s}/{bits} -j CT --zone 2"),
                format!("udp dport 53 {ip} daddr {s}/{bits} counter ct zone set 2"),
            );
            b.add_only(
                family,
                Raw,
                IstioInbound,
                format!("-p udp --sport 53 -s {s}/{bits} -j CT --zone 1"),
                format!("udp sport 53 {ip} saddr {s}/{bits} counter ct zone set 1"),
            );
        }
    }
}

/// TPROXY marks and the inbound exemptions for the proxy's own connections
/// (docs/plugin.md#tproxy-tail); emitted even when no inbound port is captured.
fn tproxy_tail(b: &mut Builder, cfg: &CaptureConfig, l4: &str) {
    b.add(
        Mangle,
        Prerouting,
        format!("-p tcp -m mark --mark {TPROXY_MARK} -j CONNMARK --save-mark"),
        format!("meta l4proto tcp mark {TPROXY_MARK} counter ct mark set mark"),
    );
    b.add(
        Mangle,
        Output,
        format!("-p tcp -o lo -m mark --mark {TPROXY_MARK} -j RETURN"),
        format!("oifname lo meta l4proto tcp mark {TPROXY_MARK} counter return"),
    );
    for Owner { iptables, nft, id, .. } in cfg.proxy.owners() {
        b.versioned(Mangle, Output, Position::Append, l4, LOOPBACK_V6, |f| {
            (
                format!(
                    "! -d {} -p tcp -o lo -m owner {iptables} {id} -j MARK --set-mark {OUTBOUND_MARK}",
                    f.addr
                ),
                format!(
                    "oifname lo meta l4proto tcp {} daddr != {} {nft} {id} counter meta mark set {OUTBOUND_MARK}",
                    f.ip, f.addr
                ),
            )
        });
    }
    b.add(
        Mangle,
        Output,
        format!("-p tcp -m connmark --mark {TPROXY_MARK} -j CONNMARK --restore-mark"),
        format!("meta l4proto tcp ct mark {TPROXY_MARK} counter meta mark set ct mark"),
    );
    b.insert(
        Family::Both,
        Mangle,
        IstioInbound,
        1,
        format!("-p tcp -m mark --mark {TPROXY_MARK} -j RETURN"),
        format!("meta l4proto tcp mark {TPROXY_MARK} counter return"),
    );
    b.versioned(
        Mangle,
        IstioInbound,
        Position::Insert(2),
        PASSTHROUGH_V4,
        PASSTHROUGH_V6,
        |f| {
            (
                format!("-p tcp -s {} -i lo -j RETURN", f.addr),
                format!("iifname lo meta l4proto tcp {} saddr {} counter return", f.ip, f.addr),
            )
        },
    );
    b.insert(
        Family::Both,
        Mangle,
        IstioInbound,
        3,
        format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN"),
        format!("iifname lo meta l4proto tcp mark != {OUTBOUND_MARK} counter return"),
    );
}
