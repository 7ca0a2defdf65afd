//! Compatibility with Istio's own expected rules.
//!
//! Two sets of inputs, both from Istio's tests (docs/plugin.md#expected-rules):
//! - the plugin's test pods (`fixtures/istio-plugin/*.yaml`), rendered the way
//!   the plugin renders a pod;
//! - the rule builder's configurations (`capture_cases`), rendered for
//!   iptables and nftables.
//!
//! Every output is an insta snapshot (the project's record). When Istio's
//! goldens are present (`../shared/reference/istio-goldens`, or the directory
//! in `ISTIO_GOLDENS_DIR`) each output is also compared with Istio's, rule
//! for rule; when absent the test says so and relies on the snapshots.

use std::path::PathBuf;

use istio_cni::capture::{CaptureConfig, OwnerGroups};
use istio_cni::cli::{Backend, RenderOptions, render_manifest};
use istio_cni::redirect::{InboundPorts, InterceptionMode, OutboundRanges, Prefix};
use istio_cni::{capture::NodeEnv, iptables, nftables};

fn goldens_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ISTIO_GOLDENS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/istio-goldens"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "Istio goldens not found at {}: comparing with the project's snapshots only",
            dir.display()
        );
        None
    }
}

/// A golden without the `iptables-save`/`ip6tables-save` lines of Istio's
/// command-recording stub.
fn golden(path: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(goldens_dir()?.join(path)).unwrap_or_else(|e| panic!("reading golden {path}: {e}"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| *l != "iptables-save" && *l != "ip6tables-save")
        .collect();
    Some(lines.join("\n") + "\n")
}

fn assert_same_rules(ours: &str, golden_path: &str) {
    if let Some(expected) = golden(golden_path) {
        assert_eq!(ours, expected, "rules differ from Istio's {golden_path}");
    }
}

/// Compares every case with Istio's golden first (reporting all that
/// differ), then with the project's snapshots.
fn check_all(cases: &[&str], golden_path: impl Fn(&str) -> String, snapshot: &str, render: impl Fn(&str) -> String) {
    let outputs: Vec<(&str, String)> = cases.iter().map(|c| (*c, render(c))).collect();
    let differing: Vec<String> = outputs
        .iter()
        .filter_map(|(case, ours)| {
            let path = golden_path(case);
            let expected = golden(&path)?;
            (ours != &expected).then(|| format!("{path}:\n--- Istio\n{expected}--- ours\n{ours}"))
        })
        .collect();
    assert!(
        differing.is_empty(),
        "{} case(s) differ from Istio's goldens:\n{}",
        differing.len(),
        differing.join("\n")
    );
    for (case, ours) in outputs {
        insta::assert_snapshot!(format!("{snapshot}-{case}"), ours);
    }
}

#[rstest::rstest]
#[case::basic("basic", "basic")]
#[case::custom_uid_zero("custom-uid-zero", "basic")]
#[case::include_exclude_ip("include-exclude-ip", "include-exclude-ip")]
#[case::include_exclude_ports("include-exclude-ports", "include-exclude-ports")]
#[case::tproxy("tproxy", "tproxy")]
#[case::dns("dns", "dns")]
#[case::invalid_drop("invalid-drop", "invalid-drop")]
#[case::custom_uid("custom-uid", "custom-uid")]
#[case::custom_uid_tproxy("custom-uid-tproxy", "custom-uid-tproxy")]
fn plugin_pods_render_istios_rules(#[case] pod: &str, #[case] golden_name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/istio-plugin/{pod}.yaml"));
    let manifest = std::fs::read_to_string(&path).unwrap();
    let opts = RenderOptions {
        ipv6: false,
        backend: Backend::Iptables,
        node: NodeEnv::default(),
    };
    let rules = render_manifest(&manifest, &opts).unwrap();
    assert_same_rules(&rules, &format!("plugin/{golden_name}.txt.golden"));
    insta::assert_snapshot!(format!("plugin-{pod}"), rules);
}

fn prefixes(list: &str) -> Vec<Prefix> {
    list.split(',').map(|p| p.parse().unwrap()).collect()
}

fn ids(list: &str) -> Vec<String> {
    list.split(',').map(str::to_string).collect()
}

/// The rule builder's test configurations (docs/plugin.md#rule-builder-configurations), applied on top
/// of its base configuration.
fn capture_case(name: &str) -> CaptureConfig {
    let mut c = CaptureConfig::builder_default();
    let dns_v4 = |c: &mut CaptureConfig| {
        c.dns.redirect = true;
        c.dns.servers_v4 = vec!["127.0.0.53".into()];
    };
    let uid_gid = |c: &mut CaptureConfig| {
        c.proxy.gids = ids("1,2");
        c.proxy.uids = ids("3,4");
    };
    let ipnets_v6 = |c: &mut CaptureConfig| {
        c.traffic.include_inbound_ports = InboundPorts::Only(vec![4000, 5000]);
        c.traffic.exclude_inbound_ports = vec![6000, 7000];
        c.traffic.reroute_interfaces = ids("eth0,eth1");
        c.traffic.exclude_outbound_ranges = prefixes("2001:db8::/32");
        c.traffic.include_outbound_ranges = OutboundRanges::Only(prefixes("2001:db8::/32"));
        c.enable_ipv6 = true;
    };
    match name {
        "empty" => {}
        "ipv6-empty-inbound-ports" => c.enable_ipv6 = true,
        "ip-range" => {
            c.traffic.exclude_outbound_ranges = prefixes("1.1.0.0/16");
            c.traffic.include_outbound_ranges = OutboundRanges::Only(prefixes("9.9.0.0/16"));
            dns_v4(&mut c);
            uid_gid(&mut c);
        }
        "tproxy" => {
            c.mode = InterceptionMode::Tproxy;
            c.traffic.include_inbound_ports = InboundPorts::All;
            c.traffic.exclude_outbound_ranges = prefixes("1.1.0.0/16");
            c.traffic.include_outbound_ranges = OutboundRanges::Only(prefixes("9.9.0.0/16"));
            dns_v4(&mut c);
            c.traffic.exclude_interfaces = ids("not-istio-nic");
            c.enable_ipv6 = true;
        }
        "ipv6-inbound-ports" => {
            c.traffic.include_inbound_ports = InboundPorts::Only(vec![4000, 5000]);
            c.enable_ipv6 = true;
        }
        "ipv6-virt-interfaces" => {
            c.traffic.include_inbound_ports = InboundPorts::Only(vec![4000, 5000]);
            c.traffic.reroute_interfaces = ids("eth0,eth1");
            c.enable_ipv6 = true;
        }
        "ipv6-ipnets" => ipnets_v6(&mut c),
        "ipv6-uid-gid" => {
            ipnets_v6(&mut c);
            uid_gid(&mut c);
        }
        "ipv6-outbound-ports" => {
            c.traffic.include_outbound_ports = vec![32000, 31000];
            c.enable_ipv6 = true;
        }
        "kube-virt-interfaces" => {
            c.traffic.reroute_interfaces = ids("eth1,eth2");
            c.traffic.include_outbound_ranges = OutboundRanges::All;
        }
        "ipnets" => c.traffic.include_outbound_ranges = OutboundRanges::Only(prefixes("10.0.0.0/8")),
        "ipnets-with-kube-virt-interfaces" => {
            c.traffic.reroute_interfaces = ids("eth1,eth2");
            c.traffic.include_outbound_ranges = OutboundRanges::Only(prefixes("10.0.0.0/8"));
        }
        "inbound-ports-include" => c.traffic.include_inbound_ports = InboundPorts::Only(vec![32000, 31000]),
        "inbound-ports-wildcard" => c.traffic.include_inbound_ports = InboundPorts::All,
        "inbound-ports-tproxy" => {
            c.traffic.include_inbound_ports = InboundPorts::Only(vec![32000, 31000]);
            c.mode = InterceptionMode::Tproxy;
        }
        "inbound-ports-wildcard-tproxy" => {
            c.traffic.include_inbound_ports = InboundPorts::All;
            c.mode = InterceptionMode::Tproxy;
        }
        "inbound-ports-empty-tproxy" => c.mode = InterceptionMode::Tproxy,
        "dns-uid-gid" => {
            dns_v4(&mut c);
            c.dns.servers_v6 = vec!["::127.0.0.53".into()];
            uid_gid(&mut c);
            c.enable_ipv6 = true;
        }
        "ipv6-dns-uid-gid" => {
            c.dns.redirect = true;
            uid_gid(&mut c);
            c.enable_ipv6 = true;
        }
        "outbound-owner-groups" => c.proxy.owner_groups = OwnerGroups::Only(ids("java,202")),
        "outbound-owner-groups-exclude" => c.proxy.owner_groups = OwnerGroups::AllExcept(ids("888,ftp")),
        "ipv6-dns-outbound-owner-groups" => {
            c.enable_ipv6 = true;
            c.dns.redirect = true;
            c.proxy.owner_groups = OwnerGroups::Only(ids("java,202"));
        }
        "ipv6-dns-outbound-owner-groups-exclude" => {
            c.enable_ipv6 = true;
            c.dns.redirect = true;
            c.proxy.owner_groups = OwnerGroups::AllExcept(ids("888,ftp"));
        }
        "outbound-ports-include" => c.traffic.include_outbound_ports = vec![32000, 31000],
        "loopback-outbound-iprange" => {
            c.traffic.include_outbound_ranges = OutboundRanges::Only(prefixes("127.1.2.3/32"));
            dns_v4(&mut c);
            uid_gid(&mut c);
        }
        "basic-exclude-nic" => c.traffic.exclude_interfaces = ids("not-istio-nic"),
        "drop-invalid" => c.drop_invalid = true,
        "host-ipv4-loopback-cidr" => c.ipv4_loopback = "127.0.0.1/8".parse().unwrap(),
        other => panic!("unknown capture case {other}"),
    }
    c
}

const CAPTURE_CASES: &[&str] = &[
    "empty",
    "ipv6-empty-inbound-ports",
    "ip-range",
    "tproxy",
    "ipv6-inbound-ports",
    "ipv6-virt-interfaces",
    "ipv6-ipnets",
    "ipv6-uid-gid",
    "ipv6-outbound-ports",
    "kube-virt-interfaces",
    "ipnets",
    "ipnets-with-kube-virt-interfaces",
    "inbound-ports-include",
    "inbound-ports-wildcard",
    "inbound-ports-tproxy",
    "inbound-ports-wildcard-tproxy",
    "dns-uid-gid",
    "ipv6-dns-uid-gid",
    "outbound-owner-groups",
    "outbound-owner-groups-exclude",
    "ipv6-dns-outbound-owner-groups",
    "ipv6-dns-outbound-owner-groups-exclude",
    "outbound-ports-include",
    "loopback-outbound-iprange",
    "basic-exclude-nic",
    "drop-invalid",
    "host-ipv4-loopback-cidr",
];

#[test]
fn capture_configs_render_istios_iptables_rules() {
    check_all(
        CAPTURE_CASES,
        |c| format!("capture-iptables/{c}.golden"),
        "capture-iptables",
        |c| {
            let payload = iptables::render(&capture_case(c));
            payload.v4 + payload.v6.as_deref().unwrap_or("")
        },
    );
}

#[test]
fn capture_configs_render_istios_nftables_rules() {
    let cases: Vec<&str> = CAPTURE_CASES
        .iter()
        .copied()
        .chain(["inbound-ports-empty-tproxy"])
        .collect();
    check_all(
        &cases,
        |c| format!("capture-nftables/{c}.golden"),
        "capture-nftables",
        |c| nftables::render(&capture_case(c)),
    );
}
