//! The `snapshot/...` scenarios.

use crate::scenario::Scenario;

/// Every `snapshot/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}
