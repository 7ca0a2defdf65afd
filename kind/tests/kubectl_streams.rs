//! `kubectl exec`, `attach`, `cp`, `port-forward` and `logs -f` against
//! the embedded cluster, with the real kubectl (1.33: WebSocket
//! `v5.channel.k8s.io`, port-forward as SPDY tunnelled in WebSocket).
//!
//! Needs root, ip, the CNI plugins and kubectl on PATH (`. ci/env`); skips
//! with `SKIP:` otherwise (a failure under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::ImageTable;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use testkit::{Kubectl, Need, Scratch};

const WAIT: Duration = Duration::from_secs(60);
const PROBE: &str = env!("CARGO_BIN_EXE_mesh-probe");

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
    if !testkit::gate(test, &[Need::Root, Need::Tool("ip"), Need::CniPlugins]) {
        return None;
    }
    let scratch = Scratch::new(test);
    let cluster = Cluster::create(ClusterSpec {
        nodes: 1,
        profile: Profile::Ptp,
        images: ImageTable::new().add("mesh-probe", PROBE, &[]),
        ..ClusterSpec::default()
    })
    .expect("cluster");
    let kubectl = Kubectl::new(test, cluster.kubeconfig_path(), &scratch)?;
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

/// Lines a child prints on stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; every line seen on failure.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; saw {seen:#?}");
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
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut child = f
        .kubectl
        .command(&[
            "exec",
            "-it",
            "app",
            "--",
            "sh",
            "-c",
            "sleep 1; tty; stty size; exit 4",
        ])
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .expect("kubectl");
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once kubectl, the last holder of the slave, exits.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(out);
    });
    let status = child.wait().expect("kubectl");
    let out = String::from_utf8_lossy(&rx.recv_timeout(WAIT).expect("terminal output")).into_owned();
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("33 101"), "{out:?}");
    assert_eq!(status.code(), Some(4), "{out:?}");
}

#[test]
fn port_forward_logs_follow_and_attach() {
    let Some(f) = fixture("port_forward_logs_follow_and_attach") else {
        return;
    };
    // logs -f and attach both running before the app logs anything new.
    let mut logs = f
        .kubectl
        .command(&["logs", "-f", "app"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs");
    let log_lines = lines_of(&mut logs);
    wait_line(&log_lines, "\"listening\"");
    let mut attach = f
        .kubectl
        .command(&["attach", "app", "-c", "echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    let attach_lines = lines_of(&mut attach);
    // attach shows only what comes after it connected: wait until it has.
    std::thread::sleep(Duration::from_secs(2));

    // port-forward to the echo server; a round trip through it.
    let mut pf = f
        .kubectl
        .command(&["port-forward", "pod/app", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let pf_lines = lines_of(&mut pf);
    let line = wait_line(&pf_lines, "Forwarding from 127.0.0.1:");
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"));
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
    let mut refused = f
        .kubectl
        .command(&["port-forward", "pod/app", ":9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let refused_lines = lines_of(&mut refused);
    let line = wait_line(&refused_lines, "Forwarding from 127.0.0.1:");
    let dead: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let mut conn = TcpStream::connect(("127.0.0.1", dead)).expect("connecting");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let _ = refused.kill();
    let _ = refused.wait();
    let _ = pf.kill();
    let _ = pf.wait();

    // The connections were logged after logs -f and attach started.
    poke(&f);
    wait_line(&log_lines, "\"accepted\"");
    wait_line(&attach_lines, "\"accepted\"");
    for child in [&mut logs, &mut attach] {
        let _ = child.kill();
        let _ = child.wait();
    }
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
        let run = f
            .kubectl
            .run_with_stdin(&["apply", "-f", "-"], Some(doc.to_string().as_bytes()));
        assert!(run.success(), "{run}");
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
