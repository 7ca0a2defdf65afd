//! The `skew/...` scenarios.

use crate::scenario::Scenario;

/// Every `skew/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}
