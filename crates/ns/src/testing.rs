//! The workspace's test support (`testkit`), narrowed to what this crate's
//! tests ask for: root, and a scratch directory named after the test.

pub(crate) use testkit::{Scratch, privileged};

/// [`privileged`] and a scratch directory named after the test.
pub(crate) fn privileged_scratch(test: &str) -> Option<Scratch> {
    privileged(test).then(|| Scratch::new(test))
}
