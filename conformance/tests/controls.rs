//! Controls: Debian's `portmap` and `tuning` (containernetworking-plugins
//! 1.1.1) are correct third-party chained plugins, so the suite must not
//! fail them. They speak CNI up to 1.0.0: the 1.1.0 cases (and STATUS/GC,
//! which need 1.1.0) are skipped, each saying so. With both primaries.
//!
//! Needs root; without it the tests print `SKIP:` and pass (they panic when
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use istio_cni_conformance::{Judged, Primary, SuiteOptions, SuiteReport, Totals, Verdict, run_suite};
use rstest::rstest;
use support::{SPEC, assert_note_starts, case, debian_plugin, failures, gate, printed};

/// Every skip of a plugin that stops at 1.0.0 must be for that reason.
fn assert_only_1_1_0_skips(report: &SuiteReport, plugin: &str) {
    for c in &report.cases {
        if let Verdict::Skip(reason) = &c.outcome {
            assert!(
                reason.starts_with(&format!("{plugin} does not claim 1.1.0")),
                "unexpected skip {c}"
            );
        }
    }
}

#[rstest]
fn debian_plugin_has_no_failures(
    #[values("portmap", "tuning")] plugin: &str,
    #[values(Primary::Bridge, Primary::Ptp)] primary: Primary,
) {
    let name = format!("debian_plugin_has_no_failures[{plugin},{}]", primary.plugin_type());
    if !gate(&name, SPEC) {
        return;
    }
    let mut opts = SuiteOptions::new(debian_plugin(plugin));
    opts.primary = primary;
    let report = run_suite(&opts);
    println!("{name}\n{report}");
    assert!(
        failures(&report).is_empty(),
        "{name}: the suite failed a correct plugin:\n{}",
        printed(&report)
    );
    assert_only_1_1_0_skips(&report, plugin);
    // 5 versions: 1.1.0 skipped in add x2, del, check; STATUS x2, GC x3.
    assert_eq!(report.skipped(), 9, "{report}");
    // Debian's plugins refuse ADD without prevResult (skel wraps the error).
    let first = case(&report, "add/no-prev-result[1.0.0]");
    assert_note_starts(first, "refused with code");
    assert!(case(&report, "chain/runner").passed());
    assert!(case(&report, "stdout/single-json-document").passed());
}
