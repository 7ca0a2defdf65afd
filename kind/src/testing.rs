//! The workspace's test support (`testkit`) under the path some suites
//! still import it from; new tests use `testkit` directly.

pub use testkit::{Scratch, workspace_bin};

/// Whether this process may run a test that needs root (`testkit::gate`).
pub fn privileged(test: &str) -> bool {
    testkit::gate(test, &[testkit::Need::Root])
}
