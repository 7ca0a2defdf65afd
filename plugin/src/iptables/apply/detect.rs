//! iptables binary detection per family (docs/plugin.md#binary-detection).
//!
//! Order: `iptables-legacy` *if it already has rules* in the netns, else
//! `iptables-nft`, else plain `iptables` (whose probe error is final).
//! A probe runs `<bin>-save` (the existing-rules dump), `<bin>-save
//! --version`, then the kernel probe `<bin> -t nat -A INPUT -p 255 -j RETURN`
//! and its `-D`.
//!
//! Deliberate difference: when `iptables-legacy-save` shows no existing rules
//! the legacy kernel probe is skipped. Legacy would not be chosen anyway, and
//! the probe would instantiate an (empty) legacy nat table in the netns, which
//! a later run would count as "existing rules" and then program the legacy
//! tables on top of the nft ones.

use std::fmt;

use crate::netns::exec::{CommandError, CommandSpec, Runner, XtablesLock};

/// `--wait` argument passed to legacy iptables ≥ 1.6.2.
pub const WAIT_ARG: &str = "--wait=30";

/// Address family of an iptables binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `iptables*`.
    V4,
    /// `ip6tables*`.
    V6,
}

impl Family {
    fn base(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// Which candidate binary was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-legacy` (had existing rules).
    Legacy,
    /// `iptables-nft`.
    Nft,
    /// plain `iptables`.
    Plain,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Self::Legacy => "-legacy",
            Self::Nft => "-nft",
            Self::Plain => "",
        }
    }
}

/// An iptables version (`major.minor.patch`; missing parts are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Finds the first `v<digits>(.<digits>)+` in `text`.
pub fn parse_version(text: &str) -> Option<Version> {
    text.match_indices('v').find_map(|(i, _)| parse_dotted(&text[i + 1..]))
}

fn parse_dotted(s: &str) -> Option<Version> {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let mut parts = s[..end].split('.');
    let mut nums = Vec::new();
    for part in parts.by_ref() {
        match part.parse::<u32>() {
            Ok(n) => nums.push(n),
            Err(_) => break, // "1.8." stops at the empty component
        }
    }
    if nums.len() < 2 {
        return None;
    }
    let at = |i: usize| nums.get(i).copied().unwrap_or(0);
    Some(Version(at(0), at(1), at(2)))
}

/// The iptables binaries chosen for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesBinary {
    /// The family.
    pub family: Family,
    /// Which candidate won.
    pub variant: Variant,
    /// The version reported by `<bin>-save --version` (0.0.0 if unknown).
    pub version: Version,
    /// Whether the binary drives nf_tables (`(nf_tables)` in the version).
    pub nft: bool,
    /// Whether `<bin>-save` showed existing rules.
    pub existing_rules: bool,
}

impl IptablesBinary {
    /// The rule command, e.g. `iptables-nft`.
    pub fn cmd(&self) -> String {
        format!("{}{}", self.family.base(), self.variant.suffix())
    }

    /// The save command, e.g. `iptables-nft-save`.
    pub fn save_cmd(&self) -> String {
        format!("{}-save", self.cmd())
    }

    /// The restore command, e.g. `iptables-nft-restore`.
    pub fn restore_cmd(&self) -> String {
        format!("{}-restore", self.cmd())
    }

    /// Whether `--wait=30` must be passed (legacy ≥ 1.6.2).
    pub fn needs_wait(&self) -> bool {
        needs_wait(self.nft, self.version)
    }

    /// Lock scoping for rule and restore commands (docs/plugin.md#exec-sandbox).
    pub fn lock(&self) -> XtablesLock {
        lock_for(self.nft, self.version)
    }

    /// `<cmd> <args> [--wait=30]` with the right lock scoping.
    pub fn command(&self, args: impl IntoIterator<Item = String>) -> CommandSpec {
        locked(self.cmd(), args, self.nft, self.version)
    }

    /// `<restore> --noflush [--wait=30]` fed with `payload`.
    pub fn restore_command(&self, payload: &str) -> CommandSpec {
        locked(self.restore_cmd(), ["--noflush".to_owned()], self.nft, self.version).stdin(payload)
    }
}

impl fmt::Display for IptablesBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = if self.nft { "nf_tables" } else { "legacy" };
        write!(f, "{} v{} ({backend})", self.cmd(), self.version)
    }
}

fn needs_wait(nft: bool, version: Version) -> bool {
    !nft && version >= Version(1, 6, 2)
}

fn lock_for(nft: bool, version: Version) -> XtablesLock {
    if !needs_wait(nft, version) {
        XtablesLock::None
    } else if version < Version(1, 8, 6) {
        XtablesLock::BindMount
    } else {
        XtablesLock::EnvLockfile
    }
}

