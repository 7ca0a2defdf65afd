//! Real-packet tests: program a pod netns, then send real TCP connections and
//! UDP datagrams and check, one by one, where each one landed.
//!
//! Each case (an annotation/env set and its probes) runs against three
//! engines: iptables-legacy (forced by pre-seeding a harmless legacy rule, as
//! Istio uses legacy only when it already has rules), iptables-nft and native
//! nftables. See `support::net` for the topology and the servers.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use istio_cni::capture::NodeEnv;
use istio_cni::iptables::apply::Variant;
use istio_cni::program::{Applied, Backend, Payload, Programmed, program};
use rstest::rstest;
use support::net::{
    Client, FAR4, FAR6, Landed, OTHER4, PEER4, PEER6, POD4, POD6, Proto, Role, Stack, Topology, probe, send_invalid_tcp,
};
use support::{NETNS, PodSpec, gate};

/// Which rule engine programs the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    IptablesLegacy,
    IptablesNft,
    Nftables,
}

/// Where a probe must land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The proxy's outbound listener, with SO_ORIGINAL_DST = destination.
    Outbound,
    /// The proxy's inbound listener, with the original destination.
    Inbound,
    /// TPROXY inbound: additionally the accepted socket's own address *is*
    /// the destination (no NAT).
    InboundTransparent,
    /// The DNS agent listener (TCP: with SO_ORIGINAL_DST = destination).
    Dns,
    /// The app's own listener in the pod, reached directly.
    App,
    /// The peer's listener, reached directly.
    Peer,
}

struct Probe {
    what: &'static str,
    from: Client,
    proto: Proto,
    dst: SocketAddr,
    expect: Expect,
    /// Where it lands with the native nftables engine, when that differs.
    nft: Option<Expect>,
}

impl Probe {
    /// Overrides the expectation for the native nftables engine.
    fn nft(mut self, expect: Expect) -> Self {
        self.nft = Some(expect);
        self
    }

    fn expect_for(&self, engine: Engine) -> Expect {
        match (engine, self.nft) {
            (Engine::Nftables, Some(e)) => e,
            _ => self.expect,
        }
    }
}

struct Case {
    name: &'static str,
    pod: PodSpec,
    stack: Stack,
    /// The proxy uid/gid the pod runs with (owner of the fake DNS agent).
    proxy: (u32, u32),
    probes: Vec<Probe>,
}

const APP: Client = Client::Pod {
    uid: 1000,
    gid: 1000,
    src: None,
};
const PROXY: Client = Client::Pod {
    uid: 1337,
    gid: 1337,
    src: None,
};
const ROOT: Client = Client::Pod {
    uid: 0,
    gid: 0,
    src: None,
};
const PEER: Client = Client::Peer;
const PASSTHROUGH4: Client = Client::Pod {
    uid: 1337,
    gid: 1337,
    src: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))),
};
const PASSTHROUGH6: Client = Client::Pod {
    uid: 1337,
    gid: 1337,
    src: Some(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6))),
};

fn tcp(what: &'static str, from: Client, dst: impl Into<IpAddr>, port: u16, expect: Expect) -> Probe {
    Probe {
        what,
        from,
        proto: Proto::Tcp,
        dst: SocketAddr::new(dst.into(), port),
        expect,
        nft: None,
    }
}

fn udp(what: &'static str, from: Client, dst: impl Into<IpAddr>, port: u16, expect: Expect) -> Probe {
    Probe {
        proto: Proto::Udp,
        ..tcp(what, from, dst, port, expect)
    }
}

fn case(name: &'static str, pod: PodSpec, probes: Vec<Probe>) -> Case {
    Case {
        name,
        pod,
        stack: Stack::V4,
        proxy: (1337, 1337),
        probes,
    }
}

use Expect::*;

