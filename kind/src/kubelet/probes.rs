//! Container probes as kubelet runs them: startup, liveness and readiness
//! probes (httpGet, tcpSocket, exec; grpc is reported as unsupported), with
//! Kubernetes' defaults, delays, periods, timeouts and thresholds.
//!
//! - [`spec`]: a probe read from the container spec.
//! - [`state`]: the pure parts: [`Threshold`] counts consecutive runs into
//!   results, [`Health`] turns results into a container's `started`/`ready`
//!   and into restarts (held by the lifecycle).
//! - [`prober`]: one task per container instance, reporting each run to the
//!   pod's worker ([`Report`]): failures become `Unhealthy` events, results
//!   that cross a threshold become lifecycle inputs.
//! - `net` and `exec`: the checks themselves. httpGet and tcpSocket connect
//!   from the node's network namespace to the pod IP, as kubelet does; exec
//!   runs inside the container's namespaces, joined through its process.

mod exec;
mod net;
pub mod prober;
pub mod spec;
pub mod state;

pub use net::{HttpGet, Origin, http};
pub use prober::{Probers, Report, Sink, Target};
pub use spec::{Handler, ProbeKind, Settings};
pub use state::{Health, Outcome, Threshold};
