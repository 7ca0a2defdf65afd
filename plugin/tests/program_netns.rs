//! `program()` against real network namespaces: backend selection, rules
//! read back, idempotent re-programming, IPv6, TPROXY routing and failures.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::path::Path;

use istio_cni::capture::NodeEnv;
use istio_cni::iptables::apply::Variant;
use istio_cni::program::{Applied, Backend, Payload, ProgramError, ProgramOptions, Programmed, program, program_with};
use support::{NETNS, PodSpec, TestNetns, gate};

/// A netns with one interface (a veth end; no dummy module needed) carrying
/// the given addresses.
fn netns_with(addrs: &[&str]) -> TestNetns {
    let ns = TestNetns::new();
    ns.ip("link add d0 type veth peer name d1");
    ns.ip("link set d0 up");
    for a in addrs {
        ns.ip(&format!("addr add {a} dev d0 nodad"));
    }
    ns
}

/// A netns with one IPv4 address, for a test that `gate` lets run.
fn gated_v4_netns(test: &str) -> Option<TestNetns> {
    gate(test, NETNS).then(|| netns_with(&["10.250.0.2/24"]))
}

/// Programs a pod without annotations into the netns at `path`.
fn program_default_pod(path: &Path, backend: Backend) -> Result<Programmed, ProgramError> {
    program(path, &PodSpec::default().redirect(), &NodeEnv::default(), backend)
}

fn run(ns: &TestNetns, pod: &PodSpec, backend: Backend) -> Programmed {
    program(&ns.path, &pod.redirect(), &NodeEnv::default(), backend)
        .unwrap_or_else(|e| panic!("program {backend:?} into {}: {e}", ns.name))
}

/// Programs the pod with the iptables backend, which chooses `chosen`;
/// `applied` says whether rules are written (a re-program is a no-op).
fn iptables_run(ns: &TestNetns, pod: &PodSpec, chosen: Variant, applied: bool) -> Programmed {
    let out = run(ns, pod, Backend::Iptables);
    assert_eq!(variant(&out).0, chosen, "{out:?}");
    assert_eq!(
        out.applied, applied,
        "applied (re-programming must be a no-op): {out:?}"
    );
    out
}

fn variant(p: &Programmed) -> (Variant, Option<Variant>) {
    match &p.outcome {
        Applied::Iptables(r) => (r.v4.variant, r.v6.as_ref().map(|b| b.variant)),
        Applied::Nftables(_) => panic!("expected the iptables backend"),
    }
}

fn assert_istio_chains(save: &str) {
    for chain in ["ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"] {
        assert!(save.contains(&format!(":{chain} ")), "{chain} missing from:\n{save}");
    }
    assert!(save.contains("-A OUTPUT -j ISTIO_OUTPUT"), "{save}");
    assert!(save.contains("-A PREROUTING -p tcp -j ISTIO_INBOUND"), "{save}");
}

#[test]
fn iptables_nft_is_chosen_in_a_fresh_netns_and_reprogramming_is_a_noop() {
    let Some(ns) = gated_v4_netns("iptables_nft_fresh") else {
        return;
    };
    let pod = PodSpec::default();
    let first = iptables_run(&ns, &pod, Variant::Nft, true);
    assert!(!first.enable_ipv6);
    assert!(first.binary.starts_with("iptables-nft v"), "{}", first.binary);
    let save = ns.exec_ok(&["iptables-nft-save"]);
    assert_istio_chains(&save);
    // Legacy tables were not touched (the legacy kernel probe is skipped
    // when legacy has no rules), so a re-run picks nft again.
    assert!(!ns.exec_ok(&["iptables-legacy-save"]).contains("ISTIO"));

    let second = iptables_run(&ns, &pod, Variant::Nft, false);
    match &second.outcome {
        Applied::Iptables(r) => assert!(r.residue),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ns.exec_ok(&["iptables-nft-save"])
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count(),
        save.lines().filter(|l| l.starts_with("-A")).count()
    );
}

#[test]
fn iptables_legacy_is_chosen_when_it_already_has_rules() {
    let Some(ns) = gated_v4_netns("iptables_legacy") else {
        return;
    };
    ns.exec_ok(&["iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"]);
    let pod = PodSpec::default();
    iptables_run(&ns, &pod, Variant::Legacy, true);
    assert_istio_chains(&ns.exec_ok(&["iptables-legacy-save"]));
    assert!(!ns.exec_ok(&["iptables-nft-save"]).contains("ISTIO"));

    iptables_run(&ns, &pod, Variant::Legacy, false);
}

