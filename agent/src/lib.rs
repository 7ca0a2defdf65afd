//! `istio-cni-agent`: the node agent (DaemonSet) of the Istio CNI plugin for
//! the sidecar data plane.
//!
//! ```text
//! config ──► install (one pass: binaries, kubeconfig, CNI config entry)
//!        ──► watch (re-converge when the primary CNI, the binaries or the token change)
//!        ──► server (healthz/readyz, metrics, the plugin's log socket, this node's pod cache)
//!        ──► repair (pods that raced the install: repair in place, delete or label)
//!        ──► taint (opt-in: remove this node's not-ready taint once installed)
//! cleanup on SIGTERM/SIGINT (opt-in safe upgrade: kept while the DaemonSet rolls),
//! or `istio-cni-agent uninstall` for a node whose agent died.
//! manifest renders the DaemonSet and RBAC from Istio's Helm values.
//! ```

pub mod config;
pub mod install;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod repair;
pub mod run;
pub mod server;
pub mod shutdown;
pub mod taint;
pub mod upgrade;
pub mod watch;
