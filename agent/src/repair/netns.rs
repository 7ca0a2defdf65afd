//! Finding a running pod's network namespace from the node's `/proc`
//! (istio-cni-repair-and-skew.md §2.8 step 2), combining Istio's repair
//! search (IP ownership, oldest process) with its ambient agent's safeguards:
//!
//! 1. every process's `<proc>/<pid>/ns/net`, grouped by netns inode (one
//!    address check per namespace, not per process), the host netns skipped;
//! 2. a namespace is a candidate when one of its interfaces holds the pod IP
//!    (checked on a throw-away thread inside it, via rtnetlink);
//! 3. a namespace with a process in the pod's cgroup (`kubepods…pod<uid>`)
//!    wins; otherwise the one holding the oldest process (the sandbox's
//!    infra process, not a short-lived retry of `istio-validation`).
//!
//! The result is an open handle, so the namespace cannot vanish or be
//! swapped (pid reuse) between finding and programming it.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use istio_cni::netns::netlink::Netlink;
use istio_cni::netns::run_in_netns;

/// The pod whose netns is wanted.
#[derive(Debug, Clone)]
pub struct PodTarget {
    /// `namespace/name`, for messages.
    pub pod: String,
    pub uid: String,
    pub ip: IpAddr,
}

/// Where to look, and what never to return.
#[derive(Debug, Clone)]
pub struct Finder {
    /// The node's `/proc` (`/host/proc` in the DaemonSet).
    pub proc_root: PathBuf,
    /// The host netns, never a candidate.
    pub host_netns: PathBuf,
}

/// An open pod netns.
#[derive(Debug)]
pub struct PodNetns {
    file: File,
    /// The process it was found through.
    pub pid: i32,
    /// The namespace inode.
    pub inode: u64,
}

impl PodNetns {
    /// A path to the namespace that stays valid while `self` lives (the
    /// pid it was found through may exit meanwhile).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("reading {}: {source}", path.display())]
    Proc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no network namespace holds pod {pod}'s IP {ip} (checked {checked} namespaces of processes under {}{})",
        proc_root.display(),
        last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    NotFound {
        pod: String,
        ip: IpAddr,
        checked: usize,
        proc_root: PathBuf,
        last_error: Option<String>,
    },
}

/// One process in a namespace holding the pod IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pid: i32,
    pub inode: u64,
    /// Its cgroup names the pod UID.
    pub cgroup_match: bool,
    /// `/proc/<pid>/stat` field 22 (clock ticks since boot).
    pub start_time: Option<u64>,
}

impl Finder {
    /// Finds and opens the pod's netns. Blocking: run it off the async runtime.
    pub fn find(&self, target: &PodTarget) -> Result<PodNetns, FindError> {
        let host = std::fs::metadata(&self.host_netns).map_err(|source| FindError::Proc {
            path: self.host_netns.clone(),
            source,
        })?;
        let host_id = (host.dev(), host.ino());
        let entries = std::fs::read_dir(&self.proc_root).map_err(|source| FindError::Proc {
            path: self.proc_root.clone(),
            source,
        })?;
        // netns (dev, inode) → pids in it, ascending.
        let mut by_netns: BTreeMap<(u64, u64), Vec<i32>> = BTreeMap::new();
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // Processes exit and kernel threads deny access: skip silently.
            let Ok(meta) = std::fs::metadata(entry.path().join("ns/net")) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            if id != host_id {
                by_netns.entry(id).or_default().push(pid);
            }
        }
        let mut candidates = Vec::new();
        let mut last_error = None;
        for ((_, inode), pids) in &by_netns {
            match self.owns_ip(pids, target.ip) {
                Ok(true) => candidates.extend(pids.iter().map(|&pid| Candidate {
                    pid,
                    inode: *inode,
                    cgroup_match: self.cgroup_matches(pid, &target.uid),
                    start_time: self.start_time(pid),
                })),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
        }
        if candidates
            .iter()
            .map(|c| c.inode)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
        {
            tracing::warn!(pod = %target.pod, ip = %target.ip, ?candidates, "several network namespaces hold the pod IP");
        }
        let not_found = |last_error| FindError::NotFound {
            pod: target.pod.clone(),
            ip: target.ip,
            checked: by_netns.len(),
            proc_root: self.proc_root.clone(),
            last_error,
        };
        // Try the best candidate first; one whose process exited falls back
        // to the next, but a pid reused into another netns is refused.
        let mut ranked = candidates;
        rank(&mut ranked);
        for c in ranked {
            let path = self.proc_root.join(c.pid.to_string()).join("ns/net");
            if let Ok(file) = File::open(&path)
                && file
                    .metadata()
                    .is_ok_and(|m| m.ino() == c.inode && (m.dev(), m.ino()) != host_id)
            {
                return Ok(PodNetns {
                    file,
                    pid: c.pid,
                    inode: c.inode,
                });
            }
        }
        Err(not_found(last_error))
    }

