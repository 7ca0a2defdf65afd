//! Programming a pod netns: detect families, build the config, render, apply,
//! route.
//!
//! [`program`] does all of it on one dedicated thread inside the pod netns
//! (see [`crate::netns`]):
//!
//! 1. list the netns addresses and decide IPv6 (docs/plugin.md#ipv6-detection, honouring DualStack);
//! 2. build the [`CaptureConfig`] and render it for the chosen backend;
//! 3. apply it ([`crate::iptables::apply`] or [`crate::nftables::apply`]);
//! 4. add `::6/128` on `lo` when IPv6 is on, and the TPROXY policy routing
//!    when TPROXY captures inbound traffic (docs/plugin.md#tproxy-routing).
//!
//! Programming the same netns twice with the same input succeeds and changes
//! nothing (iptables: state verification; nft: add+flush; routes: existing
//! identical entries are accepted).

use std::ffi::OsString;
use std::path::Path;

use crate::capture::{CaptureConfig, CaptureError, NodeEnv};
use crate::iptables::RestorePayload;
use crate::iptables::apply::{ApplyError, ApplyReport, VersionCache};
use crate::netns::exec::Runner;
use crate::netns::family::{NoValidAddress, detect_ipv6};
use crate::netns::netlink::{Netlink, NetlinkError, TproxyRouting};
use crate::netns::{NetnsError, run_in_netns};
use crate::nftables::apply::{NftError, NftReport};
use crate::redirect::Redirect;

/// Which rule engine programs the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-restore` (legacy or nft-based binaries, auto-detected).
    Iptables,
    /// Native nftables (`native_nftables: true`), over netlink.
    Nftables,
}

/// Knobs for [`program_with`]; the defaults are what the plugin uses.
#[derive(Debug, Clone)]
pub struct ProgramOptions {
    /// Where to find `iptables*`/`nft` (default: `$PATH`).
    pub search_path: Option<OsString>,
    /// Run each command in the mount sandbox (docs/plugin.md#exec-sandbox) (default: true).
    pub sandbox: bool,
    /// Where iptables versions and probe results are remembered (default: nowhere).
    pub cache: VersionCache,
}

impl Default for ProgramOptions {
    fn default() -> Self {
        Self {
            search_path: None,
            sandbox: true,
            cache: VersionCache::none(),
        }
    }
}

/// The rendered rules that were (or would have been) applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `iptables-restore` input per family.
    Iptables(RestorePayload),
    /// The nft transaction.
    Nftables(String),
}

/// How the rules were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// iptables: binaries chosen, residue, whether a restore ran.
    Iptables(ApplyReport),
    /// nftables: version; always applied.
    Nftables(NftReport),
}

/// Routes and addresses changed in the netns (docs/plugin.md#tproxy-routing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteReport {
    /// `Some(added)` when IPv6 is on: whether `::6/128` was newly added on lo.
    pub passthrough_v6_added: Option<bool>,
    /// TPROXY policy routing, when needed.
    pub tproxy: Option<TproxyRouting>,
}

/// The result of [`program`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed {
    /// The backend used.
    pub backend: Backend,
    /// The binary that applied the rules, e.g. `iptables-nft v1.8.9 (nf_tables)`
    /// or `nft v1.0.6`.
    pub binary: String,
    /// Whether IPv6 rules were generated (from the netns addresses).
    pub enable_ipv6: bool,
    /// Whether any rule change was applied (false: already programmed).
    pub applied: bool,
    /// The rendered payload.
    pub payload: Payload,
    /// Backend details.
    pub outcome: Applied,
    /// Address and route changes.
    pub routes: RouteReport,
}

