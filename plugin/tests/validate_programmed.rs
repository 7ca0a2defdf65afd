//! The contract between the rules and the pod's `istio-validation` init
//! container: in a netns programmed by `program()`, `istio-cni validate` with
//! Istio's injected arguments, run as the proxy's uid/gid, passes — for every
//! backend, interception mode and a custom uid; in an unprogrammed netns it
//! exits 126.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use istio_cni::capture::NodeEnv;
use istio_cni::program::{Backend, program};
use support::{NETNS, PodSpec, Scratch, TestNetns, gate};

/// The validator's arguments as Istio's injector writes them for `uid`
/// (it rewrites `-u` to the proxy's uid), with a probe timeout.
fn injected_args(uid: u32, timeout: &str) -> Vec<String> {
    let mut args: Vec<String> = istio_cni::validate::ISTIO_INJECTED_ARGS
        .iter()
        .map(|a| a.to_string())
        .collect();
    let u = args.iter().position(|a| a == "-u").expect("-u") + 1;
    args[u] = uid.to_string();
    args.extend(["--probe-timeout".to_string(), timeout.to_string()]);
    args
}

/// A copy of the binary that the proxy uid can execute wherever the build
/// tree lives (e.g. inside a home directory it cannot enter).
fn shared_binary() -> (Scratch, PathBuf) {
    let dir = Scratch::new("validate");
    let bin = dir.join("istio-cni");
    testkit::place_exe(env!("CARGO_BIN_EXE_istio-cni").as_ref(), &bin).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// Runs the validator in `ns` as `uid`/`gid`; returns its exit code and stderr.
fn validate_in(ns: &TestNetns, uid: u32, gid: u32, timeout: &str) -> (Option<i32>, String) {
    let (_dir, bin) = shared_binary();
    let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={gid}"));
    let mut argv = vec![
        "setpriv",
        &reuid,
        &regid,
        "--clear-groups",
        bin.to_str().unwrap(),
        "validate",
    ];
    let args = injected_args(uid, timeout);
    argv.extend(args.iter().map(String::as_str));
    let out = ns.exec(&argv);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn pod_netns() -> TestNetns {
    let ns = TestNetns::new();
    ns.ip("link add d0 type veth peer name d1");
    ns.ip("link set d0 up");
    ns.ip("addr add 10.250.0.2/24 dev d0");
    ns
}

#[rstest::rstest]
#[case::iptables_nft(Backend::Iptables, false)]
#[case::iptables_legacy(Backend::Iptables, true)]
#[case::nftables(Backend::Nftables, false)]
fn validation_passes_once_programmed(#[case] backend: Backend, #[case] legacy: bool) {
    if !gate("validation_passes_once_programmed", NETNS) {
        return;
    }
    let cases = [
        ("default", PodSpec::default(), 1337, 1337),
        (
            "TPROXY",
            PodSpec::default().annotation("sidecar.istio.io/interceptionMode", "TPROXY"),
            1337,
            1337,
        ),
        (
            "DNS capture",
            PodSpec::default().env("ISTIO_META_DNS_CAPTURE", "true"),
            1337,
            1337,
        ),
        ("custom uid", PodSpec::default().run_as(40_001, 40_002), 40_001, 40_002),
    ];
    for (name, pod, uid, gid) in cases {
        let ns = pod_netns();
        if legacy {
            // Istio picks legacy only when it already holds rules.
            ns.exec_ok(&["iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"]);
        }
        let (before, _) = validate_in(&ns, uid, gid, "1s");
        assert_eq!(before, Some(126), "{name}: validation must fail before the rules exist");
        program(&ns.path, &pod.redirect(), &NodeEnv::default(), backend)
            .unwrap_or_else(|e| panic!("{name}: program {backend:?}: {e}"));
        let (after, stderr) = validate_in(&ns, uid, gid, "5s");
        assert_eq!(after, Some(0), "{name} ({backend:?}, legacy={legacy}): {stderr}");
        assert!(stderr.contains("Validation passed"), "{stderr}");
    }
}
