//! Applying `iptables-restore` payloads inside a pod netns (docs/plugin.md#applying-iptables).
//!
//! [`apply`] must run on a thread that is inside the pod netns (for example
//! inside [`crate::netns::run_in_netns`]); every external command it starts is
//! additionally re-entered into the netns and sandboxed per docs/plugin.md#exec-sandbox by
//! [`crate::netns::exec::Runner`].
//!
//! Steps: detect the binary per family ([`fast`] from the kernel and the
//! [`cache`] when that is certain, else the probing [`detect`]), verify the
//! current state against the payload ([`state`]), and run `<restore>
//! --noflush` for IPv4, then IPv6 when enabled, only if something differs.
//! Re-applying the same payload to an already-programmed netns is therefore
//! a no-op.

pub mod cache;
pub mod detect;
pub mod fast;
pub mod netlink_detect;
pub mod state;

use std::path::Path;

pub use cache::VersionCache;
pub use detect::{DetectError, Family, IptablesBinary, Variant, Version};
use state::{RuleSet, Verdict};

use super::RestorePayload;
use crate::netns::exec::{CommandError, CommandSpec, Runner};

/// What [`apply`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The IPv4 binary used.
    pub v4: IptablesBinary,
    /// The IPv6 binary; present iff IPv6 is enabled.
    pub v6: Option<IptablesBinary>,
    /// Rules were already present in the netns before applying.
    pub residue: bool,
    /// Whether a restore ran (false: the netns already matched).
    pub applied: bool,
}

/// Why applying failed; every variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No usable iptables (IPv4), or ip6tables while IPv6 is enabled.
    #[error("iptables binary detection failed: {0}")]
    Detect(#[from] DetectError),
    /// The restore command failed.
    #[error("{family} {cmd} failed: {}", describe_restore_failure(source))]
    Restore {
        /// Which family's payload.
        family: Family,
        /// The restore binary.
        cmd: String,
        /// The command failure (command line, status, stderr).
        #[source]
        source: CommandError,
    },
}

impl ApplyError {
    /// The stderr of the failing command, if one ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Restore { source, .. } => source.stderr(),
            Self::Detect(_) => None,
        }
    }
}

/// Applies `payload` in the netns at `netns_path`, finding binaries in `$PATH`.
///
/// Call it from a thread inside that netns (see the module docs).
pub fn apply(payload: &RestorePayload, netns_path: &Path) -> Result<ApplyReport, ApplyError> {
    apply_with(payload, &Runner::new(netns_path))
}

/// [`apply`] with an explicit command runner (search path, sandbox switch),
/// without a version cache.
pub fn apply_with(payload: &RestorePayload, runner: &Runner) -> Result<ApplyReport, ApplyError> {
    apply_cached(payload, runner, &VersionCache::none())
}

/// [`apply_with`], remembering binary versions and probe results in `cache`.
pub fn apply_cached(
    payload: &RestorePayload,
    runner: &Runner,
    cache: &VersionCache,
) -> Result<ApplyReport, ApplyError> {
    let ((v4, v4_save), v6) = detect_binaries(runner, payload.v6.is_some(), cache)?;
    let mut families = vec![(verify(runner, &v4, v4_save, &payload.v4), !payload.v4.trim().is_empty())];
    if let (Some((bin, save)), Some(text)) = (&v6, payload.v6.as_deref()) {
        families.push((verify(runner, bin, save.clone(), text), !text.trim().is_empty()));
    }
    let v6 = v6.map(|(bin, _)| bin);
    let verdict = state::combine(&families);
    if verdict.residue && verdict.delta {
        tracing::warn!(
            "existing iptables rules differ from the expected ones; reconcile is recommended (not done in CNI mode)"
        );
    }

    if verdict.delta {
        restore(runner, &v4, &payload.v4)?;
        if let (Some(text), Some(bin)) = (payload.v6.as_deref(), &v6) {
            restore(runner, bin, text)?;
        }
    } else {
        tracing::info!("iptables rules already in place; nothing to apply");
    }
    log_final_state(runner, &v4, v6.as_ref());

    Ok(ApplyReport {
        v4,
        v6,
        residue: verdict.residue,
        applied: verdict.delta,
    })
}

/// A binary and, when detection already read it, the `-save` output.
type Found = (IptablesBinary, Option<String>);

/// One family: the probe-free answer when it is certain, else the probing
/// sequence (whose findings are then remembered for the next run).
pub fn detect_family(runner: &Runner, family: Family, cache: &VersionCache) -> Result<Found, DetectError> {
    if let Some(found) = fast::detect(runner, family, cache) {
        return Ok((found.bin, Some(found.save)));
    }
    let bin = detect::detect(runner, family)?;
    fast::remember(runner, &bin, cache);
    Ok((bin, None))
}

