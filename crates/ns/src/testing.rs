//! Test gates and scratch space for this crate's own tests (the crate sits
//! below every other, so it cannot use the workspace's test support).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this process may create namespaces. When it may not, prints
/// `SKIP: <test>: <reason>` and returns false, or panics when
/// `ISTIO_CNI_REQUIRE_PRIVILEGED=1` (CI) so that a skip never passes silently.
pub(crate) fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let reason = "not root: namespaces cannot be created or entered";
    if std::env::var("ISTIO_CNI_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {reason}, and ISTIO_CNI_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("SKIP: {test}: {reason}");
    false
}

static SCRATCH: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory unique to this process and call, removed on
/// drop (declare namespaces pinned in it after it, so they unpin first).
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(label: &str) -> Self {
        let n = SCRATCH.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("linux-ns-test-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// [`privileged`] and a scratch directory named after the test.
pub(crate) fn privileged_scratch(test: &str) -> Option<Scratch> {
    privileged(test).then(|| Scratch::new(&test.replace("::", "-")))
}
