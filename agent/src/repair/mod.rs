//! The repair controller (istio-cni-repair-and-skew.md §2).
//!
//! CONTRACT (used by `run.rs`; keep these signatures):
//!
//! ```ignore
//! /// Starts the controller on the current tokio runtime; returns once the
//! /// initial pod list has synced. `None` mode → not started (caller checks).
//! pub async fn start(client: kube::Client, settings: RepairSettings, native_nftables: bool,
//!                    metrics: Metrics) -> Result<RepairController, RepairError>;
//! impl RepairController { pub async fn shutdown(self); }
//! ```