/// Why programming failed; the message names the step.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// The netns could not be entered.
    #[error("enter pod netns: {0}")]
    Netns(#[from] NetnsError),
    /// A netlink step failed (listing addresses, adding `::6`, TPROXY routing).
    #[error("{step}: {source}")]
    Netlink {
        /// The step, e.g. `detect IPv6`.
        step: &'static str,
        /// The netlink failure.
        #[source]
        source: NetlinkError,
    },
    /// No address in the netns could decide the family.
    #[error("detect IPv6: {0}")]
    Family(#[from] NoValidAddress),
    /// The generator configuration is invalid (plugin env).
    #[error("build capture config: {0}")]
    Config(#[from] CaptureError),
    /// iptables detection or restore failed.
    #[error("apply iptables rules: {0}")]
    Iptables(#[from] ApplyError),
    /// nft missing, too old or the transaction failed.
    #[error("apply nftables rules: {0}")]
    Nftables(#[from] NftError),
}

impl ProgramError {
    /// The stderr of the failing command, if a command failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Iptables(e) => e.stderr(),
            Self::Nftables(e) => e.stderr(),
            _ => None,
        }
    }
}

/// Programs the pod netns at `netns_path` with the default options.
pub fn program(
    netns_path: &Path,
    redirect: &Redirect,
    node: &NodeEnv,
    backend: Backend,
) -> Result<Programmed, ProgramError> {
    program_with(netns_path, redirect, node, backend, &ProgramOptions::default())
}

/// [`program`] with explicit options (binary search path, sandbox switch).
pub fn program_with(
    netns_path: &Path,
    redirect: &Redirect,
    node: &NodeEnv,
    backend: Backend,
    options: &ProgramOptions,
) -> Result<Programmed, ProgramError> {
    let mut runner = Runner::new(netns_path).with_sandbox(options.sandbox);
    if let Some(path) = &options.search_path {
        runner = runner.with_search_path(path.clone());
    }
    let (redirect, node, cache) = (redirect.clone(), node.clone(), options.cache.clone());
    run_in_netns(netns_path, move || {
        program_inside(&redirect, &node, backend, &runner, &cache)
    })?
}

/// Steps 1–4; runs on the netns thread.
fn program_inside(
    redirect: &Redirect,
    node: &NodeEnv,
    backend: Backend,
    runner: &Runner,
    cache: &VersionCache,
) -> Result<Programmed, ProgramError> {
    let netlink = |step| move |source| ProgramError::Netlink { step, source };
    let nl = Netlink::connect().map_err(netlink("open netlink"))?;
    let addrs = nl.addresses().map_err(netlink("detect IPv6"))?;
    let enable_ipv6 = detect_ipv6(addrs.iter().map(|a| a.addr), redirect.dual_stack)?;
    let cfg = CaptureConfig::new(redirect, node, enable_ipv6)?;

    let (payload, outcome, binary, applied) = match backend {
        Backend::Iptables => {
            let payload = crate::iptables::render(&cfg);
            let report = crate::iptables::apply::apply_cached(&payload, runner, cache)?;
            let binary = report.v4.to_string();
            let applied = report.applied;
            (Payload::Iptables(payload), Applied::Iptables(report), binary, applied)
        }
        Backend::Nftables => {
            let text = crate::nftables::render(&cfg);
            let report = crate::nftables::apply::apply_with(&text, runner)?;
            let binary = report.method.to_string();
            (Payload::Nftables(text), Applied::Nftables(report), binary, true)
        }
    };

    let mut routes = RouteReport::default();
    if cfg.enable_ipv6 {
        routes.passthrough_v6_added = Some(nl.add_passthrough_v6().map_err(netlink("add ::6/128 on lo"))?);
    }
    if cfg.needs_tproxy_routes() {
        routes.tproxy = Some(
            nl.ensure_tproxy_routing(cfg.enable_ipv6)
                .map_err(netlink("add TPROXY rule and routes"))?,
        );
    }
    tracing::info!(%binary, enable_ipv6, applied, ?routes, "pod netns programmed");
    Ok(Programmed {
        backend,
        binary,
        enable_ipv6,
        applied,
        payload,
        outcome,
        routes,
    })
}
