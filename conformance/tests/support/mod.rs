//! Shared helpers for the conformance suite's integration tests: the
//! privilege gate, the plugin binaries, scratch dirs and fake plugins.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use istio_cni_conformance::{CaseResult, Judged, SuiteReport};
use istio_cni_kind::node::plugins::default_plugins_dir;

#[allow(unused_imports)] // not every suite uses each
pub use testkit::{Need, Scratch, gate};

/// What running the spec cases needs: root, the CNI plugins and `ip`.
pub const SPEC: &[Need] = &[Need::Root, Need::CniPlugins, Need::Tool("ip")];

/// One of Debian's plugins.
pub fn debian_plugin(name: &str) -> PathBuf {
    default_plugins_dir().join(name)
}

/// The workspace's `istio-cni` binary, built when missing.
pub fn istio_cni_bin() -> PathBuf {
    testkit::workspace_bin("istio-cni", "istio-cni")
}

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

/// Asserts the case's note (what it observed) starts with `prefix`.
pub fn assert_note_starts(c: &CaseResult, prefix: &str) {
    assert!(
        c.note.as_deref().is_some_and(|n| n.starts_with(prefix)),
        "note of {c} does not start with {prefix:?}"
    );
}