#[test]
fn nftables_backend_programs_inet_tables_and_reprograms_cleanly() {
    let Some(ns) = gated_v4_netns("nftables_backend") else {
        return;
    };
    let pod = PodSpec::default();
    let first = run(&ns, &pod, Backend::Nftables);
    assert_eq!(first.binary, "nf_tables netlink");
    assert!(matches!(first.payload, Payload::Nftables(_)));
    let ruleset = ns.exec_ok(&["nft", "list", "ruleset"]);
    assert!(ruleset.contains("table inet istio-proxy-nat"), "{ruleset}");
    assert!(ruleset.contains("chain istio-output"), "{ruleset}");

    let second = run(&ns, &pod, Backend::Nftables);
    assert!(second.applied);
    // add+flush: the same ruleset, not a doubled one.
    assert_eq!(ns.exec_ok(&["nft", "list", "ruleset"]), ruleset);
    // No iptables state was created.
    assert!(!ns.exec_ok(&["iptables-nft-save"]).contains("ISTIO"));
}

#[test]
fn ipv6_only_netns_gets_v6_rules_and_the_passthrough_address() {
    if !gate("ipv6_only", NETNS) {
        return;
    }
    for backend in [Backend::Iptables, Backend::Nftables] {
        let ns = netns_with(&["fd00:250::2/64"]);
        let pod = PodSpec::default();
        let first = run(&ns, &pod, backend);
        assert!(first.enable_ipv6, "{backend:?}");
        assert_eq!(first.routes.passthrough_v6_added, Some(true));
        let lo = ns.exec_ok(&["ip", "-6", "addr", "show", "dev", "lo"]);
        assert!(lo.contains("inet6 ::6/128"), "{lo}");
        match backend {
            Backend::Iptables => {
                let Payload::Iptables(p) = &first.payload else { panic!() };
                assert!(p.v6.is_some());
                assert_eq!(variant(&first), (Variant::Nft, Some(Variant::Nft)));
                assert_istio_chains(&ns.exec_ok(&["ip6tables-nft-save"]));
                // v4 rules are applied too.
                assert_istio_chains(&ns.exec_ok(&["iptables-nft-save"]));
            }
            Backend::Nftables => {
                let ruleset = ns.exec_ok(&["nft", "list", "ruleset"]);
                assert!(ruleset.contains("ip6 saddr ::6"), "{ruleset}");
            }
        }
        let second = run(&ns, &pod, backend);
        assert_eq!(second.routes.passthrough_v6_added, Some(false));
        if backend == Backend::Iptables {
            assert!(!second.applied);
        }
    }
}

#[test]
fn dual_stack_flag_decides_ipv6_for_a_dual_stack_netns() {
    if !gate("dual_stack", NETNS) {
        return;
    }
    let ns = netns_with(&["10.250.0.2/24", "fd00:250::2/64"]);
    let plain = run(&ns, &PodSpec::default(), Backend::Nftables);
    assert!(
        !plain.enable_ipv6,
        "IPv4 is listed first, so it decides without ISTIO_DUAL_STACK"
    );
    let dual = run(
        &ns,
        &PodSpec::default().env("ISTIO_DUAL_STACK", "true"),
        Backend::Nftables,
    );
    assert!(dual.enable_ipv6);
}

#[test]
fn tproxy_adds_policy_routing_and_reprograms() {
    if !gate("tproxy_routes", NETNS) {
        return;
    }
    for backend in [Backend::Iptables, Backend::Nftables] {
        let ns = netns_with(&["10.250.0.2/24", "fd00:250::2/64"]);
        let pod = PodSpec::default()
            .annotation("sidecar.istio.io/interceptionMode", "TPROXY")
            .env("ISTIO_DUAL_STACK", "true");
        let first = run(&ns, &pod, backend);
        let tproxy = first.routes.tproxy.expect("TPROXY routing");
        assert_eq!(
            (tproxy.rules_added, tproxy.rules_present, tproxy.routes_added),
            (2, 0, 2)
        );
        for family in ["-4", "-6"] {
            let rules = ns.exec_ok(&["ip", family, "rule", "show"]);
            assert_eq!(rules.matches("fwmark 0x539 lookup 133").count(), 1, "{rules}");
            let routes = ns.exec_ok(&["ip", family, "route", "show", "table", "133"]);
            assert!(routes.contains("local default dev lo"), "{routes}");
        }

        // Istio fails here (EEXIST on the rule); we accept the identical rule.
        let second = run(&ns, &pod, backend);
        let tproxy = second.routes.tproxy.expect("TPROXY routing");
        assert_eq!(
            (tproxy.rules_added, tproxy.rules_present, tproxy.routes_added),
            (0, 2, 0)
        );
        let rules = ns.exec_ok(&["ip", "-4", "rule", "show"]);
        assert_eq!(rules.matches("fwmark 0x539 lookup 133").count(), 1, "{rules}");
    }
}

