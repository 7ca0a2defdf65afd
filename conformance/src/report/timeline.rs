//! A scenario's timeline as an inline SVG chart: a time axis with ticks and
//! one row per mark (a dot at its time and its label), so close marks never
//! overlap.

use std::fmt::Write;
use std::time::Duration;

use istio_cni_scenarios::scenario::Mark;

use super::escape::{attr, text};
use crate::results::format_duration;

const WIDTH: f64 = 760.0;
const LEFT: f64 = 16.0;
const RIGHT: f64 = 16.0;
const ROW: f64 = 20.0;
const TOP: f64 = 14.0;
const TICKS: u32 = 4;

/// The chart, or an empty string without marks.
pub fn svg(marks: &[Mark]) -> String {
    if marks.is_empty() {
        return String::new();
    }
    let end = marks
        .iter()
        .map(|m| m.at)
        .max()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let span = WIDTH - LEFT - RIGHT;
    let x = |at: Duration| LEFT + span * at.as_secs_f64() / end.as_secs_f64();
    let axis_y = TOP + ROW * marks.len() as f64;
    let height = axis_y + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" role=\"img\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<title>timeline, {} marks over {}</title>",
        marks.len(),
        text(&format_duration(end))
    );
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{:.1}\" y2=\"{axis_y}\" stroke=\"#444\"/>",
        WIDTH - RIGHT
    );
    for i in 0..=TICKS {
        let at = end.mul_f64(f64::from(i) / f64::from(TICKS));
        let tx = x(at);
        let anchor = match i {
            0 => "start",
            TICKS => "end",
            _ => "middle",
        };
        let _ = writeln!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{axis_y}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#444\"/><text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"#444\">{}</text>",
            axis_y + 5.0,
            axis_y + 18.0,
            text(&format_duration(at))
        );
    }
    for (i, mark) in marks.iter().enumerate() {
        let mx = x(mark.at);
        let y = TOP + ROW * i as f64;
        // Labels left of the dot in the right half, so they stay inside.
        let (lx, anchor) = if mx > WIDTH / 2.0 {
            (mx - 8.0, "end")
        } else {
            (mx + 8.0, "start")
        };
        let label = format!("{} {}", format_duration(mark.at), mark.what);
        let _ = writeln!(
            out,
            "<g class=\"mark\"><title>{}</title><line x1=\"{mx:.1}\" y1=\"{y:.1}\" x2=\"{mx:.1}\" y2=\"{axis_y}\" stroke=\"#bbb\" stroke-dasharray=\"2,3\"/><circle cx=\"{mx:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#3366cc\"/><text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" data-what=\"{}\">{}</text></g>",
            text(&label),
            y + 4.0,
            attr(&mark.what),
            text(&label)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::xmlcheck::parse;
    use super::*;

    fn mark(ms: u64, what: &str) -> Mark {
        Mark {
            at: Duration::from_millis(ms),
            what: what.into(),
        }
    }

    #[test]
    fn marks_sit_on_the_axis_in_order_and_escaped() {
        let svg = svg(&[
            mark(0, "node ready"),
            mark(500, "validation failed (126) <init>"),
            mark(2000, "repaired & Running"),
        ]);
        let root = parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(root.name, "svg");
        let circles: Vec<f64> = root
            .descendants()
            .iter()
            .filter(|e| e.name == "circle")
            .map(|e| e.attr("cx").and_then(|v| v.parse().ok()).unwrap_or(-1.0))
            .collect();
        assert_eq!(circles.len(), 3);
        assert_eq!(circles[0], LEFT);
        assert_eq!(circles[2], WIDTH - RIGHT);
        assert!(circles[0] < circles[1] && circles[1] < circles[2]);
        let labels: Vec<&str> = root.descendants().iter().filter_map(|e| e.attr("data-what")).collect();
        assert_eq!(
            labels,
            ["node ready", "validation failed (126) <init>", "repaired & Running"]
        );
        assert!(svg.contains("&lt;init&gt;"));
    }

    #[test]
    fn no_marks_no_chart_and_one_mark_at_zero_is_fine() {
        assert_eq!(svg(&[]), "");
        assert!(parse(&svg(&[mark(0, "only")])).is_ok());
    }
}
