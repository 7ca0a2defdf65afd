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

mod kubectl_support;

use std::time::Duration;

use kubectl_support::{Env, NEEDS, TIMEOUT, Terminal, apply, spec, wait_until};
use serde_json::json;

const TEST: &str = "kubectl_debug_runs_ephemeral_containers_in_the_pod";

#[test]
fn kubectl_debug_runs_ephemeral_containers_in_the_pod() {
    let Some(Env {
        k,
        scratch: _scratch,
        cluster: _cluster,
    }) = kubectl_support::start(TEST, NEEDS, spec(1))
    else {
        return;
    };
    let app = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}});
    apply(&k, &app);
    k.ok(&["wait", "--for=condition=Ready", "pod/app", TIMEOUT]);
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
    let terminated = |name: &str| state(name) == "0";
    wait_until("dbg reported terminated", Duration::from_millis(200), || {
        terminated("dbg")
    });
    let listed = k.ok(&[
        "get",
        "pod",
        "app",
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ]);
    assert_eq!(listed, "dbg");

    // -it: a shell on a terminal, typed into.
    let mut terminal = Terminal::spawn(
        k.command(&[
            "debug",
            "app",
            "-it",
            "--image=shell",
            "--container=shell",
            "--",
            "shell",
        ]),
        None,
    );
    // kubectl says this once it is attached.
    terminal.wait_for("If you don't see a command prompt");
    terminal.type_keys(b"echo dbg-$((6*7))\r");
    terminal.wait_for("dbg-42");
    terminal.type_keys(b"exit\r");
    let (out, code) = terminal.finish();
    assert_eq!(code, Some(0), "{out:?}");
    wait_until("the shell reported terminated", Duration::from_millis(200), || {
        terminated("shell")
    });
}
