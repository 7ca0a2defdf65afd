//! The workspace's test support (`testkit`), narrowed to what this crate's
//! tests ask for: root, and a scratch directory named after the test.

pub(crate) use testkit::Scratch;

/// Whether this process may create namespaces (`testkit::gate`: a skip
/// prints `SKIP:`, and panics under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).
pub(crate) fn privileged(test: &str) -> bool {
    testkit::gate(test, &[testkit::Need::Root])
}

/// [`privileged`] and a scratch directory named after the test.
pub(crate) fn privileged_scratch(test: &str) -> Option<Scratch> {
    privileged(test).then(|| Scratch::new(test))
}
