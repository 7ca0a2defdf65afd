//! Applying an nftables transaction inside a pod netns (§5).
//!
//! Client init: `nft` must be in the search path and `nft --version` must
//! report at least 1.0.1. The transaction is applied as a single `nft -f -`,
//! which the kernel commits atomically. Re-applying is idempotent because the
//! rendered transaction starts each table with `add table` + `flush table`.
//! There is no state verification and no locking.
//!
//! Deliberate difference: Istio's client (knftables) also dry-runs
//! `nft --check -f -` of a test table before the first transaction. That
//! aborted transaction costs ~9 ms (half of the whole apply in a fresh netns)
//! and proves nothing the real transaction does not: a kernel without
//! nf_tables makes `nft -f -` fail atomically, with nft's stderr in the error.
//!
//! Like [`crate::iptables::apply`], call it from a thread inside the pod
//! netns; each `nft` is also re-entered and sandboxed by the runner.

use std::path::Path;

use crate::iptables::apply::detect::{Version, parse_version};
use crate::netns::exec::{CommandError, CommandSpec, Runner};

/// Oldest `nft` accepted (knftables' requirement).
pub const MIN_NFT_VERSION: Version = Version(1, 0, 1);
const NFT: &str = "nft";

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftReport {
    /// The `nft` version.
    pub version: Version,
    /// Always true: the transaction is applied unconditionally.
    pub applied: bool,
}

/// Why applying the transaction failed; every variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// No `nft` binary on the host.
    #[error("nativeNftables is enabled, but the nft binary is missing on the host filesystem: {0}")]
    Missing(#[source] CommandError),
    /// `nft --version` failed or printed no version.
    #[error("nft --version: {0}")]
    Version(String),
    /// The installed `nft` is older than 1.0.1.
    #[error("nft version {found} is too old: at least {MIN_NFT_VERSION} is required")]
    TooOld {
        /// The version found.
        found: Version,
    },
    /// The transaction was rejected.
    #[error("nft transaction failed: {0}")]
    Apply(#[source] CommandError),
}

impl NftError {
    /// The stderr of the failing command, if one ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Apply(e) => e.stderr(),
            _ => None,
        }
    }
}

/// Applies `transaction` in the netns at `netns_path`, finding `nft` in `$PATH`.
pub fn apply(transaction: &str, netns_path: &Path) -> Result<NftReport, NftError> {
    apply_with(transaction, &Runner::new(netns_path))
}

/// [`apply`] with an explicit command runner.
pub fn apply_with(transaction: &str, runner: &Runner) -> Result<NftReport, NftError> {
    let version = init(runner)?;
    runner
        .run_checked(&CommandSpec::new(NFT, ["-f", "-"]).stdin(transaction))
        .map_err(NftError::Apply)?;
    tracing::debug!(%transaction, "nftables transaction applied");
    Ok(NftReport { version, applied: true })
}

/// Client init: presence and version. Returns the version.
pub fn init(runner: &Runner) -> Result<Version, NftError> {
    let out = match runner.run(&CommandSpec::new(NFT, ["--version"])) {
        Ok(out) => out,
        Err(e @ CommandError::NotFound { .. }) => return Err(NftError::Missing(e)),
        Err(e) => return Err(NftError::Version(e.to_string())),
    };
    let out = out.check().map_err(|e| NftError::Version(e.to_string()))?;
    check_version(&out.stdout)
}

/// Parses `nft --version` output and enforces the minimum version.
pub fn check_version(output: &str) -> Result<Version, NftError> {
    let found = parse_version(output).ok_or_else(|| NftError::Version(format!("no version in {:?}", output.trim())))?;
    if found < MIN_NFT_VERSION {
        return Err(NftError::TooOld { found });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gate() {
        assert_eq!(
            check_version("nftables v1.0.6 (Lester Gooch #5)\n").unwrap(),
            Version(1, 0, 6)
        );
        assert_eq!(
            check_version("nftables v1.0.1 (Fearless Fosdick #3)").unwrap(),
            Version(1, 0, 1)
        );
        let old = check_version("nftables v0.9.8 (E.D.S.)").unwrap_err();
        assert_eq!(
            old.to_string(),
            "nft version 0.9.8 is too old: at least 1.0.1 is required"
        );
        assert!(matches!(check_version("nope"), Err(NftError::Version(_))));
    }

    #[test]
    fn missing_nft_is_a_clear_error() {
        let runner = Runner::new(Path::new("/proc/self/ns/net")).with_search_path("/nonexistent-bin-dir");
        let err = apply_with("", &runner).unwrap_err();
        assert!(matches!(err, NftError::Missing(_)));
        let text = err.to_string();
        assert!(
            text.starts_with("nativeNftables is enabled, but the nft binary is missing on the host filesystem: "),
            "{text}"
        );
        assert!(text.contains("executable file not found"), "{text}");
    }
}
