//! The workspace's `istio-cni` against the whole CNI suite, with pods in an
//! excluded namespace (no API server needed): every case passes — including
//! STATUS and GC, since istio-cni claims 1.1.0 — and none is skipped.
//!
//! Needs root; without it the test prints `SKIP:` and passes (it panics when
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use istio_cni_conformance::options::DEFAULT_VERSIONS;
use istio_cni_conformance::{Judged, SuiteOptions, Totals, Verdict, run_suite};
use serde_json::json;
use support::{SPEC, Scratch, assert_note_starts, case, failures, gate, istio_cni_bin, printed};

fn istio_options(run_dir: &std::path::Path) -> SuiteOptions {
    let mut opts = SuiteOptions::new(istio_cni_bin());
    opts.pod_namespace = "kube-system".to_owned();
    opts.config_extra = json!({
        "exclude_namespaces": ["kube-system"],
        "cni_agent_run_dir": run_dir.to_string_lossy(),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    opts
}

#[test]
fn istio_cni_passes_every_case() {
    if !gate("istio_cni_passes_every_case", SPEC) {
        return;
    }
    let scratch = Scratch::new("istio-run");
    let report = run_suite(&istio_options(scratch.path()));
    println!("{report}");
    assert!(
        failures(&report).is_empty(),
        "istio-cni failed cases:\n{}",
        printed(&report)
    );
    assert_eq!(
        report.skipped(),
        0,
        "istio-cni claims every version; nothing may be skipped:\n{report}"
    );
    // The 1.1.0-only checks ran.
    for name in [
        "status/ready[1.1.0]",
        "status/refused[1.0.0]",
        "gc/valid-attachments[1.1.0]",
        "gc/legacy-attachments[1.1.0]",
        "gc/refused[1.0.0]",
    ] {
        assert!(case(&report, name).passed(), "{name}:\n{report}");
    }
    for v in DEFAULT_VERSIONS {
        assert!(case(&report, &format!("add/prev-result[{v}]")).passed());
        // istio-cni prints a bare result when misconfigured as first plugin.
        let bare = case(&report, &format!("add/no-prev-result[{v}]"));
        assert_note_starts(bare, "succeeded");
    }
    assert_eq!(
        case(&report, "status/ready[1.1.0]").note.as_deref(),
        Some("ready (exit 0)"),
        "without status_check istio-cni is always ready"
    );
    assert!(
        report.summary().ends_with("0 failed, 0 skipped"),
        "{}",
        report.summary()
    );
}

#[test]
fn istio_cni_status_check_reports_not_available() {
    if !gate("istio_cni_status_check_reports_not_available", SPEC) {
        return;
    }
    // With `status_check` and no kubeconfig in the agent run dir, STATUS is
    // code 50 — accepted by the suite and reported.
    let scratch = Scratch::new("istio-status");
    let mut opts = istio_options(scratch.path());
    opts.config_extra.insert("status_check".to_owned(), json!(true));
    opts.only = vec!["status/".to_owned()];
    let report = run_suite(&opts);
    println!("{report}");
    let ready = case(&report, "status/ready[1.1.0]");
    assert_eq!(ready.outcome, Verdict::Pass, "{ready}");
    assert_note_starts(ready, "not ready: code 50");
    assert!(case(&report, "status/refused[1.0.0]").passed());
    assert_eq!(report.cases.len(), 2, "--only status/ selects two cases:\n{report}");
}
