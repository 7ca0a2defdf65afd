//! The results table printed after a run: name, verdict, duration, reason
//! (one line; a failure's reason is the same line JUnit and HTML show).

use std::fmt::Write;

use istio_cni_scenarios::failure::REASON_MAX;

use crate::results::{RunResults, format_duration, one_line};

/// The table, one row per item, with a header; empty for an empty run.
pub fn render(results: &RunResults) -> String {
    if results.items.is_empty() {
        return String::new();
    }
    let width = results
        .items
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  VERDICT  DURATION  REASON", "NAME");
    for item in &results.items {
        let mut reason = one_line(&item.reason());
        if reason.chars().count() > REASON_MAX {
            reason = reason.chars().take(REASON_MAX - 1).collect::<String>() + "…";
        }
        let row = format!(
            "{:<width$}  {:<7}  {:>8}  {reason}",
            item.name,
            item.verdict_word(),
            format_duration(item.duration)
        );
        let _ = writeln!(out, "{}", row.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ItemResult;
    use istio_cni_scenarios::scenario::Verdict;
    use std::time::Duration;

    #[test]
    fn rows_align() {
        let results = RunResults {
            items: vec![
                ItemResult::new("race/repairPods", Verdict::Pass, Duration::from_millis(1500)),
                ItemResult::new("cni/x", Verdict::Fail("bad\nrules".into()), Duration::from_millis(20)),
            ],
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            render(&results),
            "NAME             VERDICT  DURATION  REASON\n\
             race/repairPods  PASS         1.5s\n\
             cni/x            FAIL         20ms  bad rules\n"
        );
        assert_eq!(render(&RunResults::default()), "");
    }
}
