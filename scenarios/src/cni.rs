//! The `cni/...` scenarios.

use crate::scenario::Scenario;

/// Every `cni/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}