    /// Whether the netns of any of `pids` has `ip` on an interface.
    fn owns_ip(&self, pids: &[i32], ip: IpAddr) -> Result<bool, String> {
        let mut last = String::new();
        for pid in pids {
            let path = self.proc_root.join(pid.to_string()).join("ns/net");
            let listed = run_in_netns(&path, || Netlink::connect().and_then(|nl| nl.addresses()));
            match listed {
                Ok(Ok(addrs)) => return Ok(addrs.iter().any(|a| a.addr == ip)),
                Ok(Err(e)) => last = format!("listing addresses in {}: {e}", path.display()),
                // Exited meanwhile: try another process of the same netns.
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn cgroup_matches(&self, pid: i32, uid: &str) -> bool {
        std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup"))
            .is_ok_and(|text| cgroup_has_pod_uid(&text, uid))
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat"))
            .ok()
            .and_then(|s| parse_start_time(&s))
    }
}

/// Best first: a cgroup match on the pod UID, then the oldest process (no
/// start time last), then the lowest pid.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by_key(|c| (!c.cgroup_match, c.start_time.is_none(), c.start_time, c.pid));
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. The command name (field 2)
/// may contain spaces and parentheses, so count from its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `/proc/<pid>/cgroup` text puts the process in pod `uid`'s cgroup:
/// cgroupfs (`/kubepods/burstable/pod<uid>/…`) or systemd
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/…`),
/// cgroup v1 or v2.
pub fn cgroup_has_pod_uid(cgroup: &str, uid: &str) -> bool {
    if uid.is_empty() {
        return false;
    }
    let forms = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    cgroup.lines().any(|line| {
        // hierarchy-ID:controllers:path
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        path.contains("kubepods")
            && path.split('/').any(|seg| {
                let seg = seg.strip_suffix(".slice").unwrap_or(seg);
                forms.iter().any(|f| seg.ends_with(f.as_str()))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c1b2a-0c4e-4f5e-9a6b-1d2c3e4f5a6b";

    #[test]
    fn start_time_survives_odd_command_names() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[22 - 3] = "987654".into();
        let stat = format!("4242 (a (weird) name) {}", fields.join(" "));
        assert_eq!(parse_start_time(&stat), Some(987654));
        assert_eq!(parse_start_time("4242 (x) S 1 2"), None);
        assert_eq!(parse_start_time("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_start_time(&own).is_some(), "{own}");
    }

    #[test]
    fn cgroup_forms_of_the_pod_uid() {
        let under = UID.replace('-', "_");
        for text in [
            format!("4:memory:/kubepods/burstable/pod{UID}/0123abcd\n"),
            format!("0::/kubepods/besteffort/pod{UID}/cri-containerd-0123.scope\n"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-0123.scope\n"
            ),
            format!("1:name=systemd:/kubepods.slice/kubepods-pod{under}.slice/crio-0123.scope\n"),
            format!("0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{under}.slice/x.scope\n"),
        ] {
            assert!(cgroup_has_pod_uid(&text, UID), "{text}");
        }
        for text in [
            "0::/\n".to_string(),
            format!("0::/user.slice/pod{UID}\n"),
            format!("0::/kubepods/burstable/pod{UID}0/x\n"),
            "0::/kubepods/burstable/pod11111111-2222-3333-4444-555555555555/x\n".to_string(),
        ] {
            assert!(!cgroup_has_pod_uid(&text, UID), "{text}");
        }
        assert!(!cgroup_has_pod_uid("0::/kubepods/pod/x", ""));
    }

    #[test]
    fn cgroup_match_beats_age_and_the_oldest_wins_otherwise() {
        let c = |pid, cgroup_match, start_time| Candidate {
            pid,
            inode: pid as u64,
            cgroup_match,
            start_time,
        };
        let mut v = vec![c(10, false, Some(5)), c(11, true, Some(50)), c(12, false, None)];
        rank(&mut v);
        assert_eq!(v.iter().map(|c| c.pid).collect::<Vec<_>>(), [11, 10, 12]);
        let mut v = vec![c(30, false, Some(500)), c(20, false, None), c(31, false, Some(100))];
        rank(&mut v);
        assert_eq!(v.iter().map(|c| c.pid).collect::<Vec<_>>(), [31, 30, 20]);
    }

    /// A process in a fresh netns holding `ip` on `lo`.
    fn holder(ip: &str) -> std::process::Child {
        let script = format!("ip link set lo up && ip addr add {ip}/32 dev lo && exec sleep 60");
        std::process::Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .spawn()
            .unwrap()
    }

    fn wait_for_ip(pid: u32, ip: &str) {
        let path = format!("/proc/{pid}/ns/net");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let out = std::process::Command::new("nsenter")
                .args([format!("--net={path}").as_str(), "ip", "-o", "addr"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(ip) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{ip} never appeared in {path}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn finds_the_namespace_holding_the_ip_and_never_the_host() {
        if !istio_cni_kind::testing::privileged("repair::netns::finds_the_namespace") {
            return;
        }
        let ip = "10.231.77.9";
        let mut child = holder(ip);
        wait_for_ip(child.id(), ip);
        let finder = Finder {
            proc_root: "/proc".into(),
            host_netns: "/proc/self/ns/net".into(),
        };
        let target = |ip: &str| PodTarget {
            pod: "default/hello".into(),
            uid: UID.into(),
            ip: ip.parse().unwrap(),
        };
        let found = finder.find(&target(ip)).unwrap();
        let want = std::fs::metadata(format!("/proc/{}/ns/net", child.id())).unwrap().ino();
        assert_eq!(found.inode, want);
        let e = finder.find(&target("10.231.77.10")).unwrap_err().to_string();
        assert!(e.contains("pod default/hello's IP 10.231.77.10"), "{e}");

        // The host netns is never returned, even when it alone holds the IP.
        let as_host = Finder {
            proc_root: "/proc".into(),
            host_netns: format!("/proc/{}/ns/net", child.id()).into(),
        };
        assert!(matches!(as_host.find(&target(ip)), Err(FindError::NotFound { .. })));
        // The handle stays usable after the process is gone.
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(std::fs::metadata(found.path()).unwrap().ino(), want);
        // With the holder gone, its IP is found nowhere.
        assert!(matches!(finder.find(&target(ip)), Err(FindError::NotFound { .. })));
    }
}
