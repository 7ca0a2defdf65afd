//! The in-process netlink path against `nft -f -`, in real network
//! namespaces: for every nftables transaction in the reviewed render
//! snapshots, both paths leave the same ruleset (`nft list ruleset`) and
//! the same kernel bytecode (`nft --debug=netlink list ruleset`); re-applying
//! changes nothing; a refused or uncompilable transaction applies nothing.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::path::Path;

use istio_cni::netns::exec::Runner;
use istio_cni::nftables::apply::{Method, NftError, apply_exec, apply_native};
use istio_cni::nftables::native::NativeError;
use support::{NETNS, TestNetns, gate};

const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots");

/// (snapshot name, transaction) for every nftables transaction the render
/// snapshot tests keep: the capture cases and the `## nftables` part of the
/// per-pod render cases.
fn snapshot_transactions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(SNAPSHOTS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        // insta: a `---` delimited header, then the snapshot body.
        let body = text.splitn(3, "---\n").nth(2).unwrap_or("");
        if name.starts_with("istio_compat__capture-nftables-") {
            out.push((name, body.to_string()));
        } else if name.starts_with("render_snapshots__") {
            if let Some((_, nft)) = body.split_once("## nftables\n") {
                out.push((name, nft.to_string()));
            }
        }
    }
    out
}

/// The listing, and the kernel's bytecode of every rule without the rule
/// handles (`inet TABLE CHAIN HANDLE [POSITION]`): handles number messages,
/// and an insert is sent as an append in its final place.
/// Applies the default classic rules over netlink into a fresh netns, then
/// them plus `rule`, which must be refused and leave the ruleset as it was:
/// the refused text and the error.
fn refused_over_default(rule: &str) -> (String, NftError) {
    let good = case("render_snapshots__default-classic");
    let ns = TestNetns::new();
    native(&good, &ns).unwrap();
    let before = list(&ns);
    let bad = format!("{good}{rule}\n");
    let err = native(&bad, &ns).unwrap_err();
    assert_eq!(list(&ns), before, "a refused batch changed the ruleset: {err}");
    (bad, err)
}

