//! Finding a running pod's network namespace from the node's `/proc`,
//! combining Istio's repair search (IP ownership, oldest process) with its
//! ambient agent's safeguards. The walk is `linux_ns::proc::NetnsFinder`'s
//! (grouped by namespace, host skipped, capped reads of `/proc` files); this
//! module supplies the pod's criteria:
//!
//! * a namespace is a candidate when one of its interfaces holds the pod IP
//!   (checked on a throw-away thread inside it, via rtnetlink);
//! * a process in the pod's cgroup (`kubepods…pod<uid>`) wins; otherwise the
//!   oldest process (the sandbox's infra process, not a short-lived retry of
//!   `istio-validation`).
//!
//! The result is an open handle, so the namespace cannot vanish or be
//! swapped (pid reuse) between finding and programming it.

use std::net::IpAddr;
use std::path::PathBuf;

use istio_cni::netns::netlink::Netlink;
use istio_cni::netns::run_in_netns;
use linux_ns::proc::{self, NetnsFinder};

/// An open pod netns (`path()` stays valid while it lives).
pub use linux_ns::proc::Found as PodNetns;

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

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("finding pod {pod}'s network namespace: {source}")]
    Proc {
        pod: String,
        #[source]
        source: proc::FindError,
    },
    #[error("no network namespace holds pod {pod}'s IP {ip} ({source})")]
    NotFound {
        pod: String,
        ip: IpAddr,
        #[source]
        source: proc::FindError,
    },
}

impl Finder {
    /// Finds and opens the pod's netns. Blocking: run it off the async runtime.
    pub fn find(&self, target: &PodTarget) -> Result<PodNetns, FindError> {
        let finder = NetnsFinder {
            proc_root: self.proc_root.clone(),
            host_netns: self.host_netns.clone(),
        };
        let found = finder
            .find(
                |path| holds_ip(path, target.ip),
                |cgroup| cgroup_has_pod_uid(cgroup, &target.uid),
            )
            .map_err(|source| match source {
                proc::FindError::NotFound { .. } => FindError::NotFound {
                    pod: target.pod.clone(),
                    ip: target.ip,
                    source,
                },
                proc::FindError::Proc { .. } => FindError::Proc {
                    pod: target.pod.clone(),
                    source,
                },
            })?;
        if found.ambiguous() {
            tracing::warn!(pod = %target.pod, ip = %target.ip, candidates = ?found.candidates, "several network namespaces hold the pod IP");
        }
        Ok(found)
    }
}

/// Whether the netns at `path` has `ip` on an interface.
fn holds_ip(path: &std::path::Path, ip: IpAddr) -> Result<bool, String> {
    match run_in_netns(path, || Netlink::connect().and_then(|nl| nl.addresses())) {
        Ok(Ok(addrs)) => Ok(addrs.iter().any(|a| a.addr == ip)),
        Ok(Err(e)) => Err(format!("listing addresses in {}: {e}", path.display())),
        // Exited meanwhile: the finder tries another process of the netns.
        Err(e) => Err(e.to_string()),
    }
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
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const UID: &str = "6f1c1b2a-0c4e-4f5e-9a6b-1d2c3e4f5a6b";

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

    /// A process in a fresh netns holding `ip` on `lo` (set up before the
    /// process starts, so there is nothing to wait for).
    fn holder(ip: &str) -> std::process::Child {
        let ns = linux_ns::Netns::unpinned().unwrap();
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &format!("{ip}/32"), "dev", "lo"],
        ] {
            let status = ns.command("ip").args(&args).status().unwrap();
            assert!(status.success(), "ip {args:?}: {status}");
        }
        ns.command("sleep").arg("60").spawn().unwrap()
    }

    #[test]
    fn finds_the_namespace_holding_the_ip_and_never_the_host() {
        if !testkit::gate("repair::netns::finds_the_namespace", &[testkit::Need::Root]) {
            return;
        }
        let ip = "10.231.77.9";
        let mut child = holder(ip);
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
