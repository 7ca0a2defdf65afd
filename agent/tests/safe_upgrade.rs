//! Safe upgrade on the embedded cluster, deployed as the DaemonSet from
//! `istio-cni-agent manifest`: a change of the pod template rolls the
//! DaemonSet (RollingUpdate, one node at a time) while a sampler thread
//! reads every node's conflist on each inotify event and every 2 ms.
//!
//! - `safeUpgrade.enabled=true`: no sample during the roll lacks the
//!   istio-cni entry (the old agent left it, the new one took it over);
//!   after the roll `kubectl delete ds` (an uninstall) still leaves every
//!   node's files byte-identical to before the install, which only the new
//!   agent, holding the restore record it took over, can do.
//! - off (the default): the roll window shows the entry removed, so the
//!   feature is what keeps it.
//!
//! Needs root (or ci/test's user namespace).

mod daemonset_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use daemonset_support::{
    NodeFiles, READY, Setup, agents, apply, cluster, conflists, delete_daemonset, has_entry, node_files, rollout, setup,
};
use istio_cni_kind::cluster::Cluster;
use notify::{EventKind, RecursiveMode, Watcher};

/// What the sampler saw: reads, and reads without the entry, per node.
#[derive(Debug, Default)]
struct Samples {
    reads: usize,
    missing: Vec<String>,
}

/// Reads each conflist on every change in its directory and at least every
/// 2 ms until stopped. The agent replaces the file by rename, so every read
/// sees one whole version; a removal that lasts a pod's restart cannot hide
/// between reads.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Samples>,
}

impl Sampler {
    fn start(files: Vec<(String, PathBuf)>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (tx, rx) = channel();
            let mut watcher = notify::recommended_watcher(move |e| {
                let _ = tx.send(e);
            })
            .expect("inotify watcher");
            for (_, path) in &files {
                let dir = path.parent().expect("a conf dir");
                watcher
                    .watch(dir, RecursiveMode::NonRecursive)
                    .expect("watching the conf dir");
            }
            let mut samples = Samples::default();
            while !flag.load(Ordering::SeqCst) {
                for (node, path) in &files {
                    samples.reads += 1;
                    let bytes = std::fs::read(path).unwrap_or_default();
                    if !has_entry(&bytes) {
                        samples.missing.push(node.clone());
                    }
                }
                // The next change, or 2 ms; our own reads (access events) wake nothing.
                let until = Instant::now() + Duration::from_millis(2);
                loop {
                    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(Ok(event)) if matches!(event.kind, EventKind::Access(_)) => continue,
                        Ok(_) | Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(until.saturating_duration_since(Instant::now()));
                            break;
                        }
                    }
                }
            }
            drop(watcher);
            samples
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the sampler thread")
    }
}

/// What a roll left to check.
struct Rolled {
    samples: Samples,
    before: NodeFiles,
    setup: Setup,
}

/// Installs with `sets`, rolls the DaemonSet by a template change while
/// sampling, and returns what the sampler saw during the roll.
fn roll(setup: Setup, nodes: u32, sets: &[&str]) -> Rolled {
    let Setup { kubectl, cluster, .. } = &setup;
    let before = node_files(cluster);
    apply(kubectl, sets);
    rollout(kubectl);
    assert_installed(cluster, "not installed");
    let files = conflists(cluster);

    let sampler = Sampler::start(files);
    let mut rolled: Vec<&str> = sets.to_vec();
    rolled.push("podAnnotations.rolled=v2");
    apply(kubectl, &rolled);
    rollout(kubectl);
    let samples = sampler.finish();
    let expected: Vec<String> = (0..nodes).map(|i| format!("node-{i} 2 True")).collect();
    assert_eq!(
        agents(
            kubectl,
            &format!("{{.spec.nodeName}} {{.metadata.labels.pod-template-generation}} {READY}")
        ),
        expected,
        "every agent is of the new generation and Ready"
    );
    Rolled { samples, before, setup }
}

/// Every node's conflist has the istio-cni entry; `what` says why it should.
fn assert_installed(cluster: &Cluster, what: &str) {
    for (node, path) in conflists(cluster) {
        assert!(has_entry(&std::fs::read(path).unwrap_or_default()), "{node}: {what}");
    }
}

impl Rolled {
    /// After the roll the entry is (still or again) in every conflist, and
    /// deleting the DaemonSet leaves every node's files as they were before
    /// the install.
    fn uninstall_restores(self, installed: &str, restored: &str) {
        let Setup { kubectl, cluster, .. } = &self.setup;
        assert_installed(cluster, installed);
        delete_daemonset(kubectl);
        assert_eq!(node_files(cluster), self.before, "{restored}");
    }
}

/// [`roll`] when the machine has what it needs (root, the CNI plugins and
/// kubectl); `None` after the skip otherwise.
fn gated_roll(test: &str, scratch: &str, nodes: u32, sets: &[&str]) -> Option<Rolled> {
    let setup = setup(test, scratch, |s| cluster(s, nodes))?;
    Some(roll(setup, nodes, sets))
}

#[test]
fn safe_upgrade_keeps_the_plugin_through_a_roll_and_uninstall_still_restores() {
    let Some(rolled) = gated_roll(
        "safe_upgrade_keeps_the_plugin_through_a_roll_and_uninstall_still_restores",
        "safe-upgrade",
        2,
        &["safeUpgrade.enabled=true"],
    ) else {
        return;
    };
    let samples = &rolled.samples;
    eprintln!("safe upgrade: {} reads during the roll", samples.reads);
    assert!(samples.reads > 0);
    assert!(
        samples.missing.is_empty(),
        "the istio-cni entry was missing in {} of {} reads during the roll: {:?}",
        samples.missing.len(),
        samples.reads,
        samples.missing
    );
    rolled.uninstall_restores(
        "kept",
        "after the roll, deleting the DaemonSet restores every node byte for byte",
    );
}

#[test]
fn without_safe_upgrade_a_roll_removes_the_entry_for_a_while() {
    let Some(rolled) = gated_roll(
        "without_safe_upgrade_a_roll_removes_the_entry_for_a_while",
        "no-safe-upgrade",
        1,
        &[],
    ) else {
        return;
    };
    let samples = &rolled.samples;
    eprintln!(
        "no safe upgrade: {} of {} reads during the roll lacked the entry",
        samples.missing.len(),
        samples.reads
    );
    assert!(
        !samples.missing.is_empty(),
        "the entry never went away during the roll ({} reads)",
        samples.reads
    );
    rolled.uninstall_restores("reinstalled", "deleting the DaemonSet restores every node");
}