fn default_pod() -> Case {
    case(
        "default",
        PodSpec::default(),
        vec![
            tcp("app outbound is captured", APP, FAR4, 80, Outbound),
            tcp("app outbound to another range is captured", APP, OTHER4, 443, Outbound),
            tcp("app outbound to the gateway is captured", APP, PEER4, 8080, Outbound),
            tcp("root is not exempt", ROOT, FAR4, 80, Outbound),
            tcp("outbound 15020 is excluded by default", APP, FAR4, 15020, Peer),
            tcp("proxy uid bypasses capture", PROXY, FAR4, 80, Peer),
            tcp("127.0.0.6 passthrough reaches the app", PASSTHROUGH4, POD4, 8080, App),
            tcp("proxy to own pod IP is inbound", PROXY, POD4, 8080, Inbound),
            tcp("app to own pod IP stays local", APP, POD4, 8080, App),
            tcp("app to localhost stays local", APP, Ipv4Addr::LOCALHOST, 8080, App),
            tcp("inbound 8080 is captured", PEER, POD4, 8080, Inbound),
            tcp("inbound 3306 is captured", PEER, POD4, 3306, Inbound),
            tcp("inbound 15020 is excluded", PEER, POD4, 15020, App),
            tcp("inbound 15021 is excluded", PEER, POD4, 15021, App),
            tcp("inbound 15090 is excluded", PEER, POD4, 15090, App),
            udp("udp dns is not captured without DNS capture", APP, FAR4, 53, Peer),
            tcp("tcp 53 is ordinary outbound", APP, FAR4, 53, Outbound),
        ],
    )
}

fn include_outbound_ranges() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/includeOutboundIPRanges", "10.249.0.0/16");
    case(
        "includeOutboundIPRanges",
        pod,
        vec![
            tcp("included range is captured", APP, FAR4, 80, Outbound),
            tcp("other range is not", APP, OTHER4, 80, Peer),
            tcp("gateway range is not", APP, PEER4, 80, Peer),
            tcp("inbound unaffected", PEER, POD4, 8080, Inbound),
        ],
    )
}

fn exclude_outbound_ranges() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.249.0.0/16");
    case(
        "excludeOutboundIPRanges",
        pod,
        vec![
            tcp("excluded range bypasses", APP, FAR4, 80, Peer),
            tcp("other range is captured", APP, OTHER4, 80, Outbound),
            tcp("gateway is captured", APP, PEER4, 80, Outbound),
        ],
    )
}

fn include_outbound_ports() -> Case {
    let pod = PodSpec::default()
        .annotation("traffic.sidecar.istio.io/includeOutboundIPRanges", "")
        .annotation("traffic.sidecar.istio.io/includeOutboundPorts", "9090");
    case(
        "includeOutboundPorts",
        pod,
        vec![
            tcp("included port is captured", APP, FAR4, 9090, Outbound),
            tcp(
                "included port to another range is captured",
                APP,
                OTHER4,
                9090,
                Outbound,
            ),
            tcp("other port is not", APP, FAR4, 80, Peer),
        ],
    )
}

fn exclude_outbound_ports() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/excludeOutboundPorts", "3306,5432");
    case(
        "excludeOutboundPorts",
        pod,
        vec![
            tcp("3306 bypasses", APP, FAR4, 3306, Peer),
            tcp("5432 bypasses", APP, FAR4, 5432, Peer),
            tcp("80 is captured", APP, FAR4, 80, Outbound),
            tcp(
                "15020 is captured once the default is replaced",
                APP,
                FAR4,
                15020,
                Outbound,
            ),
        ],
    )
}

fn include_inbound_ports() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/includeInboundPorts", "8080");
    case(
        "includeInboundPorts",
        pod,
        vec![
            tcp("included port is captured", PEER, POD4, 8080, Inbound),
            tcp("other port reaches the app", PEER, POD4, 9090, App),
            tcp("another port reaches the app", PEER, POD4, 3306, App),
            tcp("outbound unaffected", APP, FAR4, 80, Outbound),
        ],
    )
}

fn exclude_inbound_ports() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/excludeInboundPorts", "9090");
    case(
        "excludeInboundPorts",
        pod,
        vec![
            tcp("excluded port reaches the app", PEER, POD4, 9090, App),
            tcp("default exclusions are kept", PEER, POD4, 15021, App),
            tcp("8080 is captured", PEER, POD4, 8080, Inbound),
            tcp("3306 is captured", PEER, POD4, 3306, Inbound),
        ],
    )
}

