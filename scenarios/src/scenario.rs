//! One scenario: a stable name, what it proves, and a body that runs against
//! an [`Env`] and leaves a [`Record`] (timeline, diagnostics) behind.
//!
//! Bodies return [`Step`]: `Err(Stop::Fail)` (use [`ensure!`](crate::ensure)),
//! `Err(Stop::Error)` (`?` on the harness's errors, or on others with
//! [`Context::context`](crate::error::Context)) or `Err(Stop::Skip)` when the
//! backend or kernel cannot run it. A panic in a body is a failure too.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::env::Env;

pub use crate::error::Stop;
pub use crate::system::Feature;

/// A body's result.
pub type Step = Result<(), Stop>;

/// `ensure!(cond, "format", args)`: fail the scenario with the message unless `cond`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::scenario::Stop::Fail(format!($($msg)+)));
        }
    };
}

/// Skips the scenario with a reason.
pub fn skip(reason: impl Into<String>) -> Step {
    Err(Stop::Skip(reason.into()))
}

/// A point on the scenario's timeline (race scenarios chart these).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Since the scenario started.
    pub at: Duration,
    /// e.g. `node ready`, `pod scheduled`, `validation failed (126)`, `agent ready`, `repaired`, `pod Running`.
    pub what: String,
}

/// The steps a body has completed and what it waits for now, shared with
/// whoever runs it: a runner that abandons a hung body still reads them.
#[derive(Debug, Clone, Default)]
pub struct StepLog(Arc<Mutex<Steps>>);

#[derive(Debug, Default)]
struct Steps {
    done: Vec<Mark>,
    waiting: Option<String>,
}

impl StepLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Steps> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The completed steps so far.
    pub fn marks(&self) -> Vec<Mark> {
        self.lock().done.clone()
    }

    /// What the body said it waits for, since its last completed step.
    pub fn waiting(&self) -> Option<String> {
        self.lock().waiting.clone()
    }

    /// `after step 3 (agents started, at 1.2s), waiting for default/hello Running`.
    pub fn describe(&self) -> String {
        let steps = self.lock();
        let last = match steps.done.last() {
            Some(m) => format!(
                "after step {} ({}, at {:.1}s)",
                steps.done.len(),
                m.what,
                m.at.as_secs_f64()
            ),
            None => "before its first step".to_owned(),
        };
        match &steps.waiting {
            Some(what) => format!("{last}, waiting for {what}"),
            None => last,
        }
    }
}

/// What a body leaves behind for the report.
#[derive(Debug, Clone)]
pub struct Record {
    start: Instant,
    steps: StepLog,
    pub timeline: Vec<Mark>,
    /// Titled text blocks: pod and node events, agent and plugin logs, the
    /// CNI config before and after, rules in the pod netns, a diff.
    pub diagnostics: Vec<(String, String)>,
    /// Figures worth printing (e.g. `time to repair: 1.2 s`).
    pub notes: Vec<String>,
}

impl Default for Record {
    fn default() -> Self {
        Record::with_steps(StepLog::default())
    }
}

