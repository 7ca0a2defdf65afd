//! `kubectl debug pod/x --image=... -- cmd` against the embedded cluster:
//! an ephemeral container added through `pods/ephemeralcontainers`, started
//! by the kubelet in the pod's network namespace, reported in
//! `ephemeralContainerStatuses`, and attached to with stdin (`-i`) and with
//! a terminal (`-it`).
//!
//! The `shell` image is `/bin/sh` (an executable image: its command names
//! the image).
//!
//! Needs root, ip, the CNI plugins and kubectl (`. ci/env`); skips with
//! `SKIP:` otherwise (a panic under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::ImageTable;
use serde_json::json;
use testkit::{Kubectl, Need, Scratch};

const TEST: &str = "kubectl_debug_runs_ephemeral_containers_in_the_pod";
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn kubectl_debug_runs_ephemeral_containers_in_the_pod() {
    if !testkit::gate(TEST, &[Need::Root, Need::Tool("ip"), Need::CniPlugins]) {
        return;
    }
    let scratch = Scratch::new(TEST);
    let cluster = Cluster::create(ClusterSpec {
        nodes: 1,
        profile: Profile::Ptp,
        images: ImageTable::new()
            .add("mesh-probe", env!("CARGO_BIN_EXE_mesh-probe"), &[])
            .add("shell", "/bin/sh", &[]),
        ..ClusterSpec::default()
    })
    .expect("cluster");
    let Some(k) = Kubectl::new(TEST, cluster.kubeconfig_path(), &scratch) else {
        return;
    };
    let app = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}});
    let run = k.run_with_stdin(&["apply", "-f", "-"], Some(app.to_string().as_bytes()));
    assert!(run.success(), "{run}");
    k.ok(&["wait", "--for=condition=Ready", "pod/app", "--timeout=60s"]);
    let pod_ip = k.ok(&["get", "pod", "app", "-o", "jsonpath={.status.podIP}"]);

    // -i: stdin reaches the debug container, which runs in the pod's netns.
    let script = "read line; echo got-$line; ip -o -4 addr show eth0";
    let run = k.run_with_stdin(
        &[
            "debug",
            "app",
            "-i",
            "--image=shell",
            "--container=dbg",
            "--",
            "shell",
            "-c",
            script,
        ],
        Some(b"hello\n"),
    );
    assert!(run.success(), "{run}");
    assert!(run.stdout.contains("got-hello"), "{run}");
    assert!(run.stdout.contains(&format!("inet {pod_ip}/")), "{run}");
    let state = |name: &str| {
        k.ok(&[
            "get",
            "pod",
            "app",
            "-o",
            &format!(
                "jsonpath={{.status.ephemeralContainerStatuses[?(@.name==\"{name}\")].state.terminated.exitCode}}"
            ),
        ])
    };
    let started = Instant::now();
    while state("dbg") != "0" {
        assert!(started.elapsed() < WAIT, "dbg never reported terminated");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = k.ok(&[
        "get",
        "pod",
        "app",
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ]);
    assert_eq!(listed, "dbg");

    // -it: a shell on a terminal, typed into.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut child = k
        .command(&[
            "debug",
            "app",
            "-it",
            "--image=shell",
            "--container=shell",
            "--",
            "shell",
        ])
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .expect("kubectl debug");
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut typing = master.try_clone().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once kubectl, the last holder of the slave, exits.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = |seen: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let wait_for = |needle: &str| {
        let started = Instant::now();
        while !text(&seen).contains(needle) {
            assert!(
                started.elapsed() < WAIT,
                "no {needle:?} on the terminal: {:?}",
                text(&seen)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // kubectl says this once it is attached.
    wait_for("If you don't see a command prompt");
    typing.write_all(b"echo dbg-$((6*7))\r").unwrap();
    wait_for("dbg-42");
    typing.write_all(b"exit\r").unwrap();
    let status = child.wait().expect("kubectl debug");
    reader.join().unwrap();
    assert!(status.success(), "{:?}", text(&seen));
    let started = Instant::now();
    while state("shell") != "0" {
        assert!(started.elapsed() < WAIT, "the shell never reported terminated");
        std::thread::sleep(Duration::from_millis(200));
    }
}
