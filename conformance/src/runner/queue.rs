//! A work queue over scoped std threads: `workers` threads take jobs in
//! order until none is left; every update is delivered, in arrival order,
//! to the caller's thread (which draws progress and collects results).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// What a job reports.
#[derive(Debug)]
pub enum Update<R> {
    /// Work called `label` is running now.
    Started(String),
    /// A result.
    Result(R),
    /// `label` is done (sent by the queue after the job returns).
    Finished(String),
    /// The job `label` panicked, with the message.
    Panicked(String, String),
    /// Nothing happened for a while (lets the caller redraw a clock).
    Tick,
}

/// A job's handle for reporting.
pub struct Reporter<R> {
    tx: Sender<Update<R>>,
}

impl<R> Reporter<R> {
    /// Reports that `label` started.
    pub fn started(&self, label: impl Into<String>) {
        let _ = self.tx.send(Update::Started(label.into()));
    }

    /// Reports a result.
    pub fn result(&self, result: R) {
        let _ = self.tx.send(Update::Result(result));
    }
}

/// A job's body.
pub type Body<R> = Box<dyn FnOnce(&Reporter<R>) + Send>;

/// A unit of work: a label and a body.
pub struct Job<R> {
    pub label: String,
    pub run: Body<R>,
}

impl<R> Job<R> {
    pub fn new(label: impl Into<String>, run: impl FnOnce(&Reporter<R>) + Send + 'static) -> Self {
        Job {
            label: label.into(),
            run: Box::new(run),
        }
    }
}

/// Runs `jobs` on `workers` threads (at least 1), handing every update to
/// `on_update` on this thread; `Tick` comes every `tick` without news.
pub fn run<R: Send>(jobs: Vec<Job<R>>, workers: usize, tick: Duration, mut on_update: impl FnMut(Update<R>)) {
    let workers = workers.max(1).min(jobs.len().max(1));
    let queue = Mutex::new(VecDeque::from(jobs));
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || {
                loop {
                    let job = match queue.lock() {
                        Ok(mut q) => q.pop_front(),
                        Err(poisoned) => poisoned.into_inner().pop_front(),
                    };
                    let Some(job) = job else { break };
                    let reporter = Reporter { tx: tx.clone() };
                    let Job { label, run } = job;
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&reporter))) {
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_else(|| "(no message)".to_owned());
                        let _ = tx.send(Update::Panicked(label.clone(), msg));
                    }
                    let _ = tx.send(Update::Finished(label));
                }
            });
        }
        drop(tx);
        loop {
            match rx.recv_timeout(tick) {
                Ok(update) => on_update(update),
                Err(RecvTimeoutError::Timeout) => on_update(Update::Tick),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_job_in_parallel_and_survives_panics() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs: Vec<Job<usize>> = (0..6)
            .map(|i| {
                let (running, peak) = (running.clone(), peak.clone());
                Job::new(format!("job{i}"), move |r: &Reporter<usize>| {
                    r.started(format!("job{i}"));
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                    r.result(i);
                })
            })
            .collect();
        jobs.push(Job::new("boom", |_: &Reporter<usize>| panic!("kaboom")));
        let mut results = Vec::new();
        let mut finished = 0;
        let mut panics = Vec::new();
        run(jobs, 3, Duration::from_millis(5), |u| match u {
            Update::Result(i) => results.push(i),
            Update::Finished(_) => finished += 1,
            Update::Panicked(label, msg) => panics.push(format!("{label}: {msg}")),
            Update::Started(_) | Update::Tick => {}
        });
        results.sort();
        assert_eq!(results, [0, 1, 2, 3, 4, 5]);
        assert_eq!(finished, 7);
        assert_eq!(panics, ["boom: kaboom"]);
        let peak = peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&peak), "peak parallelism {peak}");
    }

    #[test]
    fn no_jobs_returns_at_once() {
        let mut n = 0;
        run(Vec::<Job<()>>::new(), 4, Duration::from_secs(10), |_| n += 1);
        assert_eq!(n, 0);
    }
}
