//! `kubectl exec`, `attach`, `cp`, `port-forward` and `logs -f` against
//! the embedded cluster, with the real kubectl (1.33: WebSocket
//! `v5.channel.k8s.io`, port-forward as SPDY tunnelled in WebSocket).
//!
//! Needs root, ip, the CNI plugins and kubectl on PATH (`. ci/env`); skips
//! with `SKIP:` otherwise (a failure under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod kubectl_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kubectl_support::{Env, NEEDS, PROBE, Terminal, WAIT, apply, follow, forwarded_port, spec, stop, wait_line};
use serde_json::json;
use testkit::{Kubectl, Scratch};

fn running(p: &Pod) -> bool {
    let statuses = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    !statuses.is_empty()
        && statuses
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// A cluster with pod `app` (mesh-probe's echo server on 8080) running.
struct Fixture {
    kubectl: Kubectl,
    cluster: Cluster,
    pod_ip: String,
    scratch: Scratch,
}

fn fixture(test: &str) -> Option<Fixture> {
    let Env {
        k: kubectl,
        scratch,
        cluster,
    } = kubectl_support::start(test, NEEDS, spec(1))?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"containers": [{"name": "echo", "image": "mesh-probe",
            "args": ["echo", "--port", "8080"], "env": [{"name": "GREETING", "value": "from-the-spec"}],
            // exec holds the container's capabilities: iptables needs NET_ADMIN.
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}
    }))
    .unwrap();
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster
        .block_on(api.create(&PostParams::default(), &pod))
        .expect("creating app");
    let pod = cluster
        .wait_for_pod("default", "app", WAIT, running)
        .expect("app running");
    let pod_ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
    Some(Fixture {
        kubectl,
        cluster,
        pod_ip,
        scratch,
    })
}

/// One more connection to the app, from inside the pod, so that it logs an
/// `accepted` event.
fn poke(f: &Fixture) {
    f.kubectl
        .ok(&["exec", "app", "--", PROBE, "client", "--target", "127.0.0.1:8080"]);
}