fn locked(program: String, args: impl IntoIterator<Item = String>, nft: bool, version: Version) -> CommandSpec {
    let mut spec = CommandSpec::new(program, args).lock(lock_for(nft, version));
    if needs_wait(nft, version) {
        spec.args.push(WAIT_ARG.to_owned());
    }
    spec
}

/// What `<bin>-save --version` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    /// Parsed version.
    pub version: Version,
    /// Whether the output mentioned `nf_tables`.
    pub nft: bool,
}

/// Interprets `<bin>-save --version`. An old `-save` without `--version`
/// (failure, or `unrecognized option`) is legacy 0.0.0; otherwise the
/// version must parse.
pub fn interpret_version(succeeded: bool, stdout: &str, stderr: &str) -> Result<VersionInfo, String> {
    if !succeeded || stderr.contains("unrecognized option") {
        return Ok(VersionInfo {
            version: Version::default(),
            nft: false,
        });
    }
    let text = format!("{stdout}{stderr}");
    let version = parse_version(&text).ok_or_else(|| format!("cannot parse a version from {:?}", text.trim()))?;
    Ok(VersionInfo {
        version,
        nft: text.contains("nf_tables"),
    })
}

/// Whether a `-save` dump counts as "existing rules" (≥ 3 newlines, as Istio).
pub fn has_existing_rules(save_output: &str) -> bool {
    save_output.matches('\n').count() >= 3
}

/// Why one candidate binary was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A probe command could not run or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `--version` output had no version.
    #[error("{cmd}: {detail}")]
    Version {
        /// The command.
        cmd: String,
        /// What was wrong.
        detail: String,
    },
    /// The kernel probe printed "does not exist" (missing table/module).
    #[error("`{cmdline}`: kernel support missing: {}", stderr.trim_end())]
    Kernel {
        /// The command line.
        cmdline: String,
        /// Its stderr.
        stderr: String,
    },
}

/// No usable iptables binary for a family.
#[derive(Debug, thiserror::Error)]
#[error("no usable {family} iptables binary: {}", attempts.iter().map(|(c, e)| format!("{c}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct DetectError {
    /// The family.
    pub family: Family,
    /// Every candidate tried, with why it was rejected.
    pub attempts: Vec<(String, ProbeError)>,
}

/// Picks the iptables binary for `family` inside the runner's netns.
pub fn detect(runner: &Runner, family: Family) -> Result<IptablesBinary, DetectError> {
    let mut attempts = Vec::new();
    for variant in [Variant::Legacy, Variant::Nft, Variant::Plain] {
        let name = format!("{}{}", family.base(), variant.suffix());
        match probe(runner, family, variant) {
            Ok(Some(bin)) => {
                tracing::debug!(binary = %bin, "selected iptables binary");
                return Ok(bin);
            }
            Ok(None) => tracing::debug!(cmd = %name, "no existing rules, not using it"),
            Err(e) => {
                tracing::debug!(cmd = %name, error = %e, "iptables probe failed");
                attempts.push((name, e));
            }
        }
    }
    Err(DetectError { family, attempts })
}

/// Whether legacy iptables surely has no tables in the runner's netns,
/// known without running `iptables-legacy-save`: the kernel lists the
/// legacy tables instantiated in a netns in `ip{,6}_tables_names`, and the
/// save would dump exactly those. Reading it costs microseconds, while the
/// save instantiates the tables in a fresh netns (~7 ms). Only answers when
/// this thread is inside that netns (else `None`: run the save).
fn legacy_surely_empty(runner: &Runner, family: Family) -> Option<bool> {
    if !super::fast::in_netns_of(runner) {
        return None;
    }
    Some(super::fast::legacy_tables(family).is_none_or(|t| t.is_empty()))
}

/// `Ok(None)`: legacy without existing rules (not eligible).
fn probe(runner: &Runner, family: Family, variant: Variant) -> Result<Option<IptablesBinary>, ProbeError> {
    if variant == Variant::Legacy && legacy_surely_empty(runner, family) == Some(true) {
        return Ok(None);
    }
    let cmd = format!("{}{}", family.base(), variant.suffix());
    let save = runner.run_checked(&CommandSpec::new(format!("{cmd}-save"), Vec::<String>::new()))?;
    let existing_rules = has_existing_rules(&save.stdout);
    if variant == Variant::Legacy && !existing_rules {
        return Ok(None);
    }
    let out = runner.run(&CommandSpec::new(format!("{cmd}-save"), ["--version"]))?;
    let info = interpret_version(out.success(), &out.stdout, &out.stderr).map_err(|detail| ProbeError::Version {
        cmd: format!("{cmd}-save --version"),
        detail,
    })?;
    let bin = IptablesBinary {
        family,
        variant,
        version: info.version,
        nft: info.nft,
        existing_rules,
    };
    kernel_probe(runner, &bin)?;
    Ok(Some(bin))
}

