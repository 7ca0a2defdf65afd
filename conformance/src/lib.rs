//! The project's conformance runner (`istio-cni-conformance run`): the
//! CNI-spec cases below, and the scenario matrix of `istio-cni-scenarios`,
//! selected by suite and name ([`suites`]), run in parallel ([`runner`])
//! with live [`progress`], reported as a table, JUnit XML and HTML
//! ([`report`]).
//!
//! The CNI-spec cases are a black-box conformance suite for chained CNI plugins.
//!
//! The suite runs a plugin binary the way a container runtime does: in a
//! real node network namespace, for real pod network namespaces, after a
//! real primary plugin (Debian's `bridge` or `ptp` with `host-local`) whose
//! result it must pass through — and checks it against the CNI 1.1 contract
//! (SPEC.md, CONVENTIONS.md and libcni's skel; the case list is in
//! [`cases`]). Results are [`SuiteReport`]s of named cases.
//!
//! ```no_run
//! use istio_cni_conformance::{SuiteOptions, Totals, run_suite};
//! let report = run_suite(&SuiteOptions::new("/usr/lib/cni/portmap"));
//! print!("{report}");
//! assert!(report.success());
//! ```

pub mod cases;
pub mod cli;
pub mod compare;
pub mod harness;
pub mod invoke;
pub mod options;
pub mod prepare;
pub mod progress;
pub mod report;
pub mod results;
pub mod runner;
pub mod suites;
pub mod userns;

pub use options::{Primary, Suite, SuiteOptions};
pub use report::{CaseResult, Finding, SuiteReport, Verdict};
pub use results::{Judged, Totals};

use harness::Harness;

/// The name of the case reporting a failed setup.
pub const SETUP_CASE: &str = "setup";

/// Runs the suite. A setup failure (not root, plugin missing, ...) is one
/// failed case named [`SETUP_CASE`].
pub fn run_suite(opts: &SuiteOptions) -> SuiteReport {
    run_suite_with(opts, |_| {})
}

/// Runs the suite, handing every case result to `on_case` as it finishes.
pub fn run_suite_with(opts: &SuiteOptions, mut on_case: impl FnMut(&CaseResult)) -> SuiteReport {
    let mut report = SuiteReport::default();
    let mut record = |result: CaseResult| {
        on_case(&result);
        report.cases.push(result);
    };
    match Harness::new(opts) {
        Err(why) => record(CaseResult::new(SETUP_CASE, Finding::fail(why.to_string()))),
        Ok(harness) => {
            for case in cases::all(opts).into_iter().filter(|c| opts.selects(&c.name)) {
                harness.set_case(&case.name);
                let finding = case.run(&harness);
                record(CaseResult::new(case.name, finding));
            }
        }
    }
    report
}
