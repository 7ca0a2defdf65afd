//! Helpers for tests that need network namespaces.

/// Whether this process may run a privileged (netns) test. When it may not,
/// prints `SKIP: <test>: <reason>` and returns false — or panics when
/// `ISTIO_CNI_REQUIRE_PRIVILEGED=1` (as `ci/test` sets), so a skip never
/// passes silently there.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let reason = "not root (or root of a user namespace): network namespaces cannot be created";
    if std::env::var("ISTIO_CNI_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {reason}, and ISTIO_CNI_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("SKIP: {test}: {reason}");
    false
}