fn no_inbound_capture() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/includeInboundPorts", "");
    case(
        "includeInboundPorts empty",
        pod,
        vec![
            tcp("inbound reaches the app", PEER, POD4, 8080, App),
            tcp("outbound is still captured", APP, FAR4, 80, Outbound),
        ],
    )
}

fn tproxy() -> Case {
    let pod = PodSpec::default().annotation("sidecar.istio.io/interceptionMode", "TPROXY");
    case(
        "TPROXY",
        pod,
        vec![
            tcp("inbound 8080 is tproxied", PEER, POD4, 8080, InboundTransparent),
            tcp("inbound 9090 is tproxied", PEER, POD4, 9090, InboundTransparent),
            tcp("inbound 15021 is excluded", PEER, POD4, 15021, App),
            tcp("outbound is redirected", APP, FAR4, 80, Outbound),
            tcp("proxy bypasses", PROXY, FAR4, 80, Peer),
            tcp("127.0.0.6 passthrough reaches the app", PASSTHROUGH4, POD4, 8080, App),
            tcp("app to own pod IP stays local", APP, POD4, 8080, App),
        ],
    )
}

fn tproxy_include_inbound_ports() -> Case {
    let pod = PodSpec::default()
        .annotation("sidecar.istio.io/interceptionMode", "TPROXY")
        .annotation("traffic.sidecar.istio.io/includeInboundPorts", "8080");
    case(
        "TPROXY includeInboundPorts",
        pod,
        vec![
            tcp("included port is tproxied", PEER, POD4, 8080, InboundTransparent),
            tcp("other port reaches the app", PEER, POD4, 9090, App),
        ],
    )
}

fn dns_capture() -> Case {
    let pod = PodSpec::default().env("ISTIO_META_DNS_CAPTURE", "true");
    case(
        "DNS capture",
        pod,
        vec![
            udp("app udp dns goes to the agent", APP, FAR4, 53, Dns),
            udp("app udp dns to another server too", APP, OTHER4, 53, Dns),
            tcp("app tcp dns goes to the agent", APP, FAR4, 53, Dns),
            udp("proxy udp dns bypasses", PROXY, FAR4, 53, Peer),
            tcp("proxy tcp dns bypasses", PROXY, FAR4, 53, Peer),
            tcp("other outbound is the proxy's", APP, FAR4, 80, Outbound),
        ],
    )
}

/// A custom proxy uid/gid (OpenShift-style pods set their own). The ids
/// stay below 65536 so the case also runs in an unprivileged user namespace,
/// whose subordinate range is that size; the render snapshots cover
/// OpenShift's 1000670000 range.
const CUSTOM_UID: u32 = 40_001;
const CUSTOM_GID: u32 = 40_002;

fn custom_uid_gid() -> Case {
    let pod = PodSpec::default().run_as(CUSTOM_UID.into(), CUSTOM_GID.into());
    let proxy = Client::Pod {
        uid: CUSTOM_UID,
        gid: CUSTOM_GID,
        src: None,
    };
    let proxy_gid_only = Client::Pod {
        uid: 1000,
        gid: CUSTOM_GID,
        src: None,
    };
    Case {
        proxy: (CUSTOM_UID, CUSTOM_GID),
        ..case(
            "custom uid/gid",
            pod,
            vec![
                tcp("custom proxy uid bypasses", proxy, FAR4, 80, Peer),
                tcp("custom proxy gid bypasses", proxy_gid_only, FAR4, 80, Peer),
                tcp("1337 is an ordinary app now", PROXY, FAR4, 80, Outbound),
                tcp("app is captured", APP, FAR4, 80, Outbound),
                tcp("custom proxy to own pod IP is inbound", proxy, POD4, 8080, Inbound),
                tcp("inbound is captured", PEER, POD4, 8080, Inbound),
            ],
        )
    }
}

