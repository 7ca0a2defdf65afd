//! Finding a process's network namespace from a `/proc` tree (the node's,
//! `/host/proc` in a DaemonSet):
//!
//! 1. every process's `<proc>/<pid>/ns/net`, grouped by namespace (one check
//!    per namespace, not per process), the host namespace skipped;
//! 2. a namespace is a candidate when the caller's check accepts it (run
//!    through one of its processes' `ns/net`, trying the next process when
//!    one exits meanwhile);
//! 3. among candidates, processes whose cgroup the caller prefers win; then
//!    the oldest process (no start time last), then the lowest pid.
//!
//! The result is an open handle, so the namespace cannot vanish or be
//! swapped (pid reuse) between finding and using it. Every file read under
//! the proc root is capped at [`PROC_FILE_CAP`] bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::read::read_capped;

/// The most read from one `/proc/<pid>/{cgroup,stat}` file. Real ones are a
/// few hundred bytes (a cgroup v1 file with every controller, a few KiB).
pub const PROC_FILE_CAP: u64 = 64 << 10;

/// Where to look, and what never to return.
#[derive(Debug, Clone)]
pub struct NetnsFinder {
    /// The `/proc` tree to walk.
    pub proc_root: PathBuf,
    /// The host netns, never a candidate.
    pub host_netns: PathBuf,
}

/// An open network namespace found through a process.
#[derive(Debug)]
pub struct Found {
    file: File,
    /// The process it was found through.
    pub pid: i32,
    /// The namespace inode.
    pub inode: u64,
    /// Every candidate, best first (`pid` is the first one still there).
    pub candidates: Vec<Candidate>,
}

impl Found {
    /// Whether more than one namespace passed the check.
    pub fn ambiguous(&self) -> bool {
        self.candidates.iter().map(|c| c.inode).collect::<BTreeSet<_>>().len() > 1
    }

    /// A path to the namespace that stays valid while `self` lives (the
    /// process it was found through may exit meanwhile).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Why no namespace was found.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The proc root or the host netns could not be read.
    #[error("reading {}: {source}", path.display())]
    Proc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No namespace passed the check.
    #[error(
        "none of the {checked} namespaces of processes under {} matched{}",
        proc_root.display(),
        last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    NotFound {
        checked: usize,
        proc_root: PathBuf,
        /// The last error of the caller's check, if any.
        last_error: Option<String>,
    },
}

/// One process in a namespace that passed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pid: i32,
    pub inode: u64,
    /// The caller prefers its cgroup.
    pub preferred: bool,
    /// `/proc/<pid>/stat` field 22 (clock ticks since boot).
    pub start_time: Option<u64>,
}

/// (device, inode) of a namespace file.
type NsId = (u64, u64);

impl NetnsFinder {
    /// Finds and opens the best namespace. `check` gets a namespace path
    /// (`<proc>/<pid>/ns/net`) and says whether it is wanted; an `Err` means
    /// "could not tell through this process". `prefer` gets a candidate
    /// process's cgroup file text. Blocking: run it off an async runtime.
    pub fn find(
        &self,
        mut check: impl FnMut(&Path) -> Result<bool, String>,
        prefer: impl Fn(&str) -> bool,
    ) -> Result<Found, FindError> {
        let host_id = ns_id(&self.host_netns).map_err(|source| FindError::Proc {
            path: self.host_netns.clone(),
            source,
        })?;
        let by_netns = self.namespaces(host_id)?;
        let mut candidates = Vec::new();
        let mut last_error = None;
        for ((_, inode), pids) in &by_netns {
            match self.check_namespace(pids, &mut check) {
                Ok(true) => candidates.extend(pids.iter().map(|&pid| Candidate {
                    pid,
                    inode: *inode,
                    preferred: self.read(pid, "cgroup").is_some_and(|text| prefer(&text)),
                    start_time: self.read(pid, "stat").and_then(|s| parse_start_time(&s)),
                })),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
        }
        rank(&mut candidates);
        // Try the best candidate first; one whose process exited falls back
        // to the next, but a pid reused into another netns is refused.
        let opened = candidates.iter().find_map(|c| {
            let file = File::open(self.ns_path(c.pid)).ok()?;
            let same = file
                .metadata()
                .is_ok_and(|m| m.ino() == c.inode && (m.dev(), m.ino()) != host_id);
            same.then_some((file, c.pid, c.inode))
        });
        if let Some((file, pid, inode)) = opened {
            return Ok(Found {
                file,
                pid,
                inode,
                candidates,
            });
        }
        Err(FindError::NotFound {
            checked: by_netns.len(),
            proc_root: self.proc_root.clone(),
            last_error,
        })
    }

    /// Every namespace but the host's, with its pids ascending.
    fn namespaces(&self, host_id: NsId) -> Result<BTreeMap<NsId, Vec<i32>>, FindError> {
        let entries = std::fs::read_dir(&self.proc_root).map_err(|source| FindError::Proc {
            path: self.proc_root.clone(),
            source,
        })?;
        let mut by_netns: BTreeMap<NsId, Vec<i32>> = BTreeMap::new();
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // Processes exit and kernel threads deny access: skip silently.
            let Ok(id) = ns_id(&self.ns_path(pid)) else {
                continue;
            };
            if id != host_id {
                by_netns.entry(id).or_default().push(pid);
            }
        }
        for pids in by_netns.values_mut() {
            pids.sort_unstable();
        }
        Ok(by_netns)
    }

