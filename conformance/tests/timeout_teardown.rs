//! A scenario the runner gives up on (`--scenario-timeout`) leaves nothing
//! behind: its body still holds the cluster, hung, and the runner tears the
//! cluster down under it — no process in its namespaces (pause, containers,
//! a node agent), no netns pin mounted, no directory, no cgroup.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use istio_cni_conformance::progress::{Mode, Progress};
use istio_cni_conformance::runner::{self, RunPlan};
use istio_cni_kind::cluster::ClusterSpec;
use istio_cni_kind::node::netns::mounts_under;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::error::Context;
use istio_cni_scenarios::fixtures::plain_pod;
use istio_cni_scenarios::scenario::{Scenario, Verdict};
use testkit::{Need, gate};

/// What the hung body built, reported before it hangs.
struct Built {
    root: PathBuf,
    /// Each pod sandbox's netns pin and whether it is mounted.
    sandboxes: Vec<(PathBuf, bool)>,
    cgroup: Option<PathBuf>,
    pids: Vec<u32>,
}

/// Pids of the processes whose network namespace is the one pinned at `pin`.
fn pids_in(pin: &std::path::Path) -> Vec<u32> {
    let Ok(ns) = std::fs::metadata(pin) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let m = std::fs::metadata(e.path().join("ns/net")).ok()?;
            (m.dev() == ns.dev() && m.ino() == ns.ino()).then_some(pid)
        })
        .collect()
}

/// Running: present and not a zombie (the runner reaps what it can; a
/// killed container of an aborted kubelet stays a zombie until it exits).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn a_timed_out_scenarios_cluster_is_torn_down() {
    if !gate("a_timed_out_scenarios_cluster_is_torn_down", &[Need::Root]) {
        return;
    }
    let (tx, rx) = mpsc::channel::<Built>();
    let tx = std::sync::Mutex::new(tx);
    let hung = Scenario::new("t/hung-with-a-cluster", "", move |env, _| {
        let cluster = env.cluster(ClusterSpec::default())?;
        let local = cluster.local()?;
        let pod = plain_pod("hello")?;
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(cluster.client(), "default");
        cluster
            .block_on(api.create(&Default::default(), &pod))
            .context("creating pod hello")?;
        cluster.wait_for_pod("default", "hello", Duration::from_secs(20), |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })?;
        // A node agent's stand-in: a process of the node, not of a pod.
        let node = &local.nodes()[0];
        let agent = node
            .command("sleep")
            .arg("3600")
            .spawn()
            .context("starting the stand-in agent")?;
        // The pod's processes, once seen (a loaded machine may report the pod
        // Running a moment before its processes show in /proc).
        let in_pods = || -> Vec<u32> {
            node.pod_ids()
                .iter()
                .filter_map(|id| node.pod_netns(id))
                .flat_map(|sandbox| pids_in(sandbox.netns.path()))
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut pod_pids = in_pods();
        while pod_pids.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            pod_pids = in_pods();
        }
        let mut pids = vec![agent.id()];
        pids.extend(pids_in(node.netns().path()).into_iter().filter(|p| *p != agent.id()));
        pids.extend(pod_pids);
        let sandboxes = node
            .pod_ids()
            .iter()
            .filter_map(|id| node.pod_netns(id))
            .map(|s| {
                (
                    s.netns.path().to_path_buf(),
                    istio_cni_kind::node::netns::is_mounted(s.netns.path()),
                )
            })
            .collect();
        let built = Built {
            sandboxes,
            root: local.kubeconfig_path().parent().map(PathBuf::from).unwrap_or_default(),
            cgroup: local.cgroup_dir().map(PathBuf::from),
            pids,
        };
        let _ = tx.lock().map(|tx| tx.send(built));
        // Hangs holding the cluster, as a scenario waiting on something that never comes.
        std::thread::sleep(Duration::from_secs(3600));
        drop((agent, cluster));
        Ok(())
    });
    let env = Env::new(Target::Local).expect("the workspace binaries");
    // Room for the setup on a loaded machine; the hang is an hour.
    let plan = RunPlan::one_local(hung, env, Duration::from_secs(10));
    let mut out = Vec::new();
    let results = runner::run(plan, &mut Progress::new(&mut out, Mode::Lines, 1));
    let built = rx.try_recv().expect("the body built its cluster before the timeout");
    assert!(
        built.pids.len() >= 3,
        "pause, app and agent: {:?} (sandboxes: {:?})",
        built.pids,
        built.sandboxes
    );
    assert!(built.root.is_dir() || !built.root.exists());

    let [result] = results.items.as_slice() else {
        panic!("one result")
    };
    match &result.verdict {
        Verdict::Fail(why) => assert!(
            why.contains("timed out after 10s") && why.contains("its cluster was torn down"),
            "{why}"
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let alive: Vec<u32> = built.pids.iter().copied().filter(|p| running(*p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    assert_eq!(
        mounts_under(&built.root),
        Vec::<PathBuf>::new(),
        "netns pins still mounted"
    );
    assert!(!built.root.exists(), "{} is left", built.root.display());
    if let Some(cgroup) = built.cgroup {
        assert!(!cgroup.exists(), "cgroup {} is left", cgroup.display());
    }
}
