//! The workspace's test support (`testkit`) under the path some suites
//! still import it from; new tests use `testkit` directly.

pub use testkit::{Scratch, privileged, workspace_bin};
