//! Shared helpers for the conformance suite's integration tests: the
//! privilege gate, the plugin binaries, scratch dirs and fake plugins.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use istio_cni_conformance::{CaseResult, SuiteReport};
use istio_cni_kind::node::plugins::default_plugins_dir;

/// Whether the privileged tests can run here. Prints `SKIP: <test>: <reason>`
/// and returns false when they cannot — or panics when
/// `ISTIO_CNI_REQUIRE_PRIVILEGED=1`, so CI cannot skip silently.
pub fn privileged(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("not running as root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_owned())
    } else if !default_plugins_dir().join("bridge").exists() {
        Some(format!(
            "no CNI plugins in {} (install containernetworking-plugins or set CNI_PLUGINS_DIR)",
            default_plugins_dir().display()
        ))
    } else if !in_path("ip") {
        Some("ip (iproute2) not found in PATH".to_owned())
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if std::env::var("ISTIO_CNI_REQUIRE_PRIVILEGED").as_deref() == Ok("1") => {
            panic!("{test}: privileged test cannot run and ISTIO_CNI_REQUIRE_PRIVILEGED=1: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIP: {test}: {reason}");
            false
        }
    }
}

fn in_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// One of Debian's plugins.
pub fn debian_plugin(name: &str) -> PathBuf {
    default_plugins_dir().join(name)
}

/// The workspace's `istio-cni` binary next to this test's profile dir
/// (`<target>/debug/istio-cni`), built with cargo when it is missing.
pub fn istio_cni_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join("istio-cni");
    if bin.is_file() {
        return bin;
    }
    let target_dir = profile_dir.parent().expect("the target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "istio-cni", "--bin", "istio-cni", "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("{} is missing; building it: {cmd:?}", bin.display());
    let status = cmd.status().unwrap_or_else(|e| panic!("running {cargo}: {e}"));
    assert!(status.success(), "building istio-cni failed: {status}");
    assert!(bin.is_file(), "{} is still missing after the build", bin.display());
    bin
}

/// A fresh directory removed on drop (shared with the other test suites).
#[allow(unused_imports)] // not every suite uses it
pub use istio_cni_kind::testing::Scratch;

/// Writes an executable `/bin/sh` script.
pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The report as printed, for assertion messages.
pub fn printed(report: &SuiteReport) -> String {
    report.to_string()
}

/// The failed cases.
pub fn failures(report: &SuiteReport) -> Vec<&CaseResult> {
    report.cases.iter().filter(|c| c.failed()).collect()
}

/// The case `name`, which must have run.
pub fn case<'r>(report: &'r SuiteReport, name: &str) -> &'r CaseResult {
    report
        .case(name)
        .unwrap_or_else(|| panic!("case {name} did not run:\n{report}"))
}
