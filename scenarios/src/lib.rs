//! The scenario matrix: what users run to prove `istio-cni` and
//! `istio-cni-agent` on a cluster. Each scenario is a plain function over the
//! harness's [`Cluster`](istio_cni_kind::cluster::Cluster), so one definition
//! runs on every backend (embedded, kind, existing).
//!
//! ```text
//! catalog (every scenario by stable name: cni/ptp/chained, race/repairPods, ...)
//!   └─ scenario::Scenario ── run(&Env) ──► Outcome { verdict, timeline, diagnostics }
//! env      which cluster backend, which binaries and images
//! system   the system under test: the project's manifests (default), a Helm chart, or manifest files; features
//! daemonset the system under test on every backend: the manifests applied, rolled out, deleted
//! nodefiles a node's CNI files, read the same way on every backend, and their differences
//! fixtures injected pods per Istio version, annotation sets
//! error    why a body stops (Stop) and what failed under it (Error), causes kept
//! failure  one-line reasons and the details under them (rules diffs, logs, counted events)
//! save     iptables-save dumps table by table, without comments and counters, for comparing
//! families cni, race, skew, snapshot, platform, lifecycle (upgrade, scale-out, job)
//! ```

pub mod catalog;
pub mod daemonset;
pub mod env;
pub mod error;
pub mod failure;
pub mod fixtures;
pub mod harness;
pub mod nodefiles;
pub mod save;
pub mod scenario;
pub mod system;

pub mod cni;
pub mod lifecycle;
pub mod platform;
pub mod race;
pub mod skew;
pub mod snapshot;