#[test]
fn tproxy_without_inbound_ports_adds_no_routing() {
    let Some(ns) = gated_v4_netns("tproxy_no_inbound") else {
        return;
    };
    let pod = PodSpec::default()
        .annotation("sidecar.istio.io/interceptionMode", "TPROXY")
        .annotation("traffic.sidecar.istio.io/includeInboundPorts", "");
    let p = run(&ns, &pod, Backend::Iptables);
    assert_eq!(p.routes.tproxy, None);
    assert!(!ns.exec_ok(&["ip", "rule", "show"]).contains("lookup 133"));
}

#[test]
fn stale_partial_istio_chain_fails_with_stderr() {
    let Some(ns) = gated_v4_netns("stale_chain") else {
        return;
    };
    // A half-programmed netns: ISTIO_REDIRECT exists but is empty.
    ns.exec_ok(&["iptables-nft", "-t", "nat", "-N", "ISTIO_REDIRECT"]);
    let err = program_default_pod(&ns.path, Backend::Iptables).expect_err("restore over a stale chain must fail");
    let text = err.to_string();
    assert!(matches!(err, ProgramError::Iptables(_)), "{text}");
    assert!(
        text.starts_with("apply iptables rules: IPv4 iptables-nft-restore failed"),
        "{text}"
    );
    let stderr = err.stderr().expect("stderr is carried");
    assert!(!stderr.trim().is_empty());
    assert!(text.contains(stderr.trim()), "{text}");
}

#[test]
fn native_nftables_needs_no_nft_binary() {
    let Some(ns) = gated_v4_netns("nft_not_needed") else {
        return;
    };
    let empty = std::env::temp_dir().join(format!("icni-empty-bin-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let options = ProgramOptions {
        search_path: Some(empty.clone().into_os_string()),
        ..ProgramOptions::default()
    };
    // Nothing is executed: an empty search path does not matter.
    let programmed = program_with(
        &ns.path,
        &PodSpec::default().redirect(),
        &NodeEnv::default(),
        Backend::Nftables,
        &options,
    );
    let _ = std::fs::remove_dir(&empty);
    let programmed = programmed.expect("netlink needs no nft binary");
    assert_eq!(programmed.binary, "nf_tables netlink");
    let listing = ns.exec_ok(&["nft", "list", "ruleset"]);
    assert!(listing.contains("table inet istio-proxy-nat"), "{listing}");
}

#[test]
fn netns_without_addresses_is_an_error() {
    if !gate("no_address", NETNS) {
        return;
    }
    let ns = TestNetns::new();
    let err = program_default_pod(&ns.path, Backend::Iptables).expect_err("only loopback addresses");
    assert_eq!(err.to_string(), "detect IPv6: no valid local IP address found");
}

#[test]
fn bad_netns_path_is_named() {
    let err = program_default_pod(Path::new("/nonexistent/netns/pod"), Backend::Iptables).expect_err("no such netns");
    assert!(err.to_string().contains("/nonexistent/netns/pod"), "{err}");
}

#[test]
fn commands_run_sandboxed_in_the_pod_netns() {
    use istio_cni::netns::exec::{CommandSpec, Runner, XtablesLock};
    let Some(ns) = gated_v4_netns("sandbox") else {
        return;
    };
    let runner = Runner::new(&ns.path);
    let script = "ip -4 -o addr show dev d0; wc -c < /etc/nsswitch.conf; stat -f -c %T /run/xtables.lock";
    let out = runner
        .run_checked(&CommandSpec::new("sh", ["-c", script]).lock(XtablesLock::BindMount))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.sandboxed, "root must get the sandbox");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains("10.250.0.2/24"),
        "not in the pod netns: {}",
        out.stdout
    );
    assert_eq!(lines[1].trim(), "0", "nsswitch.conf is masked by /dev/null");
    assert_eq!(lines[2].trim(), "nsfs", "the xtables lock is the netns file");
    // Nothing leaked to the host mount namespace.
    assert!(
        std::fs::metadata("/etc/nsswitch.conf")
            .map(|m| m.len() > 0)
            .unwrap_or(true)
    );
    let host_lock = std::process::Command::new("stat")
        .args(["-f", "-c", "%T", "/run/xtables.lock"])
        .output()
        .expect("stat");
    assert_ne!(String::from_utf8_lossy(&host_lock.stdout).trim(), "nsfs");
}
