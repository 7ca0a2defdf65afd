//! The pure parts of probing: thresholds over consecutive results (what a
//! prober reports), and what a container's reported results mean for its
//! `started`/`ready` flags and for a restart (what the lifecycle keeps).

use k8s_openapi::api::core::v1::Container;

use super::spec::ProbeKind;

/// One probe run's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The check ran and failed; the text follows "<Kind> probe failed: ".
    Failure(String),
    /// The check could not run; kubelet throws such results away (they
    /// neither count towards a threshold nor reset one).
    Error(String),
}

/// Consecutive results against `successThreshold`/`failureThreshold`, as
/// kubelet's probe worker counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    success: u32,
    failure: u32,
    last: Option<bool>,
    run: u32,
    /// The result the container's status holds now.
    reported: Option<bool>,
}

impl Threshold {
    /// Before any run, readiness holds "failed" (not ready), liveness
    /// "succeeded" (alive), startup nothing.
    pub fn new(kind: ProbeKind, success: u32, failure: u32) -> Threshold {
        Threshold {
            success: success.max(1),
            failure: failure.max(1),
            last: None,
            run: 0,
            reported: match kind {
                ProbeKind::Readiness => Some(false),
                ProbeKind::Liveness => Some(true),
                ProbeKind::Startup => None,
            },
        }
    }

    /// Counts one run; the new result when a threshold is reached and the
    /// result differs from the one reported before.
    pub fn observe(&mut self, outcome: &Outcome) -> Option<bool> {
        let ok = match outcome {
            Outcome::Success => true,
            Outcome::Failure(_) => false,
            Outcome::Error(_) => return None,
        };
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let needed = if ok { self.success } else { self.failure };
        if self.run < needed || self.reported == Some(ok) {
            return None;
        }
        self.reported = Some(ok);
        Some(ok)
    }
}

/// A container's probe-driven flags, reset at each (re)start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    has_startup: bool,
    has_readiness: bool,
    started: bool,
    ready: bool,
    /// A kill was asked for this instance (asked once).
    killing: bool,
}

impl Health {
    /// The flags of a container about to start. Regular init containers
    /// take no probes.
    pub fn of(c: &Container, init: bool) -> Health {
        let mut h = Health {
            has_startup: !init && c.startup_probe.is_some(),
            has_readiness: !init && c.readiness_probe.is_some(),
            ..Health::default()
        };
        h.restart();
        h
    }

    /// A new instance of the container: no startup probe means started,
    /// no readiness probe means ready (once started).
    pub fn restart(&mut self) {
        self.started = !self.has_startup;
        self.ready = !self.has_readiness;
        self.killing = false;
    }

    /// `status.containerStatuses[].started` while running.
    pub fn started(&self) -> bool {
        self.started
    }

    /// `status.containerStatuses[].ready` while running.
    pub fn ready(&self) -> bool {
        self.started && self.ready
    }

