//! The HTML report: one self-contained `index.html` (inline CSS and SVG, no
//! scripts, no external assets). A summary and a results table link to one
//! section per item: verdict, duration, reason, notes, the timeline chart
//! when the item has one, and on failure its diagnostics blocks (rules and
//! CNI config diffs, container logs, counted events, agent and plugin logs)
//! collapsed except the first, `+`/`-` lines of a diff coloured and lines
//! that say something went wrong highlighted. The verdict and the first
//! failure's reason come first, so they show without scrolling. Terminal
//! colour codes are dropped; all text is escaped; the page is well-formed XML.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use istio_cni_scenarios::failure::strip_ansi;

use super::escape::{attr, text};
use super::timeline;
use crate::results::{ItemResult, Judged, RunResults, Totals, format_duration, one_line};

const STYLE: &str = "
body{font-family:sans-serif;margin:1.2em 2em;color:#222}
h1{margin:0 0 .2em;font-size:1.5em}
p.summary{font-size:1.3em;margin:.2em 0}
p.summary .verdict{font-size:1em;padding:.1em .5em}
p.context{color:#555;margin:.2em 0}
div.first-failure{border-left:5px solid #c62828;background:#ffebee;padding:.4em .8em;margin:.6em 0}
div.first-failure .reason{font-family:monospace}
table.results{border-collapse:collapse;margin:1em 0}
table.results td,table.results th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
td.dur{text-align:right;white-space:nowrap}
.verdict{font-weight:bold;padding:0 .4em;border-radius:3px;color:#fff}
.verdict.pass{background:#2e7d32}.verdict.fail{background:#c62828}.verdict.skip{background:#9e9e9e}
section.item{border-top:1px solid #ccc;padding:.5em 0}
section.item h2{font-size:1.05em}
.reason{white-space:pre-wrap}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;max-height:40em}
pre .add{color:#1b5e20;background:#e8f5e9}pre .del{color:#b71c1c;background:#ffebee}
pre .hl{background:#fff3c4;font-weight:bold}
details summary{cursor:pointer;font-weight:bold}
";

/// The page. `context` is one line on what ran (cluster, suite, command).
pub fn render(results: &RunResults, context: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    out.push_str("<title>istio-cni-conformance report</title>\n");
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    out.push_str("<h1>istio-cni-conformance</h1>\n");
    let (word, class) = if results.success() {
        ("PASSED", "pass")
    } else {
        ("FAILED", "fail")
    };
    let _ = writeln!(
        out,
        "<p class=\"summary\"><span class=\"verdict {class}\">{word}</span> <strong>{}</strong> in {}</p>\n<p class=\"context\">{}</p>",
        text(&results.summary()),
        text(&format_duration(results.elapsed)),
        text(context)
    );
    if let Some((i, first)) = results.items.iter().enumerate().find(|(_, item)| item.failed()) {
        let _ = writeln!(
            out,
            "<div class=\"first-failure\">First failure: <a href=\"#item-{i}\">{}</a><br/><span class=\"reason\">{}</span></div>",
            text(&first.name),
            text(&one_line(&first.reason()))
        );
    }
    out.push_str("<table class=\"results\">\n<thead><tr><th>name</th><th>verdict</th><th>duration</th><th>reason</th></tr></thead>\n<tbody>\n");
    for (i, item) in results.items.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td><a href=\"#item-{i}\">{}</a></td><td>{}</td><td class=\"dur\">{}</td><td>{}</td></tr>",
            text(&item.name),
            verdict(item),
            text(&format_duration(item.duration)),
            text(&one_line(&item.reason()))
        );
    }
    out.push_str("</tbody>\n</table>\n");
    for (i, item) in results.items.iter().enumerate() {
        section(&mut out, i, item);
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn verdict(item: &ItemResult) -> String {
    let word = item.verdict_word();
    format!("<span class=\"verdict {}\">{word}</span>", word.to_ascii_lowercase())
}

fn section(out: &mut String, i: usize, item: &ItemResult) {
    let _ = writeln!(
        out,
        "<section class=\"item\" id=\"item-{i}\" data-name=\"{}\">\n<h2>{} {} <small>{}</small></h2>",
        attr(&item.name),
        verdict(item),
        text(&item.name),
        text(&format_duration(item.duration))
    );
    if !item.passed() {
        let _ = writeln!(out, "<p class=\"reason\">{}</p>", text(&item.reason()));
    }
    if !item.notes.is_empty() {
        out.push_str("<ul class=\"notes\">\n");
        for note in &item.notes {
            let _ = writeln!(out, "<li>{}</li>", text(note));
        }
        out.push_str("</ul>\n");
    }
    if !item.timeline.is_empty() {
        let _ = write!(
            out,
            "<figure class=\"timeline\">\n{}</figure>\n",
            timeline::svg(&item.timeline)
        );
    }
    if item.failed() {
        // The first block is what the failing check found: open; the rest
        // are there when wanted.
        for (n, (title, body)) in item.diagnostics.iter().enumerate() {
            let open = if n == 0 { " open=\"open\"" } else { "" };
            let _ = writeln!(
                out,
                "<details{open} class=\"diag\"><summary>{}</summary><pre>{}</pre></details>",
                text(title),
                diag_body(title, &strip_ansi(body))
            );
        }
    }
    out.push_str("</section>\n");
}

/// Words that mark a log or event line as the one to read.
const ALARMS: [&str; 9] = [
    "error",
    "fail",
    "warn",
    "panic",
    "exited",
    "denied",
    "refused",
    "timed out",
    "backoff",
];

/// Whether a line of a log or an event list says something went wrong.
fn alarming(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    ALARMS.iter().any(|w| lower.contains(w))
}

/// A diagnostics block; in a diff, `+` and `-` lines are marked, elsewhere
/// lines that say something went wrong.
fn diag_body(title: &str, body: &str) -> String {
    let is_diff = title.to_ascii_lowercase().contains("diff");
    let mut out = String::new();
    for line in body.lines() {
        let class = match line.as_bytes().first() {
            Some(b'+') if is_diff && !line.starts_with("+++") => Some("add"),
            Some(b'-') if is_diff && !line.starts_with("---") => Some("del"),
            _ if !is_diff && alarming(line) => Some("hl"),
            _ => None,
        };
        match class {
            Some(c) => {
                let _ = writeln!(out, "<span class=\"{c}\">{}</span>", text(line));
            }
            None => {
                let _ = writeln!(out, "{}", text(line));
            }
        }
    }
    out
}

/// Writes `DIR/index.html`; returns its path.
pub fn write(dir: &Path, results: &RunResults, context: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("index.html");
    std::fs::write(&path, render(results, context))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::super::xmlcheck::parse;
    use super::*;
    use istio_cni_scenarios::scenario::{Mark, Verdict};
    use std::time::Duration;

    fn results() -> RunResults {
        let mut race = ItemResult::new("race/repairPods", Verdict::Pass, Duration::from_millis(2500));
        race.timeline = vec![
            Mark {
                at: Duration::ZERO,
                what: "pod scheduled".into(),
            },
            Mark {
                at: Duration::from_millis(900),
                what: "repaired".into(),
            },
        ];
        race.notes.push("time to repair: 0.9 s".into());
        let mut fail = ItemResult::new(
            "cni/<ptp>/chained",
            Verdict::Fail("rules & \"chains\" <missing>".into()),
            Duration::from_secs(1),
        );
        fail.diagnostics
            .push(("pod events".into(), "Warning <FailedCreatePodSandBox>\u{7}".into()));
        fail.diagnostics.push((
            "diff against the expected".into(),
            "--- want\n+++ got\n-A X\n+A <Y>\n ctx".into(),
        ));
        RunResults {
            items: vec![race, fail],
            elapsed: Duration::from_secs(4),
        }
    }

    #[test]
    fn the_page_is_well_formed_escaped_and_self_contained() {
        let html = render(&results(), "cluster local & suite <all>");
        let root = parse(&html).unwrap_or_else(|e| panic!("{e}\n{html}"));
        assert_eq!(root.name, "html");
        let all = root.descendants();
        assert!(
            !html.contains("<script") && !html.contains("<link"),
            "no scripts, no stylesheets"
        );
        assert!(
            all.iter().all(|e| e.attr("src").is_none() && e.attr("rel").is_none()),
            "no external assets"
        );
        let context = all.iter().find(|e| e.attr("class") == Some("context")).unwrap();
        assert_eq!(context.text, "cluster local & suite <all>");
        let fail = all
            .iter()
            .find(|e| e.attr("data-name") == Some("cni/<ptp>/chained"))
            .unwrap();
        let text = fail.all_text();
        assert!(text.contains("rules & \"chains\" <missing>"), "{text}");
        assert!(text.contains("Warning <FailedCreatePodSandBox>\\u{7}"), "{text}");
        let spans: Vec<(String, String)> = fail
            .descendants()
            .iter()
            .filter(|e| e.name == "span" && matches!(e.attr("class"), Some("add" | "del")))
            .map(|e| (e.attr("class").unwrap_or("").to_owned(), e.text.clone()))
            .collect();
        assert_eq!(spans, [("del".into(), "-A X".into()), ("add".into(), "+A <Y>".into())]);
    }

    #[test]
    fn the_first_block_is_open_the_rest_collapsed_alarms_marked_no_ansi() {
        let mut results = results();
        results.items[1].diagnostics.push((
            "agent log".into(),
            "\u{1b}[2mok\u{1b}[0m\n\u{1b}[31mERROR\u{1b}[0m install failed".into(),
        ));
        let page = render(&results, "");
        assert_eq!(page.matches("<details").count(), 3);
        assert_eq!(page.matches("<details open").count(), 1);
        assert_eq!(page.find("<details"), page.find("<details open"));
        assert!(!page.contains('\u{1b}') && !page.contains("\\u{1b}"), "{page}");
        assert!(
            page.contains("<span class=\"hl\">ERROR install failed</span>"),
            "{page}"
        );
        assert!(page.contains("\nok\n") || page.contains(">ok\n"), "{page}");
        let root = parse(&page).unwrap();
        let first = root
            .descendants()
            .into_iter()
            .find(|e| e.attr("class") == Some("first-failure"))
            .expect("the first failure at the top");
        assert!(first.all_text().contains("rules & \"chains\" <missing>"));
    }

    #[test]
    fn a_timeline_renders_an_svg_and_passes_hide_diagnostics() {
        let mut results = results();
        results.items[0].diagnostics.push(("agent log".into(), "noise".into()));
        let root = parse(&render(&results, "")).unwrap();
        let race = root
            .descendants()
            .into_iter()
            .find(|e| e.attr("data-name") == Some("race/repairPods"))
            .unwrap();
        let svg = race
            .descendants()
            .into_iter()
            .find(|e| e.name == "svg")
            .expect("an <svg> timeline");
        assert_eq!(svg.descendants().iter().filter(|e| e.name == "circle").count(), 2);
        assert!(!race.all_text().contains("noise"), "a pass shows no diagnostics");
        assert!(race.all_text().contains("time to repair: 0.9 s"));
        let fail = root
            .descendants()
            .into_iter()
            .find(|e| e.attr("data-name") == Some("cni/<ptp>/chained"))
            .unwrap();
        assert!(fail.descendants().iter().all(|e| e.name != "svg"));
    }
}
