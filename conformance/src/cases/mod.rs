//! The named cases of the CNI suite, one module per area of the contract
//! (docs/cni-spec.md#conformance-cases). Version-driven cases are
//! generated per `--versions` entry and named `<area>/<case>[<version>]`.
//!
//! A case returns `Ok(Finding)` (pass, pass with a note, skip) or `Err(why)`
//! for a failure, so checks chain with `?`.

pub mod add;
pub mod chain;
pub mod check;
pub mod concurrency;
pub mod config;
pub mod del;
pub mod env;
pub mod gc;
pub mod status;
pub mod stdout;
pub mod tolerance;
pub mod version;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::harness::Harness;
use crate::options::SuiteOptions;
use crate::report::Finding;

/// What a case body returns: a finding, or why it failed.
pub type CaseOutcome = Result<Finding, String>;

type CaseFn = Box<dyn Fn(&Harness) -> CaseOutcome + Send + Sync>;

/// A named check.
pub struct Case {
    /// The name printed in the report.
    pub name: String,
    run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Case {
    /// A case called `name` running `run`.
    pub fn new(name: impl Into<String>, run: impl Fn(&Harness) -> CaseOutcome + Send + Sync + 'static) -> Self {
        Self {
            name: name.into(),
            run: Box::new(run),
        }
    }

    /// A case called `name` running `run` with the base version (the first
    /// requested one the plugin claims); a skip when it claims none.
    pub fn at_base(name: impl Into<String>, run: fn(&Harness, &str) -> CaseOutcome) -> Self {
        Self::new(name, move |h: &Harness| match h.base_version() {
            Some(version) => run(h, &version),
            None => Ok(Finding::skip("the plugin claims no requested version")),
        })
    }

    /// `<name>[V]` for each of `versions`, running `run` with V; a skip where
    /// the plugin does not claim V.
    pub fn per_version(name: &str, versions: &[String], run: fn(&Harness, &str) -> CaseOutcome) -> Vec<Self> {
        versions
            .iter()
            .map(|v| {
                let version = v.clone();
                Self::new(format!("{name}[{v}]"), move |h: &Harness| {
                    match h.skip_unless_claimed(&version) {
                        Some(skip) => Ok(skip),
                        None => run(h, &version),
                    }
                })
            })
            .collect()
    }

    /// Runs the case; a panic inside it is a failure, not the end of the run.
    pub fn run(&self, h: &Harness) -> Finding {
        match catch_unwind(AssertUnwindSafe(|| (self.run)(h))) {
            Ok(Ok(finding)) => finding,
            Ok(Err(why)) => Finding::fail(why),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Finding::fail(format!("the case panicked (a suite bug): {msg}"))
            }
        }
    }
}

/// Every case for these options, in run order (the stdout-discipline case,
/// which audits every earlier invocation, last).
pub fn all(opts: &SuiteOptions) -> Vec<Case> {
    let versions = &opts.versions;
    let mut cases = Vec::new();
    cases.extend(version::cases());
    cases.extend(env::cases());
    cases.extend(config::cases());
    cases.extend(add::cases(versions));
    cases.extend(del::cases(versions));
    cases.extend(check::cases(versions));
    cases.extend(status::cases());
    cases.extend(gc::cases());
    cases.extend(tolerance::cases());
    cases.extend(concurrency::cases());
    cases.extend(chain::cases());
    cases.extend(stdout::cases());
    cases
}

/// The names of the cases [`SuiteOptions::only`] selects.
pub fn selected_names(opts: &SuiteOptions) -> Vec<String> {
    all(opts)
        .into_iter()
        .map(|c| c.name)
        .filter(|n| opts.selects(n))
        .collect()
}

/// A skip unless the plugin claims 1.1.0 and 1.1.0 was asked for.
pub(crate) fn skip_unless_1_1_0(h: &Harness) -> Option<Finding> {
    if !h.requested("1.1.0") {
        return Some(Finding::skip("1.1.0 is not in --versions"));
    }
    h.skip_unless_claimed("1.1.0")
}

/// Appends a note to a pass.
pub(crate) fn with_note(note: Option<&str>, extra: impl Into<String>) -> Finding {
    let extra = extra.into();
    match (note, extra.is_empty()) {
        (None, true) => Finding::pass(),
        (None, false) => Finding::pass_with(extra),
        (Some(n), true) => Finding::pass_with(n),
        (Some(n), false) => Finding::pass_with(format!("{extra}; {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_version_driven() {
        let opts = SuiteOptions::new("/bin/true");
        let names: Vec<String> = all(&opts).into_iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate case names");
        for v in &opts.versions {
            assert!(names.contains(&format!("add/prev-result[{v}]")), "{v}");
            assert!(names.contains(&format!("del/twice[{v}]")), "{v}");
        }
        assert!(names.contains(&"check/after-add[0.4.0]".to_owned()));
        assert!(names.contains(&"check/refused[0.3.1]".to_owned()));
        assert!(!names.contains(&"check/after-add[0.3.1]".to_owned()));
        assert_eq!(names.last().map(String::as_str), Some("stdout/single-json-document"));
    }

    #[test]
    fn only_filters_the_names() {
        let mut opts = SuiteOptions::new("/bin/true");
        opts.only = vec!["version/".into()];
        assert_eq!(selected_names(&opts), ["version/report", "version/empty-stdin"]);
    }
}
