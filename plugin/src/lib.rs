//! `istio-cni`: Istio's chained CNI plugin for the sidecar data plane, in Rust.
//!
//! The pipeline, one module per step:
//!
//! ```text
//! pod ──► decision (skip or redirect) ──► redirect (validated annotations/env)
//!     ──► capture (the generator config, per node and netns) ──► iptables | nftables (rules)
//!     ──► program (applied inside the pod's network namespace, via netns)
//! ```
//!
//! `validate` is the `istio-validation` init-container probe; `cli` holds the
//! `render` and `validate` subcommands.

pub mod api;
pub mod bounded;
pub mod capture;
pub mod cli;
pub mod cni;
pub mod iptables;
pub mod netns;
pub mod nftables;
pub mod pod;
pub mod program;
pub mod redirect;
pub mod rules;
pub mod validate;
