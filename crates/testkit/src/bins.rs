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