fn run_as_root_means_1337() -> Case {
    let pod = PodSpec::default().run_as(0, 0);
    case(
        "runAsUser 0",
        pod,
        vec![
            tcp("1337 bypasses", PROXY, FAR4, 80, Peer),
            tcp("root is captured", ROOT, FAR4, 80, Outbound),
        ],
    )
}

fn ipv6_pod() -> Case {
    Case {
        stack: Stack::V6,
        ..case(
            "IPv6 pod",
            PodSpec::default(),
            vec![
                tcp("app outbound is captured", APP, FAR6, 80, Outbound),
                tcp("app outbound to the gateway is captured", APP, PEER6, 8080, Outbound),
                tcp("outbound 15020 is excluded", APP, FAR6, 15020, Peer),
                tcp("proxy bypasses", PROXY, FAR6, 80, Peer),
                tcp("inbound is captured", PEER, POD6, 8080, Inbound),
                tcp("inbound 15021 is excluded", PEER, POD6, 15021, App),
                tcp("app to ::1 stays local", APP, Ipv6Addr::LOCALHOST, 8080, App),
                tcp("app to 127.0.0.1 stays local", APP, Ipv4Addr::LOCALHOST, 8080, App),
                tcp("::6 passthrough reaches the app", PASSTHROUGH6, POD6, 8080, App),
                tcp("proxy to own pod IP is inbound", PROXY, POD6, 8080, Inbound),
            ],
        )
    }
}

fn ipv6_dns_capture() -> Case {
    Case {
        stack: Stack::V6,
        ..case(
            "IPv6 DNS capture",
            PodSpec::default().env("ISTIO_META_DNS_CAPTURE", "true"),
            vec![
                udp("app udp dns goes to the agent", APP, FAR6, 53, Dns),
                tcp("app tcp dns goes to the agent", APP, FAR6, 53, Dns),
                udp("proxy udp dns bypasses", PROXY, FAR6, 53, Peer),
            ],
        )
    }
}

fn dual_stack_with_flag() -> Case {
    Case {
        stack: Stack::Dual,
        ..case(
            "dual stack, ISTIO_DUAL_STACK",
            PodSpec::default().env("ISTIO_DUAL_STACK", "true"),
            vec![
                tcp("v4 outbound is captured", APP, FAR4, 80, Outbound),
                tcp("v6 outbound is captured", APP, FAR6, 80, Outbound),
                tcp("v4 inbound is captured", PEER, POD4, 8080, Inbound),
                tcp("v6 inbound is captured", PEER, POD6, 8080, Inbound),
            ],
        )
    }
}

fn dual_stack_without_flag() -> Case {
    // The first usable address (IPv4) decides, so no IPv6 rules are
    // generated. With iptables that leaves IPv6 uncaptured. Istio's nftables
    // rules live in `inet` tables and the family-neutral ones (the outbound
    // wildcard jump, the inbound jump) match IPv6 too, so there IPv6 is
    // captured anyway, just without the IPv6-only exemptions.
    Case {
        stack: Stack::Dual,
        ..case(
            "dual stack, no flag",
            PodSpec::default(),
            vec![
                tcp("v4 outbound is captured", APP, FAR4, 80, Outbound),
                tcp("v6 outbound is not (iptables)", APP, FAR6, 80, Peer).nft(Outbound),
                tcp("v6 inbound is not (iptables)", PEER, POD6, 8080, App).nft(Inbound),
                tcp("v6 proxy traffic bypasses", PROXY, FAR6, 80, Peer),
            ],
        )
    }
}

fn exclude_interfaces() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/excludeInterfaces", "eth0");
    case(
        "excludeInterfaces",
        pod,
        vec![
            tcp("inbound on eth0 reaches the app", PEER, POD4, 8080, App),
            tcp("outbound via eth0 bypasses", APP, FAR4, 80, Peer),
            tcp("loopback unaffected", APP, Ipv4Addr::LOCALHOST, 8080, App),
        ],
    )
}