#[test]
fn exec_runs_in_the_container() {
    let Some(f) = fixture("exec_runs_in_the_container") else {
        return;
    };
    // The pod's network namespace: its address is there.
    let addrs = f.kubectl.ok(&["exec", "app", "--", "ip", "-o", "addr"]);
    assert!(addrs.contains(&format!("inet {}/", f.pod_ip)), "{addrs}");
    // Its rules: one added through exec is what iptables-save shows there,
    // not on the node.
    f.kubectl.ok(&[
        "exec",
        "app",
        "-c",
        "echo",
        "--",
        "iptables",
        "-t",
        "nat",
        "-N",
        "EXEC_PROBE",
    ]);
    let rules = f.kubectl.ok(&["exec", "app", "--", "iptables-save", "-t", "nat"]);
    assert!(rules.contains(":EXEC_PROBE"), "{rules}");
    let node_name = f.cluster.local().expect("local cluster").nodes()[0].name().to_string();
    let node = f
        .cluster
        .node_exec(&node_name, &["iptables-save", "-t", "nat"])
        .expect("node rules");
    assert!(!node.contains("EXEC_PROBE"), "{node}");
    // The container's environment.
    let env = f.kubectl.ok(&["exec", "app", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(env.trim(), "from-the-spec");
    // Exit codes come back as kubectl's own.
    let run = f
        .kubectl
        .run(&["exec", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(run.code(), Some(3), "{run}");
    assert_eq!(
        (run.stdout.as_str(), run.stderr.contains("err")),
        ("out\n", true),
        "{run}"
    );
    // A command that does not exist fails, saying so.
    let run = f.kubectl.run(&["exec", "app", "--", "/no/such/program"]);
    assert!(!run.success() && run.stderr.contains("/no/such/program"), "{run}");
}

#[test]
fn exec_stdin_and_cp_round_trip() {
    let Some(f) = fixture("exec_stdin_and_cp_round_trip") else {
        return;
    };
    // 300 KiB through stdin and back: many WebSocket frames, then stdin's
    // close (v5) ends cat.
    let data: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let run = f
        .kubectl
        .command(&["exec", "-i", "app", "--", "cat"])
        .output_with(&data);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        run.stdout == data,
        "cat returned {} bytes, sent {}",
        run.stdout.len(),
        data.len()
    );

    // kubectl cp runs tar in the container, both ways.
    let src = f.scratch.join("src.bin");
    std::fs::write(&src, &data[..100_000]).unwrap();
    let in_pod = f.scratch.join("in-pod");
    f.kubectl
        .ok(&["exec", "app", "--", "mkdir", "-p", in_pod.to_str().unwrap()]);
    let remote = format!("default/app:{}", in_pod.join("copied.bin").display());
    f.kubectl.ok(&["cp", src.to_str().unwrap(), &remote]);
    let back = f.scratch.join("back.bin");
    f.kubectl.ok(&["cp", &remote, back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data[..100_000], "the copy differs");
}

/// Output and exit status of a command given `input`.
trait OutputWith {
    fn output_with(self, input: &[u8]) -> std::process::Output;
}

impl OutputWith for Command {
    fn output_with(mut self, input: &[u8]) -> std::process::Output {
        let mut child = self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("kubectl output");
        writer.join().unwrap();
        out
    }
}

#[test]
fn exec_with_a_tty() {
    let Some(f) = fixture("exec_with_a_tty") else { return };
    // kubectl only asks for a tty when its stdin is a terminal: give it one,
    // 33 rows by 101 columns, which it sends as the remote terminal's size.
    let (out, code) = Terminal::spawn(
        f.kubectl.command(&[
            "exec",
            "-it",
            "app",
            "--",
            "sh",
            "-c",
            "sleep 1; tty; stty size; exit 4",
        ]),
        Some((33, 101)),
    )
    .finish();
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("33 101"), "{out:?}");
    assert_eq!(code, Some(4), "{out:?}");
}

#[test]
fn port_forward_logs_follow_and_attach() {
    let Some(f) = fixture("port_forward_logs_follow_and_attach") else {
        return;
    };
    // logs -f and attach both running before the app logs anything new.
    let (logs, log_lines) = follow(f.kubectl.command(&["logs", "-f", "app"]), Stdio::null());
    wait_line(&log_lines, "\"listening\"");
    let (attach, attach_lines) = follow(f.kubectl.command(&["attach", "app", "-c", "echo"]), Stdio::null());
    // attach shows only what comes after it connected: wait until it has.
    std::thread::sleep(Duration::from_secs(2));

    // port-forward to the echo server; a round trip through it.
    let (mut pf, pf_lines) = follow(f.kubectl.command(&["port-forward", "pod/app", ":8080"]), Stdio::piped());
    let port = forwarded_port(&pf_lines);
    for round in 0..2 {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the forwarded port");
        conn.set_read_timeout(Some(WAIT)).unwrap();
        conn.write_all(b"hello through the tunnel\n").unwrap();
        let mut answer = String::new();
        if let Err(e) = conn.read_to_string(&mut answer) {
            let _ = pf.kill();
            let mut err = String::new();
            pf.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("round {round}: {e}; kubectl port-forward said: {err}");
        }
        assert!(answer.contains("\"server\":\"echo\""), "round {round}: {answer:?}");
        assert!(answer.contains("\"port\":8080"), "round {round}: {answer:?}");
    }
    // A port nothing listens on: the connection ends, kubectl reports it.
    let (refused, refused_lines) = follow(f.kubectl.command(&["port-forward", "pod/app", ":9"]), Stdio::piped());
    let dead = forwarded_port(&refused_lines);
    let mut conn = TcpStream::connect(("127.0.0.1", dead)).expect("connecting");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    stop(refused);
    stop(pf);

    // The connections were logged after logs -f and attach started.
    poke(&f);
    wait_line(&log_lines, "\"accepted\"");
    wait_line(&attach_lines, "\"accepted\"");
    stop(logs);
    stop(attach);
}

#[test]
fn exec_needs_rbac() {
    let Some(f) = fixture("exec_needs_rbac") else { return };
    let local = f.cluster.local().expect("local cluster");
    let token = local.api().mint_user_token("alice", &[]);
    let kubeconfig = f.scratch.join("alice.kubeconfig");
    local.api().write_kubeconfig(&kubeconfig, &token).unwrap();
    // alice may read pods, not exec into them.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-reads", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "User", "name": "alice"}]});
    for doc in [role, binding] {
        apply(&f.kubectl, &doc);
    }
    let alice = Kubectl::new("exec_needs_rbac", &kubeconfig, &f.scratch.join("alice")).unwrap();
    alice.ok(&["get", "pod", "app"]);
    for args in [
        &["exec", "app", "--", "true"][..],
        &["attach", "app"][..],
        &["port-forward", "pod/app", ":8080"][..],
    ] {
        let run = alice.run(args);
        assert!(!run.success(), "{run}");
        let sub = match args[0] {
            "port-forward" => "portforward",
            other => other,
        };
        assert!(
            run.stderr.contains(&format!("cannot create resource \"pods/{sub}\"")),
            "{run}"
        );
    }
}