    /// The check's answer through the first process that can give one.
    fn check_namespace(
        &self,
        pids: &[i32],
        check: &mut impl FnMut(&Path) -> Result<bool, String>,
    ) -> Result<bool, String> {
        let mut last = String::from("no process");
        for &pid in pids {
            match check(&self.ns_path(pid)) {
                Ok(answer) => return Ok(answer),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn ns_path(&self, pid: i32) -> PathBuf {
        self.proc_root.join(pid.to_string()).join("ns/net")
    }

    /// `<proc>/<pid>/<file>`, capped; `None` when unreadable or too large.
    fn read(&self, pid: i32, file: &str) -> Option<String> {
        read_capped(&self.proc_root.join(pid.to_string()).join(file), PROC_FILE_CAP).ok()
    }
}

fn ns_id(path: &Path) -> std::io::Result<NsId> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Best first: preferred, then the oldest process (no start time last),
/// then the lowest pid.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by_key(|c| (!c.preferred, c.start_time.is_none(), c.start_time, c.pid));
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. The command name (field 2)
/// may contain spaces and parentheses, so count from its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::Netns;
    use crate::testing::{Scratch, privileged_scratch};

    /// A `/proc/<pid>/stat` line with start time `start`.
    fn stat(pid: i32, start: u64) -> String {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[22 - 3] = start.to_string();
        format!("{pid} (sh) {}", fields.join(" "))
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[22 - 3] = "987654".into();
        let line = format!("4242 (a (weird) name) {}", fields.join(" "));
        assert_eq!(parse_start_time(&line), Some(987654));
        assert_eq!(parse_start_time(&stat(7, 11)), Some(11));
        assert_eq!(parse_start_time("4242 (x) S 1 2"), None);
        assert_eq!(parse_start_time("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_start_time(&own).is_some(), "{own}");
    }

    #[test]
    fn preferred_beats_age_and_the_oldest_wins_otherwise() {
        let c = |pid, preferred, start_time| Candidate {
            pid,
            inode: pid as u64,
            preferred,
            start_time,
        };
        let mut v = vec![c(10, false, Some(5)), c(11, true, Some(50)), c(12, false, None)];
        rank(&mut v);
        assert_eq!(v.iter().map(|c| c.pid).collect::<Vec<_>>(), [11, 10, 12]);
        let mut v = vec![c(30, false, Some(500)), c(20, false, None), c(31, false, Some(100))];
        rank(&mut v);
        assert_eq!(v.iter().map(|c| c.pid).collect::<Vec<_>>(), [31, 30, 20]);
    }

    /// A finder over the fake proc tree at `proc_root`; the host is this
    /// process's netns.
    fn finder_at(proc_root: PathBuf) -> NetnsFinder {
        NetnsFinder {
            proc_root,
            host_netns: "/proc/self/ns/net".into(),
        }
    }

    /// A scratch dir with a fake proc tree under `proc/` and the namespaces
    /// its processes point at.
    struct FakeProc {
        dir: Scratch,
        root: PathBuf,
    }

    impl FakeProc {
        /// `None` when `test` is skipped (not root).
        fn new(test: &str) -> Option<FakeProc> {
            let dir = privileged_scratch(test)?;
            let root = dir.join("proc");
            Some(FakeProc { dir, root })
        }

        /// A new namespace pinned in the scratch dir as `name`.
        fn netns(&self, name: &str) -> Netns {
            Netns::create(&self.dir.join(name)).unwrap()
        }
    }

    /// A fake proc tree: `<root>/<pid>/ns/net` → `netns`, plus the given
    /// `cgroup` and `stat` files (text, or a symlink when it starts with `@`).
    fn process(root: &Path, pid: i32, netns: &Path, cgroup: &str, stat: &str) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        symlink(netns, dir.join("ns/net")).unwrap();
        for (name, text) in [("cgroup", cgroup), ("stat", stat)] {
            match text.strip_prefix('@') {
                Some(target) => symlink(target, dir.join(name)).unwrap(),
                None => std::fs::write(dir.join(name), text).unwrap(),
            }
        }
    }

    #[test]
    fn oversized_and_endless_proc_files_count_as_unreadable() {
        let Some(fake) = FakeProc::new("proc::oversized_proc_files") else {
            return;
        };
        let (root, ns) = (&fake.root, fake.netns("pod"));
        // pid 100 is the younger process; its cgroup names the wanted pod,
        // but only after more junk than a real cgroup file ever holds. An
        // uncapped read would prefer it; the capped one ignores it.
        let junk = "9:junk:/x\n".repeat((PROC_FILE_CAP as usize / 10) + 1);
        process(root, 100, ns.path(), &format!("{junk}0::/WANTED\n"), &stat(100, 50));
        process(root, 101, ns.path(), "0::/other\n", &stat(101, 10));
        // pid 102's files are endless: the walk must not read them to the end.
        process(root, 102, ns.path(), "@/dev/zero", "@/dev/zero");
        let finder = finder_at(root.clone());
        let found = finder.find(|_| Ok(true), |cgroup| cgroup.contains("WANTED")).unwrap();
        assert_eq!(found.pid, 101, "{:?}", found.candidates);
        assert!(found.candidates.iter().all(|c| !c.preferred), "{:?}", found.candidates);
        let c102 = found.candidates.iter().find(|c| c.pid == 102).unwrap();
        assert_eq!(c102.start_time, None);
        // Within the cap, the preference applies.
        std::fs::write(root.join("100/cgroup"), "0::/WANTED\n").unwrap();
        let found = finder.find(|_| Ok(true), |cgroup| cgroup.contains("WANTED")).unwrap();
        assert_eq!(found.pid, 100);
        assert!(!found.ambiguous());
        ns.delete().unwrap();
    }

    #[test]
    fn the_check_runs_once_per_namespace_and_the_host_is_never_returned() {
        let Some(fake) = FakeProc::new("proc::check_per_namespace") else {
            return;
        };
        let (root, a, b) = (&fake.root, fake.netns("a"), fake.netns("b"));
        process(root, 10, a.path(), "", &stat(10, 1));
        process(root, 11, a.path(), "", &stat(11, 2));
        process(root, 20, b.path(), "", &stat(20, 3));
        process(root, 30, Path::new("/proc/self/ns/net"), "", &stat(30, 0));
        std::fs::create_dir_all(root.join("self")).unwrap();
        let finder = finder_at(root.clone());
        let mut seen = Vec::new();
        let found = finder
            .find(
                |p| {
                    seen.push(p.to_path_buf());
                    // pid 10 "exited": the next process of its netns answers.
                    if p.starts_with(root.join("10")) {
                        Err("gone".into())
                    } else {
                        Ok(p.starts_with(root.join("11")))
                    }
                },
                |_| false,
            )
            .unwrap();
        assert_eq!(found.pid, 10, "both processes of netns a are candidates; 10 is older");
        let inode = std::fs::metadata(a.path()).unwrap().ino();
        assert_eq!(found.inode, inode);
        assert_eq!(std::fs::metadata(found.path()).unwrap().ino(), inode);
        // Namespaces are visited in inode order, processes in pid order.
        seen.sort();
        assert_eq!(
            seen,
            [root.join("10/ns/net"), root.join("11/ns/net"), root.join("20/ns/net")]
        );
        // Nothing matches: the error counts the namespaces and keeps the
        // last check error; the host (pid 30) was never checked.
        let err = finder
            .find(|_| Err::<bool, _>("no netlink".into()), |_| false)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("none of the 2 namespaces"), "{text}");
        assert!(text.contains("last error: no netlink"), "{text}");
        // A missing proc root is named.
        let gone = finder_at(fake.dir.join("nope"));
        let err = gone.find(|_| Ok(true), |_| false).unwrap_err();
        assert!(
            matches!(err, FindError::Proc { .. }) && err.to_string().contains("nope"),
            "{err}"
        );
    }
}
