//! The workspace's binaries, for tests of another package.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `name` from package `package` in this test's profile dir
/// (`<target>/<profile>`), built with cargo first when it is missing: cargo
/// builds only the tested package's own binaries for a test.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test binary's path: {e}"));
    // <target>/<profile>/deps/<test binary>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} does not live in <target>/<profile>/deps", exe.display()));
    let bin = profile.join(name);
    if bin.is_file() {
        return bin;
    }
    let target = profile
        .parent()
        .unwrap_or_else(|| panic!("{} has no target dir", profile.display()));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", package, "--bin", name, "--target-dir"])
        .arg(target);
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("{} is missing; building it: {cmd:?}", bin.display());
    let status = cmd.status().unwrap_or_else(|e| panic!("running {cargo}: {e}"));
    assert!(status.success(), "building {name} of {package} failed: {status}");
    assert!(bin.is_file(), "{} is still missing after the build", bin.display());
    bin
}

/// Puts the executable `from` at `to` so it can be run at once: a hard link
/// where both are on one filesystem, else a copy. A copy made while other
/// test threads fork can fail to exec with "Text file busy": a forked child
/// holds the copy's write descriptor until it execs itself. A link has no
/// such descriptor.
pub fn place_exe(from: &Path, to: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(to);
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) || e.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::copy(from, to).map(|_| ())
        }
        Err(e) => Err(e),
    }
}