/// Detects the IPv4 binary and, only when IPv6 is enabled, the IPv6 one (the
/// two run in parallel; each family has its own tables).
///
/// Deliberate difference: Istio also probes and verifies ip6tables when IPv6
/// is disabled (failures only logged). Skipping it halves the probe cost
/// (each nf_tables probe `-D` costs ~15 ms) and avoids a spurious "delta"
/// from stale IPv6 chains forcing a doomed re-restore of IPv4.
fn detect_binaries(runner: &Runner, ipv6: bool, cache: &VersionCache) -> Result<(Found, Option<Found>), ApplyError> {
    if !ipv6 {
        return Ok((detect_family(runner, Family::V4, cache)?, None));
    }
    let (v4, v6) = std::thread::scope(|s| {
        let v6 = s.spawn(|| detect_family(runner, Family::V6, cache));
        let v4 = detect_family(runner, Family::V4, cache);
        let v6 = v6.join().unwrap_or_else(|_| {
            Err(DetectError {
                family: Family::V6,
                attempts: Vec::new(),
            })
        });
        (v4, v6)
    });
    Ok((v4?, Some(v6?)))
}

/// docs/plugin.md#state-verification for one family: quiet save, parse, compare, `-C` checks.
/// `saved`: the `-save` output when detection has just read it.
fn verify(runner: &Runner, bin: &IptablesBinary, saved: Option<String>, expected_text: &str) -> Verdict {
    let expected = RuleSet::parse(expected_text);
    let saved = saved.map(Ok).unwrap_or_else(|| {
        runner
            .run_checked(&CommandSpec::new(bin.save_cmd(), Vec::<String>::new()))
            .map(|out| out.stdout)
    });
    let current = match saved {
        Ok(text) => Some(RuleSet::parse(&text)),
        Err(e) => {
            tracing::debug!(error = %e, "save failed; treating the netns as empty");
            None
        }
    };
    state::verify(current.as_ref(), &expected, |rule| {
        let mut args = vec!["-t".to_owned(), rule.table.clone()];
        args.extend(rule.check_args());
        runner.run(&bin.command(args)).is_ok_and(|out| out.success())
    })
}

fn restore(runner: &Runner, bin: &IptablesBinary, payload: &str) -> Result<(), ApplyError> {
    let cmd = bin.restore_cmd();
    tracing::debug!(%cmd, family = %bin.family, "applying iptables rules");
    runner
        .run_checked(&bin.restore_command(payload))
        .map(drop)
        .map_err(|source| ApplyError::Restore {
            family: bin.family,
            cmd,
            source,
        })
}

fn log_final_state(runner: &Runner, v4: &IptablesBinary, v6: Option<&IptablesBinary>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for bin in std::iter::once(v4).chain(v6) {
        if let Ok(out) = runner.run(&CommandSpec::new(bin.save_cmd(), Vec::<String>::new())) {
            tracing::debug!(family = %bin.family, state = %out.stdout, "Final iptables state");
        }
    }
}

/// Meaning of an xtables exit code (`xtables other problem`, …).
pub fn xtables_meaning(code: i32) -> Option<&'static str> {
    Some(match code {
        1 => "xtables other problem",
        2 => "xtables parameter problem",
        3 => "xtables version problem",
        4 => "xtables resource problem",
        _ => return None,
    })
}

/// `<meaning>: <stderr after the first colon>; <command error with raw stderr>`.
fn describe_restore_failure(err: &CommandError) -> String {
    match err {
        CommandError::Failed {
            code: Some(code),
            stderr,
            ..
        } => match xtables_meaning(*code) {
            Some(meaning) => {
                let detail = stderr.split_once(':').map_or(stderr.as_str(), |(_, rest)| rest).trim();
                format!("{meaning}: {detail}; {err}")
            }
            None => err.to_string(),
        },
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtables_codes_have_meanings() {
        assert_eq!(xtables_meaning(2), Some("xtables parameter problem"));
        assert_eq!(xtables_meaning(4), Some("xtables resource problem"));
        assert_eq!(xtables_meaning(0), None);
        assert_eq!(xtables_meaning(5), None);
    }

    #[test]
    fn restore_failure_text_has_meaning_cmdline_and_stderr() {
        let err = ApplyError::Restore {
            family: Family::V4,
            cmd: "iptables-nft-restore".into(),
            source: CommandError::Failed {
                cmdline: "iptables-nft-restore --noflush".into(),
                code: Some(1),
                status: "exit status: 1".into(),
                stderr: "iptables-nft-restore: line 3 failed: Chain already exists.\n".into(),
            },
        };
        let text = err.to_string();
        assert!(
            text.starts_with("IPv4 iptables-nft-restore failed: xtables other problem: line 3 failed"),
            "{text}"
        );
        assert!(
            text.contains("`iptables-nft-restore --noflush` failed (exit status: 1)"),
            "{text}"
        );
        assert!(
            text.contains("iptables-nft-restore: line 3 failed: Chain already exists."),
            "{text}"
        );
        assert_eq!(
            err.stderr(),
            Some("iptables-nft-restore: line 3 failed: Chain already exists.\n")
        );
    }
}
