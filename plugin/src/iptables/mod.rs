//! iptables: rendering the `iptables-restore` payload, and applying it inside
//! a pod netns.

pub mod apply;
mod restore;

pub use restore::restore_text;

use crate::capture::CaptureConfig;
use crate::rules::{Family, plan};

/// The `iptables-restore --noflush` input for each family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePayload {
    pub v4: String,
    /// Present iff IPv6 is enabled for the pod.
    pub v6: Option<String>,
}

/// Renders the restore payloads for a configuration.
pub fn render(cfg: &CaptureConfig) -> RestorePayload {
    let rules = plan(cfg);
    RestorePayload {
        v4: restore_text(&rules, Family::V4),
        v6: cfg.enable_ipv6.then(|| restore_text(&rules, Family::V6)),
    }
}