    /// Applies a result a prober reported; the probe whose failure must
    /// kill the container (at most once per instance).
    pub fn apply(&mut self, kind: ProbeKind, ok: bool) -> Option<ProbeKind> {
        match (kind, ok) {
            (ProbeKind::Startup, true) => self.started = true,
            (ProbeKind::Readiness, ok) => self.ready = ok,
            (ProbeKind::Liveness, true) => {}
            (ProbeKind::Startup | ProbeKind::Liveness, false) => {
                if !self.killing {
                    self.killing = true;
                    return Some(kind);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [ProbeKind; 3] = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness];

    fn ok() -> Outcome {
        Outcome::Success
    }
    fn fail() -> Outcome {
        Outcome::Failure("x".into())
    }
    fn err() -> Outcome {
        Outcome::Error("x".into())
    }

    /// Feeds `runs` and collects what was reported after each.
    fn feed(t: &mut Threshold, runs: &[Outcome]) -> Vec<Option<bool>> {
        runs.iter().map(|o| t.observe(o)).collect()
    }

    #[test]
    fn readiness_needs_success_threshold_runs_in_a_row_and_failure_threshold_to_drop() {
        let mut t = Threshold::new(ProbeKind::Readiness, 2, 3);
        assert_eq!(
            feed(&mut t, &[ok(), fail(), ok(), ok(), ok()]),
            [None, None, None, Some(true), None],
            "a failure restarts the success run; starting not ready, a failure is no news"
        );
        assert_eq!(
            feed(&mut t, &[fail(), fail(), ok(), fail(), fail(), fail(), fail()]),
            [None, None, None, None, None, Some(false), None]
        );
    }

    #[test]
    fn errors_neither_count_nor_reset_a_run() {
        let mut t = Threshold::new(ProbeKind::Liveness, 1, 3);
        assert_eq!(
            feed(&mut t, &[fail(), err(), fail(), err(), err(), fail()]),
            [None, None, None, None, None, Some(false)]
        );
        let mut t = Threshold::new(ProbeKind::Startup, 1, 3);
        assert_eq!(feed(&mut t, &[err(), err(), err(), err()]), [None; 4]);
    }

    #[test]
    fn initial_results_per_kind() {
        // Liveness starts alive: successes are no news, failures are.
        let mut live = Threshold::new(ProbeKind::Liveness, 1, 1);
        assert_eq!(feed(&mut live, &[ok(), ok(), fail()]), [None, None, Some(false)]);
        // Startup starts unknown: the first result at threshold is news either way.
        let mut s = Threshold::new(ProbeKind::Startup, 1, 1);
        assert_eq!(s.observe(&ok()), Some(true));
        let mut s = Threshold::new(ProbeKind::Startup, 1, 2);
        assert_eq!(feed(&mut s, &[fail(), fail()]), [None, Some(false)]);
        // Readiness starts not ready.
        let mut r = Threshold::new(ProbeKind::Readiness, 1, 1);
        assert_eq!(feed(&mut r, &[fail(), ok(), ok()]), [None, Some(true), None]);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        for kind in KINDS {
            let mut t = Threshold::new(kind, 0, 0);
            let first_fail = t.clone().observe(&fail());
            assert_eq!(first_fail.is_some(), kind != ProbeKind::Readiness, "{kind:?}");
            assert_eq!(t.observe(&ok()).is_some(), kind != ProbeKind::Liveness, "{kind:?}");
        }
    }

    /// Every sequence of up to 6 runs, every threshold pair up to 3: a
    /// report happens exactly when the last `threshold` runs (errors
    /// skipped) agree and differ from the previous report.
    #[test]
    fn exhaustive_against_a_reference_model() {
        let outcomes = [ok(), fail(), err()];
        for kind in KINDS {
            for success in 1..=3u32 {
                for failure in 1..=3u32 {
                    for len in 0..=6u32 {
                        for code in 0..3u32.pow(len) {
                            let runs: Vec<Outcome> = (0..len)
                                .map(|i| outcomes[(code / 3u32.pow(i) % 3) as usize].clone())
                                .collect();
                            let mut t = Threshold::new(kind, success, failure);
                            let mut reported = Threshold::new(kind, success, failure).reported;
                            let mut seen: Vec<bool> = Vec::new();
                            for run in &runs {
                                let got = t.observe(run);
                                let want = match run {
                                    Outcome::Error(_) => None,
                                    other => {
                                        let ok = *other == Outcome::Success;
                                        seen.push(ok);
                                        let need = if ok { success } else { failure } as usize;
                                        let streak = seen.iter().rev().take_while(|&&s| s == ok).count();
                                        (streak >= need && reported != Some(ok)).then_some(ok)
                                    }
                                };
                                if want.is_some() {
                                    reported = want;
                                }
                                assert_eq!(got, want, "{kind:?} s={success} f={failure} {runs:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    fn container(startup: bool, readiness: bool) -> Container {
        let probe = || Some(Default::default());
        Container {
            name: "app".into(),
            startup_probe: if startup { probe() } else { None },
            readiness_probe: if readiness { probe() } else { None },
            ..Default::default()
        }
    }

    #[test]
    fn without_probes_a_running_container_is_started_and_ready() {
        let h = Health::of(&container(false, false), false);
        assert!(h.started() && h.ready());
    }

    #[test]
    fn startup_gates_readiness_and_readiness_drives_ready() {
        for (startup, readiness) in [(false, true), (true, false), (true, true)] {
            let mut h = Health::of(&container(startup, readiness), false);
            assert_eq!(h.started(), !startup);
            assert!(!h.ready(), "startup={startup} readiness={readiness}");
            if readiness {
                assert_eq!(h.apply(ProbeKind::Readiness, true), None);
                assert_eq!(h.ready(), !startup, "readiness alone is not enough before startup");
            }
            if startup {
                assert_eq!(h.apply(ProbeKind::Startup, true), None);
            }
            assert!(h.started() && h.ready());
            if readiness {
                h.apply(ProbeKind::Readiness, false);
                assert!(h.started() && !h.ready());
            }
        }
    }

    #[test]
    fn liveness_and_startup_failures_kill_once_per_instance() {
        for kind in [ProbeKind::Liveness, ProbeKind::Startup] {
            let mut h = Health::of(&container(true, true), false);
            assert_eq!(h.apply(ProbeKind::Liveness, true), None);
            assert_eq!(h.apply(kind, false), Some(kind));
            assert_eq!(h.apply(ProbeKind::Liveness, false), None, "already being killed");
            assert_eq!(h.apply(ProbeKind::Startup, false), None);
            h.restart();
            assert!(!h.started() && !h.ready(), "a new instance starts over");
            assert_eq!(h.apply(kind, false), Some(kind));
        }
        let mut h = Health::of(&container(false, true), false);
        assert_eq!(h.apply(ProbeKind::Readiness, false), None, "readiness never kills");
    }

    #[test]
    fn init_containers_take_no_probes() {
        let h = Health::of(&container(true, true), true);
        assert!(h.started() && h.ready());
    }
}
