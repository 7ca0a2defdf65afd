//! One finished item of a run — a CNI-spec case or a scenario — in the one
//! shape every output (progress lines, table, JUnit, HTML) reads, and the
//! run's totals.

use std::time::Duration;

use istio_cni_scenarios::failure::{REASON_MAX, cap};
use istio_cni_scenarios::scenario::{Mark, Verdict};

/// The title of the details block holding a failure message too long (or
/// too many lines) for the reason line.
pub const FULL_MESSAGE: &str = "full failure message";

/// A finished spec case or scenario.
#[derive(Debug, Clone)]
pub struct ItemResult {
    /// The stable name: `spec/<case>`, `cni/ptp/chained`, ... (`@<cni>`
    /// appended when one run covers several kind CNIs).
    pub name: String,
    /// How it ended.
    pub verdict: Verdict,
    /// How long it ran.
    pub duration: Duration,
    /// What a pass found worth saying (spec notes, scenario notes).
    pub notes: Vec<String>,
    /// Titled diagnostics blocks (events, logs, configs, rules, diffs).
    pub diagnostics: Vec<(String, String)>,
    /// Marks on the scenario's time axis (race scenarios).
    pub timeline: Vec<Mark>,
}

impl ItemResult {
    /// A result with nothing but a verdict and a duration. A failure's
    /// reason is kept to one line of at most [`REASON_MAX`] characters
    /// (the same in the table, JUnit and HTML); a longer message goes
    /// whole into the first details block.
    pub fn new(name: impl Into<String>, verdict: Verdict, duration: Duration) -> Self {
        let mut diagnostics = Vec::new();
        let verdict = match verdict {
            Verdict::Fail(why) => {
                let line = cap(&why, REASON_MAX);
                if line != why.trim() {
                    diagnostics.push((FULL_MESSAGE.to_owned(), why));
                }
                Verdict::Fail(line)
            }
            other => other,
        };
        Self {
            name: name.into(),
            verdict,
            duration,
            notes: Vec::new(),
            diagnostics,
            timeline: Vec::new(),
        }
    }

    /// The family: the first `/` segment (`spec`, `cni`, `race`, ...).
    pub fn family(&self) -> &str {
        self.name.split('/').next().unwrap_or(&self.name)
    }

    /// `PASS`, `FAIL` or `SKIP`.
    pub fn verdict_word(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skip(_) => "SKIP",
        }
    }

    /// Why it failed or was skipped; for a pass, its notes.
    pub fn reason(&self) -> String {
        match &self.verdict {
            Verdict::Fail(why) | Verdict::Skip(why) => why.clone(),
            Verdict::Pass => self.notes.join("; "),
        }
    }

    /// The diagnostics blocks as one text (`--- <title>` headers).
    pub fn diagnostics_text(&self) -> String {
        let mut text = String::new();
        for (title, body) in &self.diagnostics {
            text.push_str("--- ");
            text.push_str(title);
            text.push('\n');
            text.push_str(body);
            if !body.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }

    /// The report line the spec suite always printed, under `name`:
    /// `PASS  <name>`, `PASS  <name>: <note>`, `FAIL  <name>: <why>`, ...
    pub fn case_line(&self, name: &str) -> String {
        let reason = one_line(&self.reason());
        if reason.is_empty() {
            format!("{}  {name}", self.verdict_word())
        } else {
            format!("{}  {name}: {reason}", self.verdict_word())
        }
    }

    /// A progress line for a finished item: the case line with its duration.
    pub fn progress_line(&self) -> String {
        let reason = one_line(&self.reason());
        let head = format!(
            "{}  {} ({})",
            self.verdict_word(),
            self.name,
            format_duration(self.duration)
        );
        if reason.is_empty() {
            head
        } else {
            format!("{head}: {reason}")
        }
    }
}

/// Something that ended with a verdict: a run's item, a spec case.
pub trait Judged {
    fn verdict(&self) -> &Verdict;

    /// Whether it passed.
    fn passed(&self) -> bool {
        *self.verdict() == Verdict::Pass
    }

    /// Whether it failed.
    fn failed(&self) -> bool {
        matches!(self.verdict(), Verdict::Fail(_))
    }

    /// Whether it was skipped.
    fn skipped(&self) -> bool {
        matches!(self.verdict(), Verdict::Skip(_))
    }
}