fn list(ns: &TestNetns) -> (String, String) {
    let bytecode = ns.exec_ok(&["nft", "--debug=netlink", "list", "ruleset"]);
    let bytecode = bytecode
        .lines()
        .map(|l| match l.strip_prefix("inet ") {
            Some(rest) => {
                let words: Vec<&str> = rest
                    .split(' ')
                    .take_while(|w| !w.bytes().all(|b| b.is_ascii_digit()))
                    .collect();
                format!("inet {}", words.join(" "))
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (ns.exec_ok(&["nft", "list", "ruleset"]), bytecode)
}

fn native(text: &str, ns: &TestNetns) -> Result<(), NftError> {
    let report = apply_native(text, &ns.path)?;
    assert!(matches!(report.method, Method::Netlink { .. }), "{report:?}");
    Ok(())
}

fn exec(text: &str, ns: &TestNetns) -> Result<(), NftError> {
    apply_exec(text, &Runner::new(&ns.path)).map(|_| ())
}

#[test]
fn every_snapshot_transaction_programs_the_same_ruleset_as_nft() {
    if !gate("nft_netlink_equivalence", NETNS) {
        return;
    }
    let cases = snapshot_transactions();
    assert!(cases.len() >= 60, "only {} snapshot transactions found", cases.len());
    let (mut same, mut both_failed) = (0, 0);
    let mut mismatches = Vec::new();
    for (name, text) in &cases {
        let (a, b) = (TestNetns::new(), TestNetns::new());
        match (exec(text, &a), native(text, &b)) {
            (Ok(()), Ok(())) => {
                let (want, got) = (list(&a), list(&b));
                if want == got {
                    same += 1;
                } else {
                    let dir = std::env::temp_dir().join("nft_netlink");
                    let _ = std::fs::create_dir_all(&dir);
                    let _ = std::fs::write(dir.join(format!("{name}.nft")), format!("{}\n{}", want.0, want.1));
                    let _ = std::fs::write(dir.join(format!("{name}.netlink")), format!("{}\n{}", got.0, got.1));
                    mismatches.push(format!("{name} (listings in {})", dir.display()));
                }
            }
            // A name nft cannot resolve (a group that is not in /etc/group)
            // fails both ways, and neither leaves anything behind.
            (Err(e1), Err(e2)) => {
                assert!(matches!(e2, NftError::Compile(_)), "{name}: {e2}");
                assert!(e2.to_string().contains("does not exist"), "{name}: {e2} (nft: {e1})");
                assert_eq!(list(&a).0, "", "{name}");
                assert_eq!(list(&b).0, "", "{name}");
                both_failed += 1;
            }
            (r1, r2) => mismatches.push(format!("{name}: nft -f: {r1:?}, netlink: {r2:?}")),
        }
    }
    eprintln!(
        "{} transactions: {same} identical both ways, {both_failed} refused both ways",
        cases.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        same >= 55,
        "only {same} of {} transactions applied both ways",
        cases.len()
    );
}

fn case(name: &str) -> String {
    let (_, text) = snapshot_transactions()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no snapshot {name}"));
    text
}

#[test]
fn the_tproxy_ruleset_as_the_kernel_lists_it() {
    if !gate("nft_netlink_listing", NETNS) {
        return;
    }
    let ns = TestNetns::new();
    native(&case("istio_compat__capture-nftables-tproxy"), &ns).unwrap();
    insta::assert_snapshot!("tproxy-listing", list(&ns).0);
}

#[test]
fn reapplying_changes_nothing_whichever_path_applied_first() {
    if !gate("nft_netlink_idempotent", NETNS) {
        return;
    }
    let text = case("istio_compat__capture-nftables-dns-uid-gid");
    let ns = TestNetns::new();
    native(&text, &ns).unwrap();
    let once = list(&ns);
    native(&text, &ns).unwrap();
    assert_eq!(list(&ns), once, "second netlink apply");
    exec(&text, &ns).unwrap();
    assert_eq!(list(&ns), once, "nft -f after netlink");
    native(&text, &ns).unwrap();
    assert_eq!(list(&ns), once, "netlink after nft -f");
}

#[test]
fn a_rule_the_kernel_refuses_rolls_back_the_whole_batch() {
    if !gate("nft_netlink_atomic", NETNS) {
        return;
    }
    // Same tables (so the batch flushes them first), plus a jump the kernel
    // refuses: the flush must not survive either.
    let (bad, err) = refused_over_default("add rule inet istio-proxy-nat output counter jump no-such-chain");
    let bad_line = bad.lines().count();
    match &err {
        NftError::Kernel(NativeError::Rejected { line, source, .. }) => {
            assert_eq!(*line, bad_line, "{err}");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{err}");
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert!(err.to_string().contains("jump no-such-chain"), "{err}");
    assert!(err.to_string().contains("nothing was applied"), "{err}");

    // Into an empty netns: no table appears.
    let fresh = TestNetns::new();
    native(&bad, &fresh).unwrap_err();
    assert_eq!(list(&fresh).0, "");
}

#[test]
fn an_invalid_element_is_refused_before_anything_is_sent() {
    if !gate("nft_netlink_invalid", NETNS) {
        return;
    }
    let (_, err) =
        refused_over_default("add rule inet istio-proxy-nat istio-output ip daddr 10.0.0.300/8 counter return");
    assert!(matches!(err, NftError::Compile(_)), "{err}");
    assert!(err.to_string().contains("\"10.0.0.300\" is not an IP address"), "{err}");
}

#[test]
fn a_missing_netns_is_named() {
    let err = apply_native(
        &case("render_snapshots__default-classic"),
        Path::new("/nonexistent/netns/p1"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/netns/p1"), "{err}");
}

/// Median wall time of `n` runs of `f`.
fn median(n: usize, mut f: impl FnMut()) -> std::time::Duration {
    let mut times: Vec<_> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn netlink_is_faster_than_nft_exec() {
    if !gate("nft_netlink_speed", NETNS) {
        return;
    }
    let text = case("render_snapshots__default-classic");
    // First apply into a fresh netns (a pod's ADD), netns setup excluded.
    let first = |apply: fn(&str, &TestNetns) -> Result<(), NftError>| {
        let nets: Vec<TestNetns> = (0..11).map(|_| TestNetns::new()).collect();
        let mut it = nets.iter();
        median(11, || apply(&text, it.next().unwrap()).unwrap())
    };
    let (exec_first, native_first) = (first(exec), first(native));
    let (a, b) = (TestNetns::new(), TestNetns::new());
    let exec_again = median(11, || exec(&text, &a).unwrap());
    let native_again = median(11, || native(&text, &b).unwrap());
    eprintln!(
        "default-classic, median of 11: first apply nft -f {exec_first:?}, netlink {native_first:?}; \
         re-apply nft -f {exec_again:?}, netlink {native_again:?}"
    );
    // A process (sandboxed nft, its cache fill and parse) against one
    // sendmsg: far apart, so this holds on a loaded box.
    assert!(
        native_first < exec_first,
        "netlink {native_first:?} vs nft -f {exec_first:?}"
    );
}
