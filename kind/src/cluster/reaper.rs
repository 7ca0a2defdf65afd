//! Tearing a local cluster down from outside its owner. A scenario that
//! hangs still holds its [`Cluster`](super::Cluster); the runner that gave up
//! on it must still leave nothing behind: no process in the cluster's
//! namespaces, no netns pin mounted, no directory, no cgroup. The owner's own
//! teardown, if it ever runs, then finds everything gone.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::ClusterError;
use super::error::{BoxError, Leftover, Leftovers};
use crate::node::cgroup::ClusterCgroup;
use crate::node::{ClusterNetwork, Netns, netns};

/// What a reaper needs of a [`LocalCluster`](super::LocalCluster).
pub(super) struct Parts {
    pub tasks: Vec<tokio::task::AbortHandle>,
    /// The nodes' kubelets and heartbeats (nodes join later too).
    pub node_tasks: Arc<Mutex<std::collections::HashMap<String, super::membership::NodeTasks>>>,
    pub processes: Arc<Mutex<HashSet<i32>>>,
    pub network: Weak<ClusterNetwork>,
    pub harness: Netns,
    pub root: PathBuf,
    pub cgroup: Option<ClusterCgroup>,
}

/// Tears a local cluster down from any thread ([`Cluster::reaper`](super::Cluster::reaper)).
#[derive(Clone)]
pub struct Reaper {
    parts: Arc<Parts>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper").field("root", &self.parts.root).finish()
    }
}

impl Reaper {
    pub(super) fn new(parts: Parts) -> Reaper {
        Reaper { parts: Arc::new(parts) }
    }

    /// The cluster's directory (gone once reaped).
    pub fn root(&self) -> &Path {
        &self.parts.root
    }

    /// Stops the kubelets and the scheduler (nothing restarts a pod), kills
    /// every process in the cluster's network namespaces (pause processes,
    /// containers, node agents, plugin calls in flight), then removes the
    /// sandboxes, nodes, bridge, harness netns, cgroup and directory.
    /// Idempotent; reports what could not be removed.
    pub fn reap(&self) -> Result<(), ClusterError> {
        let parts = &self.parts;
        for task in &parts.tasks {
            task.abort();
        }
        if let Ok(nodes) = parts.node_tasks.lock() {
            nodes
                .values()
                .flat_map(super::membership::NodeTasks::abort_handles)
                .for_each(|t| t.abort());
        }
        if let Ok(groups) = parts.processes.lock() {
            for pgid in groups.iter() {
                let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
            }
        }
        // A kubelet caught between two awaits may still start a process:
        // sweep until a pass finds none (a zombie has no namespace left to match).
        for _ in 0..20 {
            if kill_in(&self.namespaces()) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut leftovers = Leftovers::default();
        if let Some(network) = parts.network.upgrade()
            && let Err(e) = network.teardown_shared()
        {
            leftovers.push(e);
        }
        remove_leftovers(parts.cgroup.as_ref(), &parts.harness, &parts.root, &mut leftovers);
        leftovers.into_result()
    }

    /// (device, inode) of every network namespace of the cluster still pinned.
    fn namespaces(&self) -> HashSet<(u64, u64)> {
        let mut pins = vec![self.parts.harness.path().to_path_buf()];
        if let Some(network) = self.parts.network.upgrade() {
            for node in network.nodes() {
                pins.push(node.netns().path().to_path_buf());
                pins.extend(
                    node.pod_ids()
                        .iter()
                        .filter_map(|id| node.pod_netns(id))
                        .map(|sandbox| sandbox.netns.path().to_path_buf()),
                );
            }
        }
        pins.iter()
            .filter(|pin| netns::is_mounted(pin))
            .filter_map(|pin| std::fs::metadata(pin).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect()
    }
}

/// The last of a local cluster, after its network: its cgroup, its harness
/// netns and its directory (gone already when a reaper got there first).
pub(super) fn remove_leftovers(
    cgroup: Option<&ClusterCgroup>,
    harness: &Netns,
    root: &Path,
    leftovers: &mut Leftovers,
) {
    let not_removed = |what: String, source: BoxError| Leftover::NotRemoved { what, source };
    if let Some(cgroup) = cgroup
        && let Err(e) = cgroup.remove()
    {
        leftovers.push(not_removed(format!("cgroup {}", cgroup.dir().display()), e.into()));
    }
    if let Err(e) = harness.delete() {
        leftovers.push(not_removed("harness netns".into(), e.into()));
    }
    match remove_tree(root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            leftovers.push(not_removed(root.display().to_string(), e.into()))
        }
        _ => {}
    }
}

/// Removes `root` and everything under it. A blocking call of the cluster
/// (a plugin's IPAM write, a sandbox removal) that aborting its task could
/// not stop may still add a file while the tree goes: then the removal is
/// tried again, a bounded number of times.
fn remove_tree(root: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(root) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 40 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

/// SIGKILLs every process (but this one) whose network namespace is one of
/// `namespaces`; how many it signalled.
fn kill_in(namespaces: &HashSet<(u64, u64)>) -> usize {
    if namespaces.is_empty() {
        return 0;
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(ns) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if namespaces.contains(&(ns.dev(), ns.ino()))
            && let Ok(raw) = i32::try_from(pid)
            && kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}