impl Judged for ItemResult {
    fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

/// Every result of a run, in plan order.
#[derive(Debug, Clone, Default)]
pub struct RunResults {
    pub items: Vec<ItemResult>,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

/// How many of some verdicts passed, failed and were skipped: the totals of
/// a run and of the spec suite alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    pub fn of<'v>(verdicts: impl IntoIterator<Item = &'v Verdict>) -> Tally {
        verdicts.into_iter().fold(Tally::default(), |mut t, v| {
            match v {
                Verdict::Pass => t.passed += 1,
                Verdict::Fail(_) => t.failed += 1,
                Verdict::Skip(_) => t.skipped += 1,
            }
            t
        })
    }

    /// The final line: `N passed, M failed, K skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// The totals of something holding verdicts: a run, the spec suite.
pub trait Totals {
    fn tally(&self) -> Tally;

    fn passed(&self) -> usize {
        self.tally().passed
    }

    fn failed(&self) -> usize {
        self.tally().failed
    }

    fn skipped(&self) -> usize {
        self.tally().skipped
    }

    /// Whether nothing failed.
    fn success(&self) -> bool {
        self.failed() == 0
    }

    /// The final line: `N passed, M failed, K skipped`.
    fn summary(&self) -> String {
        self.tally().summary()
    }
}

impl Totals for RunResults {
    fn tally(&self) -> Tally {
        Tally::of(self.items.iter().map(|i| &i.verdict))
    }
}

impl RunResults {
    /// The families in first-seen order with their results.
    pub fn by_family(&self) -> Vec<(&str, Vec<&ItemResult>)> {
        let mut families: Vec<(&str, Vec<&ItemResult>)> = Vec::new();
        for item in &self.items {
            match families.iter_mut().find(|(f, _)| *f == item.family()) {
                Some((_, items)) => items.push(item),
                None => families.push((item.family(), vec![item])),
            }
        }
        families
    }
}

/// Keeps text on one line: whitespace runs (newlines too) become one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `850ms`, `3.2s`, `2m05s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_counts_and_families() {
        let mut pass = ItemResult::new("spec/version/report", Verdict::Pass, Duration::from_millis(12));
        pass.notes.push("supported\n0.3.0".into());
        let fail = ItemResult::new(
            "cni/ptp/chained",
            Verdict::Fail("no\nrules".into()),
            Duration::from_secs(3),
        );
        let skip = ItemResult::new("cni/ipvlan/chained", Verdict::Skip("no ipvlan".into()), Duration::ZERO);
        assert_eq!(
            pass.case_line("version/report"),
            "PASS  version/report: supported 0.3.0"
        );
        assert_eq!(fail.progress_line(), "FAIL  cni/ptp/chained (3.0s): no rules");
        let results = RunResults {
            items: vec![pass, fail, skip],
            elapsed: Duration::ZERO,
        };
        assert_eq!(results.summary(), "1 passed, 1 failed, 1 skipped");
        assert!(!results.success());
        let families: Vec<(&str, usize)> = results.by_family().iter().map(|(f, i)| (*f, i.len())).collect();
        assert_eq!(families, [("spec", 1), ("cni", 2)]);
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn a_long_failure_keeps_a_short_reason_and_its_whole_message() {
        let dump = format!(
            "pod default/hello not ready; last seen: Pod {{ {} }}",
            "x: 1, ".repeat(2000)
        );
        let item = ItemResult::new("cni/ptp/chained", Verdict::Fail(dump.clone()), Duration::ZERO);
        let reason = item.reason();
        assert_eq!(reason.chars().count(), REASON_MAX, "{reason}");
        assert!(reason.starts_with("pod default/hello not ready; last seen:"));
        assert_eq!(item.diagnostics, [(FULL_MESSAGE.to_owned(), dump)]);
        let short = ItemResult::new("t", Verdict::Fail("no rules".into()), Duration::ZERO);
        assert!(short.diagnostics.is_empty());
        let lines = ItemResult::new("t", Verdict::Fail("a\nb".into()), Duration::ZERO);
        assert_eq!(lines.reason(), "a b");
        assert_eq!(lines.diagnostics.len(), 1, "a multi-line message is kept whole");
    }
}