fn reroute_virtual_interfaces() -> Case {
    let pod = PodSpec::default().annotation("istio.io/reroute-virtual-interfaces", "eth0");
    case(
        "reroute-virtual-interfaces",
        pod,
        vec![
            tcp(
                "traffic entering eth0 goes to the outbound listener",
                PEER,
                POD4,
                8080,
                Outbound,
            ),
            tcp("even to inbound-excluded ports", PEER, POD4, 15021, Outbound),
            tcp("local outbound is still captured", APP, FAR4, 80, Outbound),
        ],
    )
}

fn kubevirt_interfaces() -> Case {
    let pod = PodSpec::default().annotation("traffic.sidecar.istio.io/kubevirtInterfaces", "eth0");
    case(
        "kubevirtInterfaces (deprecated)",
        pod,
        vec![tcp(
            "traffic entering eth0 goes to the outbound listener",
            PEER,
            POD4,
            8080,
            Outbound,
        )],
    )
}

fn invalid_drop() -> Case {
    let pod = PodSpec::default().env("INVALID_DROP", "true");
    case(
        "INVALID_DROP",
        pod,
        vec![
            tcp("outbound is captured", APP, FAR4, 80, Outbound),
            tcp("inbound is captured", PEER, POD4, 8080, Inbound),
            tcp("bypass still works", PROXY, FAR4, 80, Peer),
        ],
    )
}

