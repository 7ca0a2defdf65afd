//! Spec case outcomes and their report: one line per case
//! (`PASS  <case>`, `FAIL  <case>: <why>`, `SKIP  <case>: <reason>`) and a
//! final `N passed, N failed, N skipped`.

use std::fmt;

use crate::results::{Judged, Tally, Totals, one_line};

/// How one case ended: the scenarios' verdict (pass; fail, why; skip, why),
/// so spec cases and scenarios report alike.
pub use istio_cni_scenarios::scenario::Verdict;

/// What a case found: its outcome and, for a pass, an optional note on what
/// the plugin did (e.g. which of two allowed behaviours it chose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The outcome.
    pub outcome: Verdict,
    /// Extra information printed after a PASS.
    pub note: Option<String>,
}

impl Finding {
    /// A pass.
    pub fn pass() -> Self {
        Self {
            outcome: Verdict::Pass,
            note: None,
        }
    }

    /// A pass with a note.
    pub fn pass_with(note: impl Into<String>) -> Self {
        Self {
            outcome: Verdict::Pass,
            note: Some(note.into()),
        }
    }

    /// A failure.
    pub fn fail(why: impl Into<String>) -> Self {
        Self {
            outcome: Verdict::Fail(why.into()),
            note: None,
        }
    }

    /// A skip.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            outcome: Verdict::Skip(reason.into()),
            note: None,
        }
    }
}

/// One named case and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case name, e.g. `add/prev-result[1.0.0]`.
    pub name: String,
    /// The outcome.
    pub outcome: Verdict,
    /// What the plugin did, for passes that allow several behaviours.
    pub note: Option<String>,
}

impl CaseResult {
    /// A result from a case name and what it found.
    pub fn new(name: impl Into<String>, finding: Finding) -> Self {
        Self {
            name: name.into(),
            outcome: finding.outcome,
            note: finding.note,
        }
    }
}

impl Judged for CaseResult {
    fn verdict(&self) -> &Verdict {
        &self.outcome
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.outcome, &self.note) {
            (Verdict::Pass, None) => write!(f, "PASS  {}", self.name),
            (Verdict::Pass, Some(note)) => write!(f, "PASS  {}: {}", self.name, one_line(note)),
            (Verdict::Fail(why), _) => write!(f, "FAIL  {}: {}", self.name, one_line(why)),
            (Verdict::Skip(reason), _) => write!(f, "SKIP  {}: {}", self.name, one_line(reason)),
        }
    }
}

/// Every case of a run, in execution order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuiteReport {
    /// The cases.
    pub cases: Vec<CaseResult>,
}

impl Totals for SuiteReport {
    fn tally(&self) -> Tally {
        Tally::of(self.cases.iter().map(|c| &c.outcome))
    }
}

impl SuiteReport {
    /// The case called `name`, if it ran.
    pub fn case(&self, name: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            writeln!(f, "{case}")?;
        }
        writeln!(f, "{}", self.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_summary() {
        let report = SuiteReport {
            cases: vec![
                CaseResult::new("version/report", Finding::pass()),
                CaseResult::new("add/no-prev-result[1.0.0]", Finding::pass_with("refused:\ncode 999")),
                CaseResult::new("del/twice[1.0.0]", Finding::fail("second DEL:  exit 1")),
                CaseResult::new("status/ready", Finding::skip("no 1.1.0")),
            ],
        };
        assert_eq!(
            report.to_string(),
            "PASS  version/report\n\
             PASS  add/no-prev-result[1.0.0]: refused: code 999\n\
             FAIL  del/twice[1.0.0]: second DEL: exit 1\n\
             SKIP  status/ready: no 1.1.0\n\
             2 passed, 1 failed, 1 skipped\n"
        );
        assert!(!report.success());
        assert!(report.case("status/ready").is_some_and(CaseResult::skipped));
    }
}
