//! The `race/...` scenarios.

use crate::scenario::Scenario;

/// Every `race/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}
