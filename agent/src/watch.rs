//! The watch loop (docs/agent.md#watch-loop): install, then keep the plugin
//! installed while the primary CNI rewrites its files, the binaries are
//! replaced or the service-account token rotates.
//!
//! One inotify watcher covers the conf dir, the installed binaries and the
//! service-account dir; each iteration validates our entry and, when valid,
//! reports ready and sleeps until something changes. Differences from Istio,
//! on purpose:
//!
//! - the watcher lives across passes (Istio rebuilds it after each pass and
//!   loses changes made in between, e.g. a token rotated mid-pass);
//! - renames away from a watched name count (Istio ignores Rename-from, so a
//!   primary moved aside went unnoticed until the next unrelated event);
//! - the throttle allows a burst of [`Throttle::BURST`] passes and then one
//!   every 50 ms, instead of one per 5 s after the first: re-convergence stays
//!   under 100 ms while a file storm still costs at most 20 passes a second;
//! - pending events are drained before a pass, so a storm of N events costs
//!   far fewer than N passes;
//! - a missing conf dir is polled for instead of hanging forever;
//! - a primary config we cannot edit (caught mid-write by an in-place
//!   rewrite, invalid, conflicting twins) makes the agent wait for the next
//!   change in the conf dir, not exit: Istio exits and the DaemonSet
//!   crash-loops with backoff, leaving pods unprotected for minutes.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecursiveMode, Watcher};

use crate::install::{InstallError, Installer};
use crate::metrics::{InstallResult, Metrics};
use crate::server::Readiness;

/// What wakes the loop.
#[derive(Debug)]
pub enum Wake {
    /// A filesystem change under a watched path.
    Changed(PathBuf),
    /// The watcher failed.
    Error(String),
    /// SIGTERM/SIGINT: stop and let the caller clean up.
    Stop,
}

/// A handle to stop a running loop from another thread.
#[derive(Clone)]
pub struct StopHandle(Sender<Wake>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(Wake::Stop);
    }
}

/// Why the loop ended with an error (the agent then cleans up and exits 1).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("watching {path}: {reason}")]
    Watch { path: PathBuf, reason: String },
}

/// Token bucket: `BURST` passes at once, then one per `INTERVAL`.
#[derive(Debug)]
pub struct Throttle {
    tokens: f64,
    last: Instant,
    /// Consecutive passes that had to wait.
    hits: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            tokens: Self::BURST,
            last: Instant::now(),
            hits: 0,
        }
    }
}

impl Throttle {
    pub const BURST: f64 = 20.0;
    pub const INTERVAL: Duration = Duration::from_millis(50);

    /// Takes a token; returns how long to wait first (zero when one was available).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let refill = now.duration_since(self.last).as_secs_f64() / Self::INTERVAL.as_secs_f64();
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            self.hits = 0;
            Duration::ZERO
        } else {
            self.hits += 1;
            Self::INTERVAL.mul_f64(-self.tokens)
        }
    }

    /// Consecutive throttled passes.
    pub fn hits(&self) -> u32 {
        self.hits
    }
}

/// The loop's state; [`WatchLoop::run`] returns the installer for cleanup.
pub struct WatchLoop {
    installer: Installer,
    conf_dir: PathBuf,
    ready: Readiness,
    metrics: Metrics,
    tx: Sender<Wake>,
    rx: Receiver<Wake>,
    /// The live watcher and the targets it was built for.
    active: Option<(notify::RecommendedWatcher, Vec<PathBuf>)>,
    /// How long to wait for a missing conf dir to appear between checks.
    pub poll: Duration,
}

