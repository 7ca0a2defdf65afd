//! Runs a plan: the CNI-spec cases as one job (they share one harness, in
//! order), every scenario as its own job on its own cluster, on `--jobs`
//! worker threads; updates drive the progress display, results come back
//! in plan order.

pub mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::error::Error as ScenariosError;
use istio_cni_scenarios::scenario::{Outcome, Scenario, StepLog, Verdict};

use crate::options::SuiteOptions;
use crate::progress::Progress;
use crate::results::{ItemResult, RunResults};
use crate::run_suite_with;
use crate::suites::{Planned, SPEC_PREFIX};
use queue::{Job, Reporter, Update};

/// One cluster target scenarios run on.
#[derive(Debug, Clone)]
pub struct TargetEnv {
    /// Appended to scenario names as `@<suffix>` (several kind CNIs).
    pub suffix: Option<String>,
    /// The environment, or why it could not be made (every scenario on it
    /// fails with that; shared by the target's clones, one per job).
    pub env: Result<Env, Arc<ScenariosError>>,
    /// Whether its scenarios must run one at a time (one shared cluster or cluster name).
    pub serial: bool,
    /// The cluster it is (which scenarios run on it: [`Scenario::runs_on`]).
    pub target: Target,
}

impl TargetEnv {
    /// Whether `scenario` runs on this target.
    fn runs(&self, scenario: &Scenario) -> bool {
        scenario.runs_on(&self.target)
    }

    fn name_of(&self, scenario: &str) -> String {
        match &self.suffix {
            Some(s) => format!("{scenario}@{s}"),
            None => scenario.to_owned(),
        }
    }
}

/// What to run.
pub struct RunPlan {
    pub items: Vec<Planned>,
    /// Options of the spec cases (the plugin, primary, versions, ...).
    pub spec: SuiteOptions,
    /// Where scenarios run (each scenario runs once per target).
    pub targets: Vec<TargetEnv>,
    /// Worker threads.
    pub jobs: usize,
    /// Per scenario.
    pub timeout: Duration,
}

impl RunPlan {
    /// One scenario of the `istio-cni` suite on the local embedded cluster
    /// of `env`, with one worker and `timeout`.
    pub fn one_local(scenario: Scenario, env: Env, timeout: Duration) -> RunPlan {
        RunPlan {
            items: vec![Planned::Scenario(scenario)],
            spec: SuiteOptions::new("istio-cni"),
            targets: vec![TargetEnv {
                suffix: None,
                env: Ok(env),
                serial: false,
                target: Target::Local,
            }],
            jobs: 1,
            timeout,
        }
    }

    /// The names of everything that will be reported, in plan order.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for item in &self.items {
            match item {
                Planned::Spec { .. } => names.push(item.name()),
                Planned::Scenario(s) => {
                    names.extend(self.targets.iter().filter(|t| t.runs(s)).map(|t| t.name_of(&s.name)))
                }
            }
        }
        names
    }
}

/// Runs `plan`, reporting to `progress`.
pub fn run(plan: RunPlan, progress: &mut Progress<'_>) -> RunResults {
    let started = Instant::now();
    let order: HashMap<String, usize> = plan.names().into_iter().enumerate().map(|(i, n)| (n, i)).collect();
    let jobs = jobs(&plan);
    let mut collected: Vec<(usize, usize, ItemResult)> = Vec::new();
    queue::run(jobs, plan.jobs, Duration::from_millis(500), |update| match update {
        Update::Started(label) => progress.started(&label),
        Update::Result(result) => {
            progress.finished(&result);
            // Unplanned names (the spec suite's `setup` failure) go first.
            let at = order.get(&result.name).copied().unwrap_or(0);
            collected.push((at, collected.len(), result));
        }
        Update::Finished(label) => progress.ended(&label),
        Update::Panicked(label, msg) => {
            let result = ItemResult::new(
                label,
                Verdict::Fail(format!("the runner panicked: {msg}")),
                Duration::ZERO,
            );
            progress.finished(&result);
            collected.push((order.get(&result.name).copied().unwrap_or(0), collected.len(), result));
        }
        Update::Tick => progress.tick(),
    });
    progress.clear();
    collected.sort_by_key(|(at, seq, _)| (*at, *seq));
    RunResults {
        items: collected.into_iter().map(|(_, _, r)| r).collect(),
        elapsed: started.elapsed(),
    }
}

fn jobs(plan: &RunPlan) -> Vec<Job<ItemResult>> {
    let mut jobs = Vec::new();
    let cases: Vec<String> = plan
        .items
        .iter()
        .filter_map(|p| match p {
            Planned::Spec { case } => Some(case.clone()),
            Planned::Scenario(_) => None,
        })
        .collect();
    // The spec cases first: the longest sequential job overlaps the scenarios.
    if !cases.is_empty() {
        let mut opts = plan.spec.clone();
        opts.exact = Some(cases.clone());
        jobs.push(Job::new("spec", move |r: &Reporter<ItemResult>| {
            spec_job(&opts, &cases, r)
        }));
    }
    let serial = Arc::new(Mutex::new(()));
    let timeout = plan.timeout;
    for item in &plan.items {
        let Planned::Scenario(scenario) = item else { continue };
        for target in plan.targets.iter().filter(|t| t.runs(scenario)) {
            let (scenario, target, serial) = (scenario.clone(), target.clone(), serial.clone());
            let name = target.name_of(&scenario.name);
            jobs.push(Job::new(name.clone(), move |r: &Reporter<ItemResult>| {
                let _turn = target.serial.then(|| serial.lock().unwrap_or_else(|p| p.into_inner()));
                r.started(name.clone());
                r.result(scenario_result(name, &scenario, &target.env, timeout));
            }));
        }
    }
    jobs
}