fn kernel_probe(runner: &Runner, bin: &IptablesBinary) -> Result<(), ProbeError> {
    let args = |op: &str| {
        ["-t", "nat", op, "INPUT", "-p", "255", "-j", "RETURN"]
            .map(str::to_owned)
            .to_vec()
    };
    let out = runner.run_checked(&bin.command(args("-A")))?;
    if out.stderr.contains("does not exist") {
        return Err(ProbeError::Kernel {
            cmdline: out.cmdline,
            stderr: out.stderr,
        });
    }
    if let Err(e) = runner.run_checked(&bin.command(args("-D"))) {
        tracing::warn!(error = %e, "failed to delete the iptables probe rule");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_from_tool_output() {
        assert_eq!(
            parse_version("iptables-save v1.8.9 (nf_tables)"),
            Some(Version(1, 8, 9))
        );
        assert_eq!(parse_version("iptables v1.6.2"), Some(Version(1, 6, 2)));
        assert_eq!(parse_version("ip6tables-save v1.8 (legacy)"), Some(Version(1, 8, 0)));
        assert_eq!(
            parse_version("nftables v1.0.6 (Lester Gooch #5)"),
            Some(Version(1, 0, 6))
        );
        assert_eq!(parse_version("v1.8.10.1"), Some(Version(1, 8, 10)));
        // "v" in words before the version is skipped.
        assert_eq!(parse_version("save version v1.4.21"), Some(Version(1, 4, 21)));
        assert_eq!(parse_version("v1"), None);
        assert_eq!(parse_version("no version here"), None);
    }

    #[test]
    fn version_output_interpretation() {
        let nft = interpret_version(true, "iptables-save v1.8.9 (nf_tables)\n", "").unwrap();
        assert_eq!(
            nft,
            VersionInfo {
                version: Version(1, 8, 9),
                nft: true
            }
        );
        let legacy = interpret_version(true, "iptables-save v1.8.9 (legacy)\n", "").unwrap();
        assert!(!legacy.nft);
        let old = interpret_version(true, "", "iptables-save: unrecognized option '--version'").unwrap();
        assert_eq!(
            old,
            VersionInfo {
                version: Version(0, 0, 0),
                nft: false
            }
        );
        assert_eq!(interpret_version(false, "", "").unwrap().version, Version(0, 0, 0));
        assert!(interpret_version(true, "garbage", "").is_err());
    }

    #[test]
    fn existing_rules_threshold() {
        assert!(!has_existing_rules(""));
        assert!(!has_existing_rules("# a\n# b\n"));
        assert!(has_existing_rules("*nat\n:INPUT ACCEPT [0:0]\nCOMMIT\n"));
    }

    fn bin(variant: Variant, nft: bool, v: Version) -> IptablesBinary {
        IptablesBinary {
            family: Family::V4,
            variant,
            version: v,
            nft,
            existing_rules: false,
        }
    }

    #[test]
    fn lock_and_wait_follow_backend_and_version() {
        let modern = bin(Variant::Legacy, false, Version(1, 8, 9));
        assert!(modern.needs_wait());
        assert_eq!(modern.lock(), XtablesLock::EnvLockfile);
        let older = bin(Variant::Legacy, false, Version(1, 8, 5));
        assert_eq!(older.lock(), XtablesLock::BindMount);
        let ancient = bin(Variant::Plain, false, Version(1, 6, 1));
        assert!(!ancient.needs_wait());
        assert_eq!(ancient.lock(), XtablesLock::None);
        let nft = bin(Variant::Nft, true, Version(1, 8, 9));
        assert!(!nft.needs_wait());
        assert_eq!(nft.lock(), XtablesLock::None);
    }

    #[test]
    fn command_names_and_args() {
        let b = bin(Variant::Legacy, false, Version(1, 8, 9));
        assert_eq!(
            (b.cmd(), b.save_cmd(), b.restore_cmd()),
            (
                "iptables-legacy".to_owned(),
                "iptables-legacy-save".to_owned(),
                "iptables-legacy-restore".to_owned()
            )
        );
        let r = b.restore_command("* nat\nCOMMIT\n");
        assert_eq!(r.cmdline(), "iptables-legacy-restore --noflush --wait=30");
        assert_eq!(r.stdin.as_deref(), Some(&b"* nat\nCOMMIT\n"[..]));
        let v6 = IptablesBinary {
            family: Family::V6,
            ..bin(Variant::Plain, true, Version(1, 8, 9))
        };
        assert_eq!(v6.restore_command("").cmdline(), "ip6tables-restore --noflush");
        assert_eq!(v6.to_string(), "ip6tables v1.8.9 (nf_tables)");
    }
}
