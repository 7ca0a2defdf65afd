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

static SCRATCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh directory, removed with everything in it on drop (also when the
/// test panics). Unique per process and call, so parallel tests never share.
#[derive(Debug)]
pub struct Scratch {
    pub path: std::path::PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("istio-cni-test-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Scratch { path }
    }

    pub fn join(&self, p: impl AsRef<std::path::Path>) -> std::path::PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A workspace binary in this test's target dir (`target/<profile>`),
/// built with cargo first when missing: another package's binaries are not
/// built for a test binary.
pub fn workspace_bin(name: &str, package: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current executable: {e}"));
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap_or_else(|| panic!("{} has no target dir", exe.display()));
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("running cargo: {e}"));
        assert!(status.success(), "building {name}");
    }
    path
}
