//! The probe-free detection picks what the probing sequence picks.
//!
//! For every state a pod netns can be in — empty; legacy rules; nft rules;
//! both; a non-iptables nf_tables table; an nf_tables `nat` table iptables
//! cannot read; `iptables` being legacy or nft (a PATH of symlinks to
//! `xtables-legacy-multi` or `xtables-nft-multi`); nf_tables missing (a
//! seccomp filter refusing `NETLINK_NETFILTER` sockets to the detecting
//! thread and every process it starts, as on a kernel without nf_tables) —
//! each family is detected in identically prepared fresh netns by:
//!
//! * the probing sequence (`-save`, `-save --version`, probe `-A`/`-D`);
//! * the new detection with no cache, with a cold cache, with the cache
//!   warmed by the same state and warmed by a fresh pod's netns,
//!
//! and every answer must be the same binary (variant, version, backend,
//! existing rules), or the same failure. Where the fast path is claimed to
//! answer (warm cache, nf_tables present, no legacy tables) the test checks
//! that it did, so a fallback everywhere cannot pass as equivalence.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use istio_cni::iptables::apply::{self, Family, IptablesBinary, VersionCache, cache, detect, fast};
use istio_cni::netns::exec::{Runner, find_in_path};
use istio_cni::netns::run_in_netns;
use support::{NETNS, TestNetns, gate};

/// What a pod netns holds before detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    LegacyRules,
    NftRules,
    Both,
    ForeignNftTable,
    IncompatibleNat,
}

/// Which `iptables*` binaries are in the search path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binaries {
    /// The system's: legacy, nft and plain.
    All,
    /// Only plain `iptables*`, linked to `xtables-legacy-multi`.
    PlainLegacy,
    /// Only plain `iptables*`, linked to `xtables-nft-multi`.
    PlainNft,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    state: State,
    binaries: Binaries,
    nf_tables: bool,
    /// Whether the warm-cache detection must answer without probing.
    fast: bool,
}

/// A comparable outcome: the binary, or the candidates that were rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Picked {
    Binary(IptablesBinary),
    None(Vec<String>),
}

