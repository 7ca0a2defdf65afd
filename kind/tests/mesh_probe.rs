//! mesh-probe end to end, each test in its own network namespace: echo and
//! client JSON events over IPv4 and IPv6, refused and timed-out attempts,
//! the proxy recording SO_ORIGINAL_DST of traffic REDIRECTed to it by
//! iptables/ip6tables nat rules, and a clean exit on SIGTERM.
//!
//! Needs root; without it the tests print `SKIP:` and pass (they panic when
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod node_support;

use std::time::Duration;

use istio_cni_kind::node::Netns;
use node_support::{NODE, Probe, Scratch, client, named, node_and, private_netns, probe_bin, run_ok};
use serde_json::Value;

fn count_events(probe: &mut Probe, name: &str, want: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got: Vec<Value> = probe.events().iter().filter(|e| e["event"] == name).cloned().collect();
        if got.len() >= want || std::time::Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// mesh-probe `args` in `ns`, as pod `pod`, once it says it is ready.
fn start(ns: &Netns, args: &[&str], pod: Option<&str>) -> Probe {
    let mut cmd = ns.command(probe_bin());
    cmd.args(args);
    if let Some(pod) = pod {
        cmd.env("POD_NAME", pod);
    }
    let mut probe = Probe::spawn(cmd);
    probe.wait_ready();
    probe
}

/// The echo server's two ports, one over each IP family, as client targets.
const BOTH_FAMILIES: [&str; 4] = ["--target", "127.0.0.1:18080", "--target", "[::1]:18081"];

#[test]
fn echo_answers_tcp_and_udp_over_ipv4_and_ipv6() {
    testkit::gate_or_return!(NODE);
    let scratch = Scratch::new("probe-echo");
    let ns = private_netns(&scratch, "pod");
    let mut echo = start(&ns, &["echo", "--port", "18080", "--port", "18081"], Some("app-1"));

    let (status, events) = client(&ns, &[&BOTH_FAMILIES[..], &["--timeout", "2s"]].concat());
    assert!(status.success(), "{events:#?}");
    let connected = named(&events, "connected");
    assert_eq!(connected.len(), 2, "{events:#?}");
    for (ev, port) in connected.iter().zip([18080, 18081]) {
        assert_eq!(ev["mode"], "client");
        assert_eq!(ev["proto"], "tcp");
        assert_eq!(ev["reply"]["server"], "echo", "{ev}");
        assert_eq!(ev["reply"]["name"], "app-1", "{ev}");
        assert_eq!(ev["reply"]["port"], port, "{ev}");
        assert!(ev["ts"].as_u64().is_some_and(|t| t > 0), "{ev}");
    }
    assert_eq!(named(&events, "summary")[0]["succeeded"], 2);

    let udp = ["--udp", "--count", "2", "--interval", "50ms"];
    let (status, events) = client(&ns, &[&udp[..], &BOTH_FAMILIES].concat());
    assert!(status.success(), "{events:#?}");
    let answered = named(&events, "answered");
    assert_eq!(answered.len(), 4, "{events:#?}");
    assert!(
        answered
            .iter()
            .all(|e| e["reply"]["server"] == "echo" && e["reply"]["proto"] == "udp"),
        "{events:#?}"
    );

    let accepted = count_events(&mut echo, "accepted", 2);
    assert_eq!(accepted.len(), 2);
    let peers: Vec<&str> = accepted.iter().filter_map(|e| e["peer"].as_str()).collect();
    assert!(peers[0].starts_with("127.0.0.1:"), "{peers:?}");
    assert!(peers[1].starts_with("[::1]:"), "{peers:?}");
    assert_eq!(count_events(&mut echo, "datagram", 4).len(), 4);
}

#[test]
fn client_reports_refused_and_timeout() {
    testkit::gate_or_return!(&node_and(&["iptables"]));
    let scratch = Scratch::new("probe-fail");
    let ns = private_netns(&scratch, "pod");
    let (status, events) = client(&ns, &["--target", "127.0.0.1:18099"]);
    assert!(!status.success());
    assert_eq!(named(&events, "refused").len(), 1, "{events:#?}");
    assert_eq!(named(&events, "summary")[0]["succeeded"], 0);

    run_ok(
        ns.command("iptables")
            .args(["-w", "-A", "OUTPUT", "-p", "tcp", "--dport", "18098", "-j", "DROP"]),
    );
    let started = std::time::Instant::now();
    let (status, events) = client(&ns, &["--target", "127.0.0.1:18098", "--timeout", "300ms"]);
    assert!(!status.success());
    assert_eq!(named(&events, "timeout").len(), 1, "{events:#?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let (status, events) = client(&ns, &["--udp", "--target", "127.0.0.1:18097", "--timeout", "300ms"]);
    assert!(!status.success());
    // Nothing listens: the ICMP port unreachable surfaces as refused.
    assert_eq!(named(&events, "refused").len(), 1, "{events:#?}");
}

#[test]
fn proxy_records_original_destination_of_redirected_traffic() {
    testkit::gate_or_return!(&node_and(&["iptables", "ip6tables"]));
    let scratch = Scratch::new("probe-proxy");
    let ns = private_netns(&scratch, "pod");
    // A non-local service range to send to: a veth pair gives it a route.
    for args in [
        &["link", "add", "svc0", "type", "veth", "peer", "name", "svc1"][..],
        &["addr", "add", "10.77.0.1/24", "dev", "svc0"],
        &["addr", "add", "fd00:77::1/64", "dev", "svc0", "nodad"],
        &["link", "set", "svc1", "up"],
        &["link", "set", "svc0", "up"],
    ] {
        run_ok(ns.command("ip").args(args));
    }
    for (bin, proto, dst, port, to) in [
        ("iptables", "tcp", "10.77.0.5", "80", "15001"),
        ("ip6tables", "tcp", "fd00:77::5", "80", "15001"),
        ("iptables", "udp", "10.77.0.5", "53", "15053"),
    ] {
        let rule = [
            "-p",
            proto,
            "-d",
            dst,
            "--dport",
            port,
            "-j",
            "REDIRECT",
            "--to-ports",
            to,
        ];
        run_ok(ns.command(bin).args(["-w", "-t", "nat", "-A", "OUTPUT"]).args(rule));
    }
    let mut proxy = start(&ns, &["proxy"], Some("sidecar"));

    let (status, events) = client(&ns, &["--target", "10.77.0.5:80", "--target", "[fd00:77::5]:80"]);
    assert!(status.success(), "{events:#?}");
    let connected = named(&events, "connected");
    assert_eq!(connected.len(), 2, "{events:#?}");
    for (ev, dst) in connected.iter().zip(["10.77.0.5:80", "[fd00:77::5]:80"]) {
        assert_eq!(ev["reply"]["server"], "proxy", "{ev}");
        assert_eq!(ev["reply"]["name"], "sidecar", "{ev}");
        assert_eq!(ev["reply"]["listener"], 15001, "{ev}");
        assert_eq!(ev["reply"]["orig_dst"], dst, "{ev}");
    }
    let accepted = count_events(&mut proxy, "accepted", 2);
    let dsts: Vec<&str> = accepted.iter().filter_map(|e| e["orig_dst"].as_str()).collect();
    assert_eq!(dsts, ["10.77.0.5:80", "[fd00:77::5]:80"], "{accepted:#?}");
    assert!(accepted.iter().all(|e| e["listener"] == 15001 && e["mode"] == "proxy"));

    // Not redirected: straight to 15006, the original destination is the
    // listener itself.
    let (status, events) = client(&ns, &["--target", "127.0.0.1:15006"]);
    assert!(status.success(), "{events:#?}");
    assert_eq!(named(&events, "connected")[0]["reply"]["listener"], 15006);

    let (status, events) = client(&ns, &["--udp", "--target", "10.77.0.5:53"]);
    assert!(status.success(), "{events:#?}");
    let answered = named(&events, "answered");
    assert_eq!(answered[0]["reply"]["server"], "proxy", "{events:#?}");
    assert_eq!(answered[0]["reply"]["listener"], 15053, "{events:#?}");
    let datagrams = count_events(&mut proxy, "datagram", 1);
    assert_eq!(datagrams[0]["listener"], 15053);
    // The datagram arrived at the redirect target; the answer left from it,
    // so conntrack turned it back into 10.77.0.5:53 for the client.
    assert_eq!(datagrams[0]["local_dst"], "127.0.0.1:15053", "{datagrams:#?}");
    assert_eq!(answered[0]["addr"], "10.77.0.5:53");
}

#[test]
fn proxy_exits_cleanly_on_sigterm() {
    testkit::gate_or_return!(NODE);
    let scratch = Scratch::new("probe-term");
    let ns = private_netns(&scratch, "pod");
    let mut proxy = start(&ns, &["proxy"], None);
    let listening = proxy.events().iter().filter(|e| e["event"] == "listening").count();
    assert_eq!(
        listening,
        8,
        "3 TCP + 1 UDP ports, IPv4 and IPv6: {:#?}",
        proxy.events()
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(proxy.child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sending SIGTERM");
    let (status, events) = proxy.finish(Duration::from_secs(10));
    assert!(status.success(), "{status}: {events:#?}");
    let last = events.last().expect("events");
    assert_eq!(last["event"], "exit");
    assert_eq!(last["reason"], "SIGTERM");
}