impl Record {
    /// A record whose steps also go to `steps`.
    pub fn with_steps(steps: StepLog) -> Record {
        Record {
            start: Instant::now(),
            steps,
            timeline: Vec::new(),
            diagnostics: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Marks `what` as happening now: a completed step.
    pub fn mark(&mut self, what: impl Into<String>) {
        let mark = Mark {
            at: self.start.elapsed(),
            what: what.into(),
        };
        let mut steps = self.steps.lock();
        steps.done.push(mark.clone());
        steps.waiting = None;
        drop(steps);
        self.timeline.push(mark);
    }

    /// Says what the body waits for now (until its next [`Record::mark`]):
    /// what a timed-out scenario reports.
    pub fn waiting_for(&mut self, what: impl Into<String>) {
        self.steps.lock().waiting = Some(what.into());
    }

    /// Adds a titled diagnostics block (kept for failures and the report).
    pub fn diag(&mut self, title: impl Into<String>, text: impl Into<String>) {
        self.diagnostics.push((title.into(), text.into()));
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A scenario body.
pub type Body = Arc<dyn Fn(&Env, &mut Record) -> Step + Send + Sync>;

/// A named scenario.
#[derive(Clone)]
pub struct Scenario {
    /// Stable, `/`-separated: `cni/ptp/chained`, `race/repairPods`,
    /// `skew/istio-1.28/native-sidecar`, `snapshot/<set>/nft`, `platform/k3s`.
    pub name: String,
    /// One line: what it proves.
    pub summary: String,
    pub body: Body,
    /// Where it runs; elsewhere a run does not plan it at all.
    pub only: Only,
    /// What it needs of the agent beyond Istio's chart; on a system under
    /// test without it the scenario is skipped, saying so.
    pub needs: Vec<Feature>,
}

/// The targets a scenario is planned on. Real-cluster scenarios prove there
/// what the embedded cluster proves through its own scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// Every target.
    Any,
    /// kind clusters whose primary CNI is this one (`--cni`).
    KindCni(&'static str),
    /// Existing clusters.
    Existing,
}

impl Scenario {
    pub fn new(
        name: impl Into<String>,
        summary: impl Into<String>,
        body: impl Fn(&Env, &mut Record) -> Step + Send + Sync + 'static,
    ) -> Scenario {
        Scenario {
            name: name.into(),
            summary: summary.into(),
            body: Arc::new(body),
            only: Only::Any,
            needs: Vec::new(),
        }
    }

    /// The same scenario, needing `features` of the system under test.
    pub fn needs(mut self, features: &[Feature]) -> Scenario {
        self.needs = features.to_vec();
        self
    }

    /// The same scenario, planned only on `only`'s targets.
    pub fn only(mut self, only: Only) -> Scenario {
        self.only = only;
        self
    }

    /// Whether a run on `target` includes it.
    pub fn runs_on(&self, target: &crate::env::Target) -> bool {
        use crate::env::Target;
        match (self.only, target) {
            (Only::Any, _) => true,
            (Only::KindCni(want), Target::Kind { cni }) => want == cni,
            (Only::Existing, Target::Existing { .. }) => true,
            _ => false,
        }
    }

    /// Runs the body, turning a panic into a failure.
    pub fn run(&self, env: &Env) -> Outcome {
        self.run_logged(env, StepLog::default())
    }

    /// [`Scenario::run`], its steps going to `steps` as they happen.
    pub fn run_logged(&self, env: &Env, steps: StepLog) -> Outcome {
        let mut record = Record::with_steps(steps);
        let result = match env.system.lacks(&self.needs) {
            Some(why) => Ok(Err(Stop::Skip(why))),
            None => std::panic::catch_unwind(AssertUnwindSafe(|| (self.body)(env, &mut record))),
        };
        let verdict = match result {
            Ok(Ok(())) => Verdict::Pass,
            Ok(Err(Stop::Fail(m))) => Verdict::Fail(m),
            Ok(Err(Stop::Skip(m))) => Verdict::Skip(m),
            Ok(Err(Stop::Error(e))) => Verdict::Fail(e.to_string()),
            Err(panic) => Verdict::Fail(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        };
        Outcome {
            name: self.name.clone(),
            verdict,
            duration: record.elapsed(),
            record,
        }
    }
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("name", &self.name).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

/// A finished scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub verdict: Verdict,
    pub duration: Duration,
    pub record: Record,
}

impl Outcome {
    /// Prints the verdict, the timeline and the notes to stderr (what a
    /// cargo test shows for the scenario).
    pub fn eprint(&self) {
        eprintln!("{}: {:?} in {:?}", self.name, self.verdict, self.duration);
        for m in &self.record.timeline {
            eprintln!("{}: {:>8.3} s  {}", self.name, m.at.as_secs_f64(), m.what);
        }
        for n in &self.record.notes {
            eprintln!("{}: {n}", self.name);
        }
    }

    /// Panics with the failure and its diagnostics: how rstest cases report.
    pub fn assert_passed(&self) {
        match &self.verdict {
            Verdict::Pass => {}
            Verdict::Skip(reason) => eprintln!("SKIP: {}: {reason}", self.name),
            Verdict::Fail(message) => {
                let mut text = format!("{} failed: {message}\n", self.name);
                for (title, body) in &self.record.diagnostics {
                    text.push_str(&format!("--- {title}\n{body}\n"));
                }
                panic!("{text}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_from_bodies_and_panics() {
        let env = Env::local_for_tests();
        let pass = Scenario::new("t/pass", "", |_, r| {
            r.mark("step");
            Ok(())
        });
        let out = pass.run(&env);
        assert_eq!(out.verdict, Verdict::Pass);
        assert_eq!(out.record.timeline[0].what, "step");
        let fail = Scenario::new("t/fail", "", |_, _| {
            ensure!(1 + 1 == 3, "arithmetic is {}", "broken");
            Ok(())
        });
        assert_eq!(fail.run(&env).verdict, Verdict::Fail("arithmetic is broken".into()));
        let boom = Scenario::new("t/panic", "", |_, _| panic!("boom"));
        assert_eq!(boom.run(&env).verdict, Verdict::Fail("panicked: boom".into()));
        let skipped = Scenario::new("t/skip", "", |_, _| skip("no ipvlan"));
        assert_eq!(skipped.run(&env).verdict, Verdict::Skip("no ipvlan".into()));
    }

    #[test]
    fn a_scenario_needing_a_feature_skips_on_a_system_without_it() {
        use crate::system::{Source, System};
        let ran = Arc::new(Mutex::new(0));
        let counter = ran.clone();
        let scenario = Scenario::new("t/taint", "", move |_, _| {
            *counter.lock().unwrap() += 1;
            Ok(())
        })
        .needs(&[Feature::Taint]);
        assert_eq!(scenario.run(&Env::local_for_tests()).verdict, Verdict::Pass);
        let foreign = Env::local_for_tests()
            .with_system(System {
                source: Source::Manifests(Vec::new()),
                ..System::default()
            })
            .unwrap();
        match scenario.run(&foreign).verdict {
            Verdict::Skip(why) => assert!(why.contains("taint.enabled"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(*ran.lock().unwrap(), 1, "the body ran on the project's system only");
    }

    #[test]
    fn the_step_log_names_the_last_step_and_the_wait() {
        let steps = StepLog::default();
        assert_eq!(steps.describe(), "before its first step");
        let body = Scenario::new("t/steps", "", |_, r| {
            r.waiting_for("the cluster");
            r.mark("cluster up");
            r.waiting_for("default/hello Running");
            Ok(())
        });
        body.run_logged(&Env::local_for_tests(), steps.clone());
        let text = steps.describe();
        assert!(
            text.starts_with("after step 1 (cluster up, at ") && text.ends_with("), waiting for default/hello Running"),
            "{text}"
        );
        assert_eq!(steps.marks().len(), 1);
    }
}
