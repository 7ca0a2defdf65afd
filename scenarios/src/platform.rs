//! The `platform/...` scenarios.

use crate::scenario::Scenario;

/// Every `platform/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    Vec::new()
}