impl WatchLoop {
    /// `conf_dir` is MOUNTED_CNI_NET_DIR, watched while no primary config exists.
    pub fn new(installer: Installer, conf_dir: PathBuf, ready: Readiness, metrics: Metrics) -> WatchLoop {
        let (tx, rx) = channel();
        WatchLoop {
            installer,
            conf_dir,
            ready,
            metrics,
            tx,
            rx,
            active: None,
            poll: Duration::from_millis(500),
        }
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.tx.clone())
    }

    /// Runs until stopped (Ok) or an install/watch error; either way the
    /// installer comes back so the caller can clean up.
    pub fn run(mut self) -> (Installer, Result<(), WatchError>) {
        let result = self.run_inner();
        self.set_ready(false);
        (self.installer, result)
    }

    fn run_inner(&mut self) -> Result<(), WatchError> {
        let mut throttle = Throttle::default();
        // Stopped before the first pass (a termination request at start):
        // install nothing, so cleanup has nothing of ours to undo.
        if self.stop_queued() {
            return Ok(());
        }
        if !self.install()? {
            return Ok(());
        }
        loop {
            match self.sleep_watch()? {
                Some(()) => {}
                None => return Ok(()),
            }
            let wait = throttle.reserve(Instant::now());
            if throttle.hits() > 5 {
                let hint = match self.installer.current_path() {
                    Some(p) if p.to_string_lossy().contains("cilium") => {
                        " Cilium rewrites its config unless installed with cni.exclusive=false."
                    }
                    _ => "",
                };
                tracing::warn!(
                    target: "cni-agent",
                    "Configuration has been reconciled multiple times in a short period; another component may be overwriting the CNI config.{hint}"
                );
            }
            if !wait.is_zero() && self.wait(wait) {
                return Ok(());
            }
            if !self.install()? {
                return Ok(());
            }
        }
    }

    /// One install pass, waiting for the primary config if there is none yet.
    /// Returns false when stopped while waiting.
    fn install(&mut self) -> Result<bool, WatchError> {
        loop {
            match self.installer.install_all() {
                Ok(()) => return Ok(true),
                // A primary config that cannot be edited (caught mid-write,
                // invalid, twins in conflict) is the primary CNI's or the
                // user's to fix: wait for the conf dir to change instead of
                // crash-looping the DaemonSet.
                Err(e @ (InstallError::NoPrimaryConfig { .. } | InstallError::CreateCniConfig(_))) => {
                    tracing::warn!(target: "cni-agent", "{e}; waiting for the CNI config dir to change");
                    let dir = self.conf_dir.clone();
                    let mut targets = self.installer.watch_targets();
                    if !targets.contains(&dir) {
                        targets.push(dir.clone());
                    }
                    self.ensure_watch(&targets)?;
                    // The file may have appeared (or finished being written)
                    // before the watch existed: check again now that no
                    // event can be missed.
                    match self.installer.install_all() {
                        Ok(()) => return Ok(true),
                        Err(InstallError::NoPrimaryConfig { .. } | InstallError::CreateCniConfig(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // A missing dir cannot be watched: poll until it exists.
                    match self.next_wake(if dir.is_dir() { None } else { Some(self.poll) }) {
                        Some(Wake::Stop) => return Ok(false),
                        Some(Wake::Error(reason)) => return Err(WatchError::Watch { path: dir, reason }),
                        _ => {}
                    }
                    if self.drain() {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Validates and, when valid, reports ready and blocks until a change.
    /// `Some(())`: reinstall; `None`: stopped.
    fn sleep_watch(&mut self) -> Result<Option<()>, WatchError> {
        let targets = self.installer.watch_targets();
        self.ensure_watch(&targets)?;
        let result = (|| {
            if let Err(e) = self.installer.check_valid() {
                tracing::info!(target: "cni-agent", "CNI config needs reinstalling: {e}");
                return Ok(Some(()));
            }
            if let Some(wake) = self.try_wake() {
                return self.on_wake(wake);
            }
            self.set_ready(true);
            self.metrics.install(InstallResult::SUCCESS);
            match self.next_wake(None) {
                Some(wake) => self.on_wake(wake),
                None => Ok(None),
            }
        })();
        self.set_ready(false);
        result
    }

    fn on_wake(&mut self, wake: Wake) -> Result<Option<()>, WatchError> {
        match wake {
            Wake::Stop => Ok(None),
            Wake::Error(reason) => Err(WatchError::Watch {
                path: self.conf_dir.clone(),
                reason,
            }),
            Wake::Changed(path) => {
                tracing::debug!(target: "cni-agent", "{} changed; re-checking the installation", path.display());
                Ok((!self.drain()).then_some(()))
            }
        }
    }

    /// Keeps one watcher alive across passes, rebuilt only when the targets
    /// change: Istio builds a new one after every pass, and a change that
    /// lands between a pass reading a file and the new watcher existing is
    /// lost (a token rotated in that window went unnoticed). Directories are
    /// watched for their entries; a file target is watched through its
    /// directory (a rename over it replaces the inode a file watch is tied
    /// to), with events for that name only. Our own writes wake us once; the
    /// pass after them finds nothing to do.
    fn ensure_watch(&mut self, targets: &[PathBuf]) -> Result<(), WatchError> {
        let mut wanted: Vec<PathBuf> = targets.iter().filter(|t| t.exists()).cloned().collect();
        wanted.sort();
        wanted.dedup();
        if self.active.as_ref().is_some_and(|(_, built)| *built == wanted) {
            return Ok(());
        }
        self.active = None;
        let dirs: Vec<PathBuf> = wanted.iter().filter(|t| t.is_dir()).cloned().collect();
        let files: Vec<PathBuf> = wanted.iter().filter(|t| !t.is_dir()).cloned().collect();
        let mut watched: Vec<PathBuf> = dirs.clone();
        watched.extend(files.iter().filter_map(|f| f.parent().map(PathBuf::from)));
        watched.sort();
        watched.dedup();
        let tx = self.tx.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
            let wake = match res {
                Ok(event) if relevant(&event.kind) => {
                    let hit = event.paths.iter().find(|p| {
                        files.contains(p)
                            || p.parent().is_some_and(|parent| dirs.iter().any(|d| d == parent))
                            || dirs.contains(p)
                    });
                    match hit {
                        Some(p) => Wake::Changed(p.clone()),
                        None => return,
                    }
                }
                Ok(_) => return,
                Err(e) => Wake::Error(e.to_string()),
            };
            let _ = tx.send(wake);
        })
        .map_err(|e| WatchError::Watch {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        for dir in &watched {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| WatchError::Watch {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
        }
        self.active = Some((watcher, wanted));
        Ok(())
    }

    fn set_ready(&self, ready: bool) {
        self.ready.set(ready);
        self.metrics.set_install_ready(ready);
    }

    fn try_wake(&self) -> Option<Wake> {
        self.rx.try_recv().ok()
    }

    /// Blocks for the next wake-up; `Some(Changed)` on timeout so the caller re-checks.
    fn next_wake(&self, timeout: Option<Duration>) -> Option<Wake> {
        match timeout {
            None => self.rx.recv().ok(),
            Some(t) => match self.rx.recv_timeout(t) {
                Ok(w) => Some(w),
                Err(RecvTimeoutError::Timeout) => Some(Wake::Changed(PathBuf::new())),
                Err(RecvTimeoutError::Disconnected) => None,
            },
        }
    }

    /// Whether a stop request is queued; change events before it are dropped.
    fn stop_queued(&self) -> bool {
        while let Ok(w) = self.rx.try_recv() {
            if matches!(w, Wake::Stop) {
                return true;
            }
        }
        false
    }

    /// Drops queued change events; true (the request kept queued) when a
    /// stop request was among them, so no pass starts after it.
    fn drain(&self) -> bool {
        while let Ok(w) = self.rx.try_recv() {
            if matches!(w, Wake::Stop) {
                let _ = self.tx.send(Wake::Stop);
                return true;
            }
        }
        false
    }

    /// Sleeps `d` unless stopped; true when stopped.
    fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return true,
                _ => {}
            }
        }
    }
}

/// Create, content write, rename (either side) and remove count; chmod and reads do not.
fn relevant(kind: &EventKind) -> bool {
    use notify::event::ModifyKind;
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_a_burst_then_one_per_interval() {
        let mut t = Throttle::default();
        let start = Instant::now();
        for _ in 0..20 {
            assert_eq!(t.reserve(start), Duration::ZERO);
        }
        let wait = t.reserve(start);
        assert_eq!(wait, Throttle::INTERVAL);
        assert_eq!(t.hits(), 1);
        // After a quiet second the bucket is full again.
        assert_eq!(t.reserve(start + Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(t.hits(), 0);
    }

    #[test]
    fn stopped_before_the_first_pass_installs_nothing() {
        let root = testkit::Scratch::new("watch-stop");
        let dir = |name: &str| format!("{}", root.join(name).display());
        let (conf, bin, src, run, sa) = (dir("conf"), dir("bin"), dir("src"), dir("run"), dir("sa"));
        let s = crate::config::InstallSettings::from_flags(&[
            &format!("--mounted-cni-net-dir={conf}"),
            &format!("--cni-bin-dir={bin}"),
            &format!("--cni-bin-source-dir={src}"),
            &format!("--cni-agent-run-dir={run}"),
            &format!("--service-account-dir={sa}"),
            "--kubernetes-service-host=10.96.0.1",
            "--kubernetes-service-port=443",
            "--skip-tls-verify=true",
        ]);
        for d in [
            &s.mounted_cni_net_dir,
            &s.cni_bin_dir,
            &s.cni_bin_source_dir,
            &s.service_account_dir,
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(s.cni_bin_source_dir.join("istio-cni"), "#!x\n").unwrap();
        std::fs::write(s.service_account_dir.join("token"), "t").unwrap();
        let primary = s.mounted_cni_net_dir.join("10-k.conflist");
        let text = r#"{"cniVersion": "0.3.1", "name": "k", "plugins": [{"type": "ptp"}]}"#;
        std::fs::write(&primary, text).unwrap();
        let conf = s.mounted_cni_net_dir.clone();
        let bin = s.cni_bin_dir.clone();
        let installer = Installer::new(s, "info".into(), Metrics::new());
        let watch = WatchLoop::new(installer, conf, Readiness::default(), Metrics::new());
        watch.stop_handle().stop();
        let (installer, result) = watch.run();
        result.unwrap();
        assert!(installer.current_path().is_none());
        assert!(!bin.join("istio-cni").exists(), "no pass ran");
        assert_eq!(std::fs::read_to_string(&primary).unwrap(), text);
    }

    #[test]
    fn chmod_is_not_a_change() {
        use notify::event::{CreateKind, MetadataKind, ModifyKind, RenameMode};
        assert!(relevant(&EventKind::Create(CreateKind::File)));
        assert!(relevant(&EventKind::Modify(ModifyKind::Name(RenameMode::From))));
        assert!(!relevant(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Permissions
        ))));
    }
}
