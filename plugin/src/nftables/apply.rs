//! Applying an nftables transaction inside a pod netns.
//!
//! Default: in-process, over netlink. The rendered transaction text (what
//! `nft -f -` would read) is compiled to nf_tables messages
//! ([`super::transaction`]) and sent as one batch from a socket in the pod
//! netns ([`super::native`]); the kernel commits it atomically. No process
//! is executed. Re-applying is idempotent because each table is added and
//! flushed before its chains and rules, in the same batch.
//!
//! Fallback, for debugging only: with `ISTIO_CNI_NFT_EXEC=true` in the
//! plugin's environment the same text goes to `nft -f -` as Istio's client
//! does (client init: `nft` in the search path, `nft --version` at least
//! 1.0.1). It lets an operator tell a kernel refusal from an encoding bug
//! with nft's own diagnostics; the equivalence test uses it as the reference.
//!
//! Deliberate difference from Istio's client (knftables): no dry-run
//! `nft --check` of a test table before the first transaction; a kernel
//! without nf_tables fails the real batch atomically with a clear error.

use std::path::Path;

use std::fmt;

use super::names::Names;
use super::native::{NativeError, send_transaction};
use super::transaction::{CompileError, Transaction};
use crate::iptables::apply::detect::{Version, parse_version};
use crate::netns::exec::{CommandError, CommandSpec, Runner};

/// Set to `true` (or `1`) to apply through `nft -f -` instead of netlink.
pub const NFT_EXEC_ENV: &str = "ISTIO_CNI_NFT_EXEC";

/// Oldest `nft` accepted (knftables' requirement).
pub const MIN_NFT_VERSION: Version = Version(1, 0, 1);
const NFT: &str = "nft";

/// How the transaction reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// In-process netlink batch of `messages` messages.
    Netlink { messages: usize },
    /// `nft -f -` of this version (the debugging fallback).
    Nft { version: Version },
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Netlink { .. } => f.write_str("nf_tables netlink"),
            Method::Nft { version } => write!(f, "nft v{version}"),
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftReport {
    /// Netlink, or the `nft` binary and its version.
    pub method: Method,
    /// Always true: the transaction is applied unconditionally.
    pub applied: bool,
}

/// Why applying the transaction failed; every variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The transaction text holds something the compiler does not support
    /// (checked before anything is sent).
    #[error("compile nftables transaction: {0}")]
    Compile(#[from] CompileError),
    /// The netlink transaction failed (nf_tables missing, a message refused).
    #[error(transparent)]
    Kernel(#[from] NativeError),
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

/// Applies `transaction` in the netns at `netns_path` over netlink (or
/// through `nft` in `$PATH` when [`NFT_EXEC_ENV`] asks for it).
pub fn apply(transaction: &str, netns_path: &Path) -> Result<NftReport, NftError> {
    apply_with(transaction, &Runner::new(netns_path))
}

/// [`apply`] in the netns of `runner`, whose search path and sandbox are
/// used only by the `nft` fallback.
pub fn apply_with(transaction: &str, runner: &Runner) -> Result<NftReport, NftError> {
    if exec_requested() {
        apply_exec(transaction, runner)
    } else {
        apply_native(transaction, runner.netns())
    }
}

fn exec_requested() -> bool {
    exec_switch(std::env::var(NFT_EXEC_ENV).ok().as_deref())
}

/// Whether a value of [`NFT_EXEC_ENV`] turns the fallback on.
fn exec_switch(value: Option<&str>) -> bool {
    value.is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The in-process path: compile, then one netlink batch. Nothing is sent
/// when the text does not compile.
pub fn apply_native(transaction: &str, netns_path: &Path) -> Result<NftReport, NftError> {
    let tx = Transaction::compile(transaction, &mut Names::system())?;
    let messages = send_transaction(&tx, netns_path)?;
    tracing::debug!(
        messages,
        rules = tx.rule_count(),
        "nftables transaction applied over netlink"
    );
    Ok(NftReport {
        method: Method::Netlink { messages },
        applied: true,
    })
}

/// The `nft -f -` path (debugging fallback and test reference).
pub fn apply_exec(transaction: &str, runner: &Runner) -> Result<NftReport, NftError> {
    let version = init(runner)?;
    runner
        .run_checked(&CommandSpec::new(NFT, ["-f", "-"]).stdin(transaction))
        .map_err(NftError::Apply)?;
    tracing::debug!(%transaction, "nftables transaction applied by nft");
    Ok(NftReport {
        method: Method::Nft { version },
        applied: true,
    })
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
    fn a_transaction_that_does_not_compile_sends_nothing() {
        // The netns path is never opened: compiling fails first.
        let err = apply_native("add table inet t\nadd rule inet t c bogus", Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, NftError::Compile(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "compile nftables transaction: line 2 `add rule inet t c bogus`: unsupported statement \"bogus\""
        );
    }

    #[test]
    fn only_an_explicit_switch_selects_nft() {
        for on in ["1", "true", "TRUE"] {
            assert!(exec_switch(Some(on)), "{on}");
        }
        for off in [None, Some(""), Some("0"), Some("false"), Some("yes")] {
            assert!(!exec_switch(off), "{off:?}");
        }
    }

    #[test]
    fn method_names_the_binary_field() {
        assert_eq!(Method::Netlink { messages: 3 }.to_string(), "nf_tables netlink");
        assert_eq!(
            Method::Nft {
                version: Version(1, 0, 6)
            }
            .to_string(),
            "nft v1.0.6"
        );
    }

    #[test]
    fn missing_nft_is_a_clear_error() {
        let runner = Runner::new(Path::new("/proc/self/ns/net")).with_search_path("/nonexistent-bin-dir");
        let err = apply_exec("", &runner).unwrap_err();
        assert!(matches!(err, NftError::Missing(_)));
        let text = err.to_string();
        assert!(
            text.starts_with("nativeNftables is enabled, but the nft binary is missing on the host filesystem: "),
            "{text}"
        );
        assert!(text.contains("executable file not found"), "{text}");
    }
}
