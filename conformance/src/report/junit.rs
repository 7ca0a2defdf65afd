//! JUnit XML: one `<testsuite>` per family (`spec`, `cni`, `race`, ...),
//! one `<testcase>` per item with its time in seconds; a failure is
//! `<failure message="why">` (the one-line reason) with the diagnostics as
//! its text (terminal colour codes dropped), a skip is
//! `<skipped message="why"/>`, notes go to `<system-out>`.

use std::fmt::Write;
use std::path::Path;

use istio_cni_scenarios::failure::strip_ansi;
use istio_cni_scenarios::scenario::Verdict;

use super::escape::{attr, text};
use crate::results::{ItemResult, Judged, RunResults, Totals};

/// The document.
pub fn render(results: &RunResults) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"istio-cni-conformance\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
        results.items.len(),
        results.failed(),
        results.skipped(),
        results.elapsed.as_secs_f64()
    );
    for (family, items) in results.by_family() {
        let failures = items.iter().filter(|i| i.failed()).count();
        let skipped = items.iter().filter(|i| i.skipped()).count();
        let time: f64 = items.iter().map(|i| i.duration.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            attr(family),
            items.len()
        );
        for item in items {
            testcase(&mut out, family, item);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn testcase(out: &mut String, family: &str, item: &ItemResult) {
    let _ = write!(
        out,
        "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
        attr(&item.name),
        attr(family),
        item.duration.as_secs_f64()
    );
    let body_empty = item.passed() && item.notes.is_empty();
    if body_empty {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    match &item.verdict {
        Verdict::Fail(why) => {
            let mut details = item.diagnostics_text();
            if details.is_empty() {
                details = why.clone();
            }
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"failure\">{}</failure>",
                attr(why),
                text(&strip_ansi(&details))
            );
        }
        Verdict::Skip(why) => {
            let _ = writeln!(out, "      <skipped message=\"{}\"/>", attr(why));
        }
        Verdict::Pass => {}
    }
    if !item.notes.is_empty() {
        let _ = writeln!(out, "      <system-out>{}</system-out>", text(&item.notes.join("\n")));
    }
    out.push_str("    </testcase>\n");
}

/// Writes the document to `path` (creating its directory).
pub fn write(path: &Path, results: &RunResults) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(results))
}

#[cfg(test)]
mod tests {
    use super::super::xmlcheck::{Element, parse};
    use super::*;
    use std::time::Duration;

    fn results() -> RunResults {
        let pass = ItemResult::new("spec/version/report", Verdict::Pass, Duration::from_millis(1234));
        let mut fail = ItemResult::new(
            "cni/ptp/chained",
            Verdict::Fail("rules <missing> & \"wrong\"\nsee logs".into()),
            Duration::from_secs(2),
        );
        fail.diagnostics
            .push(("agent log".into(), "line 1 <ok>\n\u{1b}[31mred]]>".into()));
        let mut skip = ItemResult::new(
            "cni/ipvlan/chained",
            Verdict::Skip("no 'ipvlan'".into()),
            Duration::ZERO,
        );
        skip.notes.push("kernel 6.1".into());
        RunResults {
            items: vec![pass, fail, skip],
            elapsed: Duration::from_secs(3),
        }
    }

    fn child<'e>(e: &'e Element, name: &str) -> &'e Element {
        e.children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no <{name}> in {e:?}"))
    }

    #[test]
    fn parses_back_with_suites_cases_and_messages() {
        let xml = render(&results());
        let root = parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        assert_eq!(root.name, "testsuites");
        assert_eq!(root.attr("tests"), Some("3"));
        assert_eq!(root.attr("failures"), Some("1"));
        let suites: Vec<(&str, usize)> = root
            .children
            .iter()
            .map(|s| (s.attr("name").unwrap_or(""), s.children.len()))
            .collect();
        assert_eq!(suites, [("spec", 1), ("cni", 2)]);
        let spec_case = &root.children[0].children[0];
        assert_eq!(spec_case.attr("name"), Some("spec/version/report"));
        assert_eq!(spec_case.attr("time"), Some("1.234"));
        assert!(spec_case.children.is_empty());
        let cni = &root.children[1];
        assert_eq!(cni.attr("failures"), Some("1"));
        assert_eq!(cni.attr("skipped"), Some("1"));
        let failure = child(&cni.children[0], "failure");
        assert_eq!(failure.attr("message"), Some("rules <missing> & \"wrong\" see logs"));
        assert_eq!(
            failure.text,
            "--- full failure message\nrules <missing> & \"wrong\"\nsee logs\n--- agent log\nline 1 <ok>\nred]]>\n"
        );
        let skipped = child(&cni.children[1], "skipped");
        assert_eq!(skipped.attr("message"), Some("no 'ipvlan'"));
        assert_eq!(child(&cni.children[1], "system-out").text, "kernel 6.1");
    }

    #[test]
    fn an_empty_run_is_a_valid_document() {
        let root = parse(&render(&RunResults::default())).unwrap();
        assert_eq!(root.attr("tests"), Some("0"));
        assert!(root.children.is_empty());
    }
}