#[rstest]
#[case::default_pod(default_pod())]
#[case::include_outbound_ranges(include_outbound_ranges())]
#[case::exclude_outbound_ranges(exclude_outbound_ranges())]
#[case::include_outbound_ports(include_outbound_ports())]
#[case::exclude_outbound_ports(exclude_outbound_ports())]
#[case::include_inbound_ports(include_inbound_ports())]
#[case::exclude_inbound_ports(exclude_inbound_ports())]
#[case::no_inbound_capture(no_inbound_capture())]
#[case::tproxy(tproxy())]
#[case::tproxy_include_inbound_ports(tproxy_include_inbound_ports())]
#[case::dns_capture(dns_capture())]
#[case::custom_uid_gid(custom_uid_gid())]
#[case::run_as_root_means_1337(run_as_root_means_1337())]
#[case::ipv6_pod(ipv6_pod())]
#[case::ipv6_dns_capture(ipv6_dns_capture())]
#[case::dual_stack_with_flag(dual_stack_with_flag())]
#[case::dual_stack_without_flag(dual_stack_without_flag())]
#[case::exclude_interfaces(exclude_interfaces())]
#[case::reroute_virtual_interfaces(reroute_virtual_interfaces())]
#[case::kubevirt_interfaces(kubevirt_interfaces())]
#[case::invalid_drop(invalid_drop())]
fn packets(
    #[case] case: Case,
    #[values(Engine::IptablesLegacy, Engine::IptablesNft, Engine::Nftables)] engine: Engine,
) {
    let label = format!("{} / {engine:?}", case.name);
    if !gate(&label, NETNS) {
        return;
    }
    let topo = Topology::new(case.stack);
    let programmed = program_pod(&topo, &case, engine, &label);
    let _servers = topo.start_servers(case.proxy);

    let failures: Vec<String> = case
        .probes
        .iter()
        .filter_map(|p| {
            let expect = p.expect_for(engine);
            let got = probe(&topo, p.from, p.proto, p.dst);
            check(p, expect, &got).err().map(|why| {
                format!(
                    "  {}: {:?} {:?} -> {}: expected {expect:?}, {why}",
                    p.what, p.from, p.proto, p.dst
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "[{label}] {} of {} probes failed:\n{}\n--- rules ---\n{}",
        failures.len(),
        case.probes.len(),
        failures.join("\n"),
        payload_text(&programmed)
    );
}

fn program_pod(topo: &Topology, case: &Case, engine: Engine, label: &str) -> Programmed {
    if engine == Engine::IptablesLegacy {
        for bin in ["iptables-legacy", "ip6tables-legacy"] {
            topo.pod
                .exec_ok(&[bin, "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"]);
        }
    }
    let backend = match engine {
        Engine::Nftables => Backend::Nftables,
        _ => Backend::Iptables,
    };
    let programmed = program(&topo.pod.path, &case.pod.redirect(), &NodeEnv::default(), backend)
        .unwrap_or_else(|e| panic!("[{label}] program failed: {e}"));
    let want = match engine {
        Engine::IptablesLegacy => Some(Variant::Legacy),
        Engine::IptablesNft => Some(Variant::Nft),
        Engine::Nftables => None,
    };
    if let (Some(want), Applied::Iptables(report)) = (want, &programmed.outcome) {
        assert_eq!(
            report.v4.variant, want,
            "[{label}] wrong iptables binary: {}",
            report.v4
        );
    }
    programmed
}

fn check(p: &Probe, expect: Expect, got: &Result<Landed, String>) -> Result<(), String> {
    let landed = got.as_ref().map_err(|e| format!("got no answer: {e}"))?;
    let want_role = match expect {
        Outbound => Role::Outbound,
        Inbound | InboundTransparent => Role::Inbound,
        Dns => Role::Dns,
        App => Role::App,
        Peer => Role::Peer,
    };
    let ok = landed.role == want_role
        && match expect {
            Outbound | Inbound => landed.orig == p.dst,
            InboundTransparent => landed.orig == p.dst && landed.local == p.dst,
            // UDP has no SO_ORIGINAL_DST; the reply reaching the connected
            // client socket proves the reverse NAT.
            Dns => p.proto == Proto::Udp || landed.orig == p.dst,
            App | Peer => landed.local == p.dst,
        };
    if ok { Ok(()) } else { Err(format!("got {landed:?}")) }
}

fn payload_text(p: &Programmed) -> String {
    match &p.payload {
        Payload::Iptables(r) => format!("{}{}", r.v4, r.v6.as_deref().unwrap_or("")),
        Payload::Nftables(t) => t.clone(),
    }
}

/// INVALID_DROP with real packets: a SYN+FIN segment (conntrack: INVALID)
/// from the peer must hit the drop chain; without the env it must not exist.
#[rstest]
fn invalid_packets_are_dropped(
    #[values(Engine::IptablesLegacy, Engine::IptablesNft, Engine::Nftables)] engine: Engine,
    #[values(true, false)] invalid_drop: bool,
) {
    let label = format!("INVALID_DROP={invalid_drop} / {engine:?}");
    if !gate(&label, NETNS) {
        return;
    }
    let topo = Topology::new(Stack::V4);
    let pod = if invalid_drop {
        PodSpec::default().env("INVALID_DROP", "true")
    } else {
        PodSpec::default()
    };
    let c = case("INVALID_DROP", pod, Vec::new());
    program_pod(&topo, &c, engine, &label);
    for _ in 0..3 {
        send_invalid_tcp(&topo, std::net::SocketAddrV4::new(POD4, 8080));
    }
    let dropped = drop_counter(&topo, engine);
    if invalid_drop {
        assert_eq!(
            dropped,
            Some(3),
            "[{label}] the drop chain must count the 3 invalid segments"
        );
    } else {
        assert_eq!(dropped, None, "[{label}] no drop chain without INVALID_DROP");
    }
}

/// Packets counted by the drop rule, or `None` when there is no drop chain.
fn drop_counter(topo: &Topology, engine: Engine) -> Option<u64> {
    let (argv, marker): (&[&str], &str) = match engine {
        Engine::IptablesLegacy => (&["iptables-legacy-save", "-c", "-t", "mangle"], "-A ISTIO_DROP -j DROP"),
        Engine::IptablesNft => (&["iptables-nft-save", "-c", "-t", "mangle"], "-A ISTIO_DROP -j DROP"),
        Engine::Nftables => (&["nft", "list", "table", "inet", "istio-proxy-mangle"], "drop"),
    };
    let out = topo.pod.exec(argv);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(marker) && (engine != Engine::Nftables || l.contains("counter")))?;
    let count = match engine {
        // "[3:120] -A ISTIO_DROP -j DROP"
        Engine::IptablesLegacy | Engine::IptablesNft => line.trim_start_matches('[').split(':').next(),
        // "counter packets 3 bytes 120 drop"
        Engine::Nftables => line.split_whitespace().skip_while(|w| *w != "packets").nth(1),
    };
    count.and_then(|n| n.parse().ok())
}
