//! Binary detection without probing subprocesses, for the common case.
//!
//! The probing sequence ([`super::detect::detect`]) answers three questions
//! with subprocesses; here they are answered from the kernel and a cache:
//!
//! * legacy has rules? `ip{,6}_tables_names` of the netns lists exactly the
//!   tables `iptables-legacy-save` would dump. Any legacy table: not handled
//!   here (the probing sequence runs).
//! * the candidate's version and backend: from the [`VersionCache`], else
//!   `<bin>-save --version` once.
//! * would the kernel probe (`-t nat -A INPUT …`) succeed? nf_tables must
//!   answer in the pod netns (`NFT_MSG_GETGEN`), and the nat chain type must
//!   be known to exist: the module is loaded (`/proc/modules`), or the probe
//!   with this very binary succeeded earlier in this boot.
//! * existing rules (what `<bin>-save` prints)? No nf_tables table of an
//!   iptables name in the family means an empty dump; otherwise the save runs
//!   (once: verification reuses its output).
//!
//! Whenever an answer is not certain this returns `None` and the caller runs
//! the probing sequence, so the choice is always the one it would make.

use std::path::Path;

use super::cache::{self, BinaryKey, Entry, VersionCache};
use super::detect::{Family, IptablesBinary, Variant, has_existing_rules, interpret_version};
use super::netlink_detect::Nfnl;
use crate::netns::exec::{CommandSpec, Runner};

/// The tables `iptables-nft-save` dumps, when they exist.
const XT_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// A binary chosen without probing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The binary, exactly as the probing sequence would report it.
    pub bin: IptablesBinary,
    /// What `<bin>-save` prints now (empty when no table exists).
    pub save: String,
}

/// The fast answer for `family`, or `None`: run the probing sequence.
/// Call it on a thread inside the runner's netns.
pub fn detect(runner: &Runner, family: Family, cache: &VersionCache) -> Option<Detected> {
    if !in_netns_of(runner) || !legacy_tables(family)?.is_empty() {
        return None;
    }
    for variant in [Variant::Nft, Variant::Plain] {
        let cmd = IptablesBinary {
            family,
            variant,
            version: Default::default(),
            nft: false,
            existing_rules: false,
        }
        .cmd();
        match (runner.find(&cmd), runner.find(&format!("{cmd}-save"))) {
            // The probing sequence fails this candidate at its save: next.
            (None, None) => continue,
            (Some(_), Some(_)) => return nft_candidate(runner, family, variant, &cmd, cache),
            _ => return None,
        }
    }
    None
}

fn nft_candidate(
    runner: &Runner,
    family: Family,
    variant: Variant,
    cmd: &str,
    cache: &VersionCache,
) -> Option<Detected> {
    let key = BinaryKey::of(runner, cmd)?;
    let mut nfnl = Nfnl::open().ok()?;
    nfnl.generation().ok()?;
    let cached = cache.load(&key);
    let boot = cache::boot_id();
    let probed = cached
        .as_ref()
        .is_some_and(|e| e.probed_boot.is_some() && e.probed_boot == boot);
    if !probed && !nat_module_loaded(family) {
        return None;
    }
    let entry = match cached {
        Some(entry) => entry,
        None => {
            let out = runner
                .run(&CommandSpec::new(format!("{cmd}-save"), ["--version"]))
                .ok()?;
            let info = interpret_version(out.success(), &out.stdout, &out.stderr).ok()?;
            let entry = Entry::new(&key, info.version, info.nft);
            cache.store(&entry);
            entry
        }
    };
    if !entry.nft {
        return None;
    }
    let tables = nfnl.tables(family).ok()?;
    let mut bin = IptablesBinary {
        family,
        variant,
        version: entry.version(),
        nft: true,
        existing_rules: false,
    };
    let save = if tables.iter().any(|t| XT_TABLES.contains(&t.as_str())) {
        let out = runner
            .run_checked(&CommandSpec::new(bin.save_cmd(), Vec::<String>::new()))
            .ok()?;
        bin.existing_rules = has_existing_rules(&out.stdout);
        out.stdout
    } else {
        String::new()
    };
    tracing::debug!(binary = %bin, "selected iptables binary without probing");
    Some(Detected { bin, save })
}

/// Records what the probing sequence established for `bin`: its version and
/// that its kernel probe succeeded in this boot.
pub fn remember(runner: &Runner, bin: &IptablesBinary, cache: &VersionCache) {
    if cache.dir().is_none() || !bin.nft {
        return;
    }
    let Some(key) = BinaryKey::of(runner, &bin.cmd()) else {
        return;
    };
    let mut entry = Entry::new(&key, bin.version, bin.nft);
    entry.probed_boot = cache::boot_id();
    if cache.load(&key).as_ref() != Some(&entry) {
        cache.store(&entry);
    }
}

/// Whether this thread is inside the runner's netns (so that `/proc/thread-self`
/// and a new netlink socket see the pod's tables).
pub fn in_netns_of(runner: &Runner) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    matches!((id(Path::new("/proc/thread-self/ns/net")), id(runner.netns())), (Some(a), Some(b)) if a == b)
}

/// The legacy tables instantiated in this thread's netns; `None` when the
/// list exists but cannot be read. No file: the legacy modules are not
/// loaded, so there are none.
pub fn legacy_tables(family: Family) -> Option<Vec<String>> {
    let names = match family {
        Family::V4 => "/proc/thread-self/net/ip_tables_names",
        Family::V6 => "/proc/thread-self/net/ip6_tables_names",
    };
    match std::fs::read_to_string(names) {
        Ok(text) => Some(text.split_whitespace().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Vec::new()),
        Err(_) => None,
    }
}

/// Whether the nf_tables nat chain type's module is loaded (kernels with
/// module support list it in `/proc/modules`; older ones per family).
fn nat_module_loaded(family: Family) -> bool {
    let Ok(modules) = std::fs::read_to_string("/proc/modules") else {
        return false;
    };
    let per_family = match family {
        Family::V4 => "nft_chain_nat_ipv4",
        Family::V6 => "nft_chain_nat_ipv6",
    };
    // `name size refs deps state address`: only a live module counts.
    modules.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        matches!(fields.as_slice(), [name, _, _, _, "Live", ..] if *name == "nft_chain_nat" || *name == per_family)
    })
}
