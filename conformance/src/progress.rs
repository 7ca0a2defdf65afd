//! Live progress. On a terminal: one bar line redrawn in place (`\r`) with
//! done/total, the elapsed time and the running names; failures are printed
//! above it as they happen. Otherwise: one line per finished item. The
//! `spec` suite alone keeps its historical output: one case line each.

use std::io::Write;
use std::time::Instant;

use crate::results::{ItemResult, Judged, format_duration};
use crate::suites::SPEC_PREFIX;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A redrawn bar line (stdout is a terminal).
    Bar,
    /// `PASS  <name> (<duration>)[: reason]` per finished item.
    Lines,
    /// `PASS  <case>[: note]` per spec case, nothing else (`run --suite cni`).
    Cases,
}

/// The progress display.
pub struct Progress<'w> {
    out: &'w mut dyn Write,
    mode: Mode,
    total: usize,
    done: usize,
    running: Vec<String>,
    start: Instant,
    width: usize,
    drawn: bool,
}

impl<'w> Progress<'w> {
    /// A display of `total` items on `out`.
    pub fn new(out: &'w mut dyn Write, mode: Mode, total: usize) -> Self {
        Self {
            out,
            mode,
            total,
            done: 0,
            running: Vec::new(),
            start: Instant::now(),
            width: terminal_width(),
            drawn: false,
        }
    }

    /// `label` is running.
    pub fn started(&mut self, label: &str) {
        self.running.push(label.to_owned());
        self.redraw();
    }

    /// An item finished.
    pub fn finished(&mut self, result: &ItemResult) {
        self.done += 1;
        self.running.retain(|r| *r != result.name);
        match self.mode {
            Mode::Cases => {
                let name = result.name.strip_prefix(SPEC_PREFIX).unwrap_or(&result.name);
                let _ = writeln!(self.out, "{}", result.case_line(name));
            }
            Mode::Lines => {
                let _ = writeln!(self.out, "{}", result.progress_line());
            }
            Mode::Bar if result.failed() => {
                self.erase();
                let _ = writeln!(self.out, "{}", result.progress_line());
            }
            Mode::Bar => {}
        }
        self.redraw();
    }

    /// A job ended (whatever it started is no longer running).
    pub fn ended(&mut self, label: &str) {
        self.running.retain(|r| r != label);
        self.redraw();
    }

    /// Time passed: redraw the clock.
    pub fn tick(&mut self) {
        self.redraw();
    }

    /// Removes the bar (before the results table).
    pub fn clear(&mut self) {
        self.erase();
        let _ = self.out.flush();
    }

    fn erase(&mut self) {
        if self.drawn {
            let _ = write!(self.out, "\r\x1b[K");
            self.drawn = false;
        }
    }

    fn redraw(&mut self) {
        if self.mode != Mode::Bar {
            let _ = self.out.flush();
            return;
        }
        let line = bar_line(
            self.done,
            self.total,
            &self.running,
            format_duration(self.start.elapsed()),
            self.width,
        );
        let _ = write!(self.out, "\r\x1b[K{line}");
        let _ = self.out.flush();
        self.drawn = true;
    }
}

/// `[#####-----] 12/60 1m02s  cni/ptp/chained, race/repairPods, +3`, cut to
/// `width - 1` characters so it never wraps.
pub fn bar_line(done: usize, total: usize, running: &[String], elapsed: String, width: usize) -> String {
    const CELLS: usize = 20;
    let filled = (done * CELLS).checked_div(total).unwrap_or(CELLS).min(CELLS);
    let mut line = format!(
        "[{}{}] {done}/{total} {elapsed}",
        "#".repeat(filled),
        "-".repeat(CELLS - filled)
    );
    if !running.is_empty() {
        line.push_str("  ");
        let budget = width.saturating_sub(1);
        for (i, name) in running.iter().enumerate() {
            let more = format!("+{}", running.len() - i);
            let sep = if i == 0 { "" } else { ", " };
            let remaining_after = running.len() - i - 1;
            let reserve = if remaining_after > 0 { 2 + more.len() } else { 0 };
            if line.chars().count() + sep.len() + name.chars().count() + reserve > budget {
                line.push_str(sep);
                line.push_str(&more);
                break;
            }
            line.push_str(sep);
            line.push_str(name);
        }
    }
    line.chars().take(width.saturating_sub(1).max(1)).collect()
}

/// The terminal's columns (stdout), `COLUMNS`, or 100.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let mut ws: nix::libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        return usize::from(ws.ws_col);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use istio_cni_scenarios::scenario::Verdict;
    use std::time::Duration;

    #[test]
    fn the_bar_fits_and_names_what_runs() {
        let running: Vec<String> = ["cni/ptp/chained", "race/repairPods", "platform/k3s"]
            .map(String::from)
            .into();
        let line = bar_line(3, 12, &running, "4.0s".into(), 200);
        assert_eq!(
            line,
            "[#####---------------] 3/12 4.0s  cni/ptp/chained, race/repairPods, platform/k3s"
        );
        let narrow = bar_line(3, 12, &running, "4.0s".into(), 60);
        assert!(narrow.chars().count() < 60, "{narrow}");
        assert!(narrow.ends_with("cni/ptp/chained, +2"), "{narrow}");
        assert!(bar_line(0, 0, &[], "0ms".into(), 80).starts_with("[####################] 0/0"));
    }

    #[test]
    fn modes_print_what_they_should() {
        let pass = ItemResult::new("spec/version/report", Verdict::Pass, Duration::from_millis(5));
        let fail = ItemResult::new(
            "cni/ptp/chained",
            Verdict::Fail("no rules".into()),
            Duration::from_secs(2),
        );
        let print = |mode| {
            let mut buf = Vec::new();
            let mut p = Progress::new(&mut buf, mode, 2);
            p.started("spec/version/report");
            p.finished(&pass);
            p.finished(&fail);
            p.clear();
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            print(Mode::Cases),
            "PASS  version/report\nFAIL  cni/ptp/chained: no rules\n"
        );
        assert_eq!(
            print(Mode::Lines),
            "PASS  spec/version/report (5ms)\nFAIL  cni/ptp/chained (2.0s): no rules\n"
        );
        let bar = print(Mode::Bar);
        assert!(bar.contains("\r\x1b[K[----"), "{bar:?}");
        assert!(
            bar.contains("\r\x1b[KFAIL  cni/ptp/chained (2.0s): no rules\n"),
            "{bar:?}"
        );
        assert!(bar.ends_with("\r\x1b[K"), "the bar is erased at the end: {bar:?}");
    }
}
