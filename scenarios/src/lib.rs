//! The scenario matrix: what users run to prove `istio-cni` and
//! `istio-cni-agent` on a cluster. Each scenario is a plain function over the
//! harness's [`Cluster`](istio_cni_kind::cluster::Cluster), so one definition
//! runs on every backend (embedded, kind, existing).
//!
//! ```text
//! catalog (every scenario by stable name: cni/ptp/chained, race/repairPods, ...)
//!   └─ scenario::Scenario ── run(&Env) ──► Outcome { verdict, timeline, diagnostics }
//! env      which cluster backend, which binaries and images
//! deploy   the agent on a node (embedded: a node process; kind/existing: the DaemonSet)
//! fixtures injected pods per Istio version, annotation sets
//! families cni, race, skew, snapshot, platform
//! ```

pub mod catalog;
pub mod deploy;
pub mod env;
pub mod fixtures;
pub mod scenario;

pub mod cni;
pub mod platform;
pub mod race;
pub mod skew;
pub mod snapshot;