fn base(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn prepare(ns: &TestNetns, family: Family, state: State) {
    let ipt = base(family);
    let nft_family = if family == Family::V4 { "ip" } else { "ip6" };
    let legacy = || ns.exec_ok(&[&format!("{ipt}-legacy"), "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"]);
    let nft = || ns.exec_ok(&[&format!("{ipt}-nft"), "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"]);
    match state {
        State::Empty => {}
        State::LegacyRules => drop(legacy()),
        State::NftRules => drop(nft()),
        State::Both => {
            legacy();
            nft();
        }
        State::ForeignNftTable => drop(ns.exec_ok(&["nft", "add", "table", nft_family, "foreign"])),
        State::IncompatibleNat => {
            let script = format!(
                "add table {nft_family} nat\nadd chain {nft_family} nat odd {{ type nat hook prerouting priority 7; }}\n"
            );
            let path = std::env::temp_dir().join(format!("icni-odd-{}-{nft_family}.nft", std::process::id()));
            std::fs::write(&path, script).expect("write nft script");
            ns.exec_ok(&["nft", "-f", &path.display().to_string()]);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A directory of plain `iptables*` links to `multi`, for a PATH of its own.
fn plain_dir(multi: &str) -> PathBuf {
    let target = find_in_path(multi, &search_path()).unwrap_or_else(|| panic!("{multi} not in PATH"));
    let dir = std::env::temp_dir().join(format!("icni-plain-{multi}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for family in ["iptables", "ip6tables"] {
        for suffix in ["", "-save", "-restore"] {
            std::os::unix::fs::symlink(&target, dir.join(format!("{family}{suffix}"))).expect("symlink");
        }
    }
    dir
}

fn search_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| istio_cni::netns::exec::DEFAULT_SEARCH_PATH.into())
}

fn picked(result: Result<IptablesBinary, apply::DetectError>) -> Picked {
    match result {
        Ok(bin) => Picked::Binary(bin),
        Err(e) => Picked::None(e.attempts.into_iter().map(|(cmd, _)| cmd).collect()),
    }
}

/// Runs `detect` on a thread inside a freshly prepared netns, with
/// nf_tables refused to that thread when the case says so.
fn in_fresh_netns<T: Send + 'static>(
    case: Case,
    family: Family,
    path: &OsString,
    detect: impl FnOnce(&Runner) -> T + Send + 'static,
) -> T {
    let ns = TestNetns::new();
    prepare(&ns, family, case.state);
    let runner = Runner::new(&ns.path).with_search_path(path.clone());
    let nf_tables = case.nf_tables;
    run_in_netns(&ns.path, move || {
        if !nf_tables {
            refuse_nf_tables();
        }
        detect(&runner)
    })
    .expect("run in netns")
}

fn check(case: Case, family: Family, path: &OsString, cache_dir: &Path) {
    let what = format!("{case:?} {family}");
    let old = in_fresh_netns(case, family, path, move |r| picked(detect::detect(r, family)));
    let new = |cache: VersionCache| {
        in_fresh_netns(case, family, path, move |r| {
            picked(apply::detect_family(r, family, &cache).map(|(bin, _)| bin))
        })
    };
    assert_eq!(new(VersionCache::none()), old, "{what}: no cache");
    let cache = VersionCache::at(cache_dir.join(cache::DIR_NAME));
    assert_eq!(new(cache.clone()), old, "{what}: cold cache");
    assert_eq!(new(cache.clone()), old, "{what}: cache warmed by the same state");
    // As on a node: other pods (fresh netns, nf_tables there) warmed it.
    let fresh = Case {
        state: State::Empty,
        nf_tables: true,
        ..case
    };
    let warming = cache.clone();
    in_fresh_netns(fresh, family, path, move |r| {
        drop(apply::detect_family(r, family, &warming))
    });
    assert_eq!(new(cache.clone()), old, "{what}: cache warmed by a fresh pod");
    let fast = in_fresh_netns(case, family, path, move |r| fast::detect(r, family, &cache));
    match (&fast, &old) {
        (Some(found), Picked::Binary(bin)) => assert_eq!(&found.bin, bin, "{what}: fast path"),
        (Some(found), Picked::None(_)) => panic!("{what}: the fast path picked {} where probing fails", found.bin),
        (None, _) => assert!(!case.fast, "{what}: the fast path should have answered"),
    }
    if case.fast {
        assert!(fast.is_some(), "{what}: no fast answer");
    }
}

#[test]
fn the_new_detection_picks_what_the_probing_sequence_picks() {
    if !gate("detect_equivalence", NETNS) {
        return;
    }
    let all = search_path();
    let legacy_dir = plain_dir("xtables-legacy-multi");
    let nft_dir = plain_dir("xtables-nft-multi");
    let paths = |b: Binaries| match b {
        Binaries::All => all.clone(),
        Binaries::PlainLegacy => legacy_dir.clone().into_os_string(),
        Binaries::PlainNft => nft_dir.clone().into_os_string(),
    };
    let case = |state, binaries, nf_tables, fast| Case {
        state,
        binaries,
        nf_tables,
        fast,
    };
    let mut cases = vec![
        case(State::Empty, Binaries::All, true, true),
        case(State::LegacyRules, Binaries::All, true, false),
        case(State::NftRules, Binaries::All, true, true),
        case(State::Both, Binaries::All, true, false),
        case(State::ForeignNftTable, Binaries::All, true, true),
        case(State::IncompatibleNat, Binaries::All, true, true),
        case(State::Empty, Binaries::PlainNft, true, true),
        case(State::NftRules, Binaries::PlainNft, true, true),
        case(State::Empty, Binaries::PlainLegacy, true, false),
        case(State::LegacyRules, Binaries::PlainLegacy, true, false),
    ];
    if cfg!(target_arch = "x86_64") {
        cases.extend([
            case(State::Empty, Binaries::All, false, false),
            case(State::LegacyRules, Binaries::All, false, false),
            case(State::Empty, Binaries::PlainLegacy, false, false),
        ]);
    } else {
        eprintln!("NOTE: nf_tables-missing cases need the x86_64 seccomp filter; not run on this architecture");
    }
    for (i, c) in cases.into_iter().enumerate() {
        for family in [Family::V4, Family::V6] {
            // One cache per case and family: cold, then warm.
            let dir = std::env::temp_dir().join(format!("icni-eqv-{}-{i}-{family}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir");
            check(c, family, &paths(c.binaries), &dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let _ = std::fs::remove_dir_all(legacy_dir);
    let _ = std::fs::remove_dir_all(nft_dir);
}

/// Makes `socket(AF_NETLINK, _, NETLINK_NETFILTER)` fail with
/// `EPROTONOSUPPORT` — what a kernel without nfnetlink answers — for the
/// calling thread, threads it creates and processes they start.
fn refuse_nf_tables() {
    #[cfg(target_arch = "x86_64")]
    {
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        const RET_ALLOW: u32 = 0x7fff_0000;
        const RET_ERRNO: u32 = 0x0005_0000;
        let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let program = [
            insn(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
            insn(JEQ_K, 0, 7, AUDIT_ARCH_X86_64),
            insn(LD_W_ABS, 0, 0, 0), // .nr
            insn(JEQ_K, 0, 5, libc::SYS_socket as u32),
            insn(LD_W_ABS, 0, 0, 16), // .args[0]: domain
            insn(JEQ_K, 0, 3, libc::AF_NETLINK as u32),
            insn(LD_W_ABS, 0, 0, 32), // .args[2]: protocol
            insn(JEQ_K, 0, 1, libc::NETLINK_NETFILTER as u32),
            insn(RET_K, 0, 0, RET_ERRNO | libc::EPROTONOSUPPORT as u32),
            insn(RET_K, 0, 0, RET_ALLOW),
        ];
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with a valid filter program that outlives the call.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
            let rc = libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            );
            assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
        }
    }
}