/// The spec cases in one harness; each case's time is the time since the previous one ended.
fn spec_job(opts: &SuiteOptions, cases: &[String], r: &Reporter<ItemResult>) {
    let mut next = cases.iter();
    if let Some(first) = next.next() {
        r.started(format!("{SPEC_PREFIX}{first}"));
    }
    let mut last = Instant::now();
    run_suite_with(opts, |case| {
        let mut result = ItemResult::new(
            format!("{SPEC_PREFIX}{}", case.name),
            case.outcome.clone(),
            last.elapsed(),
        );
        result.notes.extend(case.note.clone());
        r.result(result);
        last = Instant::now();
        if let Some(following) = next.next() {
            r.started(format!("{SPEC_PREFIX}{following}"));
        }
    });
}

fn scenario_result(
    name: String,
    scenario: &Scenario,
    env: &Result<Env, Arc<ScenariosError>>,
    timeout: Duration,
) -> ItemResult {
    let env = match env {
        Ok(env) => env.scoped(),
        Err(why) => return ItemResult::new(name, Verdict::Fail(format!("no environment: {why}")), Duration::ZERO),
    };
    // The body runs on its own thread so a hung scenario cannot stall the
    // whole run: after `timeout` it is reported and abandoned.
    let (tx, rx) = std::sync::mpsc::channel();
    let body = scenario.clone();
    let scope = env.clone();
    let steps = StepLog::default();
    let body_steps = steps.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("scenario {name}"))
        .spawn(move || {
            let _ = tx.send(body.run_logged(&env, body_steps));
        });
    if let Err(e) = spawned {
        return ItemResult::new(name, Verdict::Fail(format!("starting its thread: {e}")), Duration::ZERO);
    }
    let Outcome {
        verdict,
        duration,
        record,
        ..
    } = match rx.recv_timeout(timeout) {
        Ok(outcome) => outcome,
        Err(_) => {
            // The body is abandoned; what it built is not.
            let cleanup = match scope.reap() {
                Ok(()) => "its cluster was torn down".to_owned(),
                Err(e) => format!("tearing its cluster down: {e}"),
            };
            let mut result = ItemResult::new(
                name,
                Verdict::Fail(format!(
                    "timed out after {}s (--scenario-timeout); {cleanup}; {}",
                    timeout.as_secs_f64(),
                    steps.describe()
                )),
                timeout,
            );
            result.timeline = steps.marks();
            return result;
        }
    };
    let mut result = ItemResult::new(name, verdict, duration);
    result.notes = record.notes;
    result.diagnostics.extend(record.diagnostics);
    result.timeline = record.timeline;
    result
}

#[cfg(test)]
mod tests {
    use istio_cni_scenarios::scenario::Only;

    use super::*;

    #[test]
    fn real_cluster_scenarios_are_planned_on_their_targets_only() {
        let items = vec![
            Planned::Scenario(Scenario::new("cni/ptp/chained", "", |_, _| Ok(()))),
            Planned::Scenario(Scenario::new("cni/calico/chained", "", |_, _| Ok(())).only(Only::KindCni("calico"))),
            Planned::Scenario(Scenario::new("cni/cluster/chained", "", |_, _| Ok(())).only(Only::Existing)),
        ];
        let target = |suffix: Option<&str>, target: Target| TargetEnv {
            suffix: suffix.map(str::to_owned),
            env: Ok(Env::local_for_tests()),
            serial: false,
            target,
        };
        let plan = |targets| RunPlan {
            items: items.clone(),
            spec: SuiteOptions::new("istio-cni"),
            targets,
            jobs: 1,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(plan(vec![target(None, Target::Local)]).names(), ["cni/ptp/chained"]);
        let kind = |cni: &str| target(Some(cni), Target::Kind { cni: cni.into() });
        let both = plan(vec![kind("calico"), kind("cilium")]);
        assert_eq!(
            both.names(),
            [
                "cni/ptp/chained@calico",
                "cni/ptp/chained@cilium",
                "cni/calico/chained@calico",
            ]
        );
        assert_eq!(jobs(&both).len(), 3);
        let existing = plan(vec![target(
            None,
            Target::Existing {
                kubeconfig: "/k".into(),
            },
        )]);
        assert_eq!(existing.names(), ["cni/ptp/chained", "cni/cluster/chained"]);
    }

    #[test]
    fn a_hung_scenario_times_out_and_the_run_goes_on() {
        let hung = Scenario::new("t/hung", "", |_, r| {
            r.mark("cluster up (2 nodes)");
            r.waiting_for("default/hello Running");
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        });
        let env = Ok(Env::local_for_tests());
        let r = scenario_result("t/hung".into(), &hung, &env, Duration::from_millis(300));
        match &r.verdict {
            Verdict::Fail(why) => {
                assert!(
                    why.starts_with(
                        "timed out after 0.3s (--scenario-timeout); its cluster was torn down; \
                         after step 1 (cluster up (2 nodes), at "
                    ),
                    "{why}"
                );
                assert!(why.ends_with("), waiting for default/hello Running"), "{why}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(r.timeline.len(), 1, "the steps it completed are its timeline");
        let quick = Scenario::new("t/quick", "", |_, _| Ok(()));
        let r = scenario_result("t/quick".into(), &quick, &env, Duration::from_secs(10));
        assert_eq!(r.verdict, Verdict::Pass);
    }
}
