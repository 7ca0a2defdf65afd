//! One user's kubectl session against one embedded cluster, start to end,
//! with the pinned kubectl (1.33): a namespace, a ConfigMap and a Secret
//! (protobuf bodies); a Deployment using them, `rollout status`; `exec`
//! with stdin, with a terminal, and a command's exit code; `cp` both ways;
//! `logs -f` seeing a request made through `port-forward`; capabilities
//! (iptables only with NET_ADMIN); `cordon`/`uncordon`; a taint with and
//! without a toleration; `delete --grace-period` observed by the process
//! (its SIGTERM handler's line in `logs -f`; SIGKILL after the grace when it
//! ignores SIGTERM); `drain`.
//!
//! Each step has a focused test elsewhere (kubectl_streams, scheduling,
//! graceful, deployment, kubelet_volumes); this one runs them as one
//! session, each step on the state the previous ones left.
//!
//! Needs root (an ordinary user's run re-runs itself as root of a user
//! namespace: `testkit::gate_or_userns`), ip, iptables, the CNI plugins
//! and kubectl (`. ci/env`); skips with `SKIP:` otherwise (a panic under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod kubectl_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::ClusterSpec;
use kubectl_support::{Env, TIMEOUT, Terminal, WAIT, forwarded_port, short_backoff, spec, stop, wait_line};
use serde_json::{Value, json};
use testkit::{Kubectl, Need};

const TEST: &str = "a_kubectl_session_from_namespace_to_drain";

/// kubectl in the session's namespace.
struct Session {
    k: Kubectl,
}

impl Session {
    fn args<'a>(&self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-n", "journey"];
        all.extend_from_slice(args);
        all
    }

    fn ok(&self, args: &[&str]) -> String {
        self.k.ok(&self.args(args))
    }

    fn run(&self, args: &[&str]) -> testkit::Run {
        self.k.run(&self.args(args))
    }

    fn apply(&self, doc: &Value) {
        // The session's documents name their namespace.
        kubectl_support::apply(&self.k, doc);
    }

    /// A kubectl command left running: its stdout's lines as they come.
    fn follow(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        kubectl_support::follow(self.k.command(&self.args(args)), Stdio::piped())
    }

    fn node_of(&self, pod: &str) -> String {
        self.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
    }

    fn wait(&self, condition: &str, pod: &str) {
        self.ok(&[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("pod/{pod}"),
            TIMEOUT,
        ]);
    }
}

/// A pod of the `shell` image (`/bin/sh`) running `script`, grace 5 s.
fn shell_pod(name: &str, script: &str, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "journey"},
        "spec": {"terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "shell", "args": ["-c", script]}]}
    });
    if let (Some(spec), Value::Object(extra)) = (pod["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    pod
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "journey"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8080"],
                        "env": [
                            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "token"}}}
                        ],
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/journey"}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "app-config"}}]
                }
            }
        }
    })
}

/// `kubectl exec -it` with a real terminal: output seen there and the
/// exit code.
fn exec_with_terminal(s: &Session, pod: &str, script: &str) -> (String, Option<i32>) {
    Terminal::spawn(
        s.k.command(&s.args(&["exec", "-it", pod, "--", "sh", "-c", script])),
        Some((24, 91)),
    )
    .finish()
}

/// Once the Deployment's rollout is complete: `field` of each of its pods,
/// space-separated.
fn web_rolled_out(s: &Session, field: &str) -> String {
    s.ok(&["rollout", "status", "deploy/web", TIMEOUT]);
    let path = format!("jsonpath={{.items[*].{field}}}");
    s.ok(&["get", "pods", "-l", "app=web", "-o", &path])
}

/// Pods of the namespace on `node`.
fn pods_on(s: &Session, node: &str) -> Vec<String> {
    s.k.items(&s.args(&["get", "pods"]))
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
    !matches!(state, None | Some("Z") | Some("X"))
}

#[test]
fn a_kubectl_session_from_namespace_to_drain() {
    let Some(Env {
        k,
        scratch,
        cluster: _cluster,
    }) = kubectl_support::start(
        TEST,
        &[Need::Root, Need::Tool("ip"), Need::Tool("iptables"), Need::CniPlugins],
        ClusterSpec {
            backoff: short_backoff(),
            ..spec(2)
        },
    )
    else {
        return;
    };
    let started = Instant::now();
    let s = Session { k };

    // A namespace, a ConfigMap and a Secret: kubectl sends them as protobuf.
    s.k.ok(&["create", "namespace", "journey"]);
    s.ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=greeting=hello-journey",
    ]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=token=s3cret",
    ]);

    // A Deployment using both, rolled out.
    s.apply(&deployment());
    let names = web_rolled_out(&s, "metadata.name");
    let web: Vec<&str> = names.split_whitespace().collect();
    assert_eq!(web.len(), 2, "{names}");
    let pod = web[0];

    // exec: the env and volume the Deployment gave it, stdin, a terminal,
    // exit codes.
    let seen = s.ok(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        "echo $GREETING $TOKEN; cat /etc/journey/greeting",
    ]);
    assert_eq!(seen, "hello-journey s3cret\nhello-journey");
    let run = s.k.run_with_stdin(
        &s.args(&["exec", "-i", pod, "--", "tr", "a-z", "A-Z"]),
        Some(b"through stdin\n"),
    );
    assert_eq!(run.stdout, "THROUGH STDIN\n", "{run}");
    let (out, code) = exec_with_terminal(&s, pod, "sleep 0.5; tty; stty size; exit 5");
    assert!(out.contains("/dev/pts/") && out.contains("24 91"), "{out:?}");
    assert_eq!(code, Some(5), "{out:?}");
    let run = s.run(&["exec", pod, "--", "sh", "-c", "echo to-stderr >&2; exit 7"]);
    assert_eq!((run.code(), run.stderr.contains("to-stderr")), (Some(7), true), "{run}");

    // cp both ways.
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 + i / 7) as u8).collect();
    let local = scratch.join("upload.bin");
    std::fs::write(&local, &data).unwrap();
    let in_pod = scratch.join("in-pod");
    s.ok(&["exec", pod, "--", "mkdir", "-p", in_pod.to_str().unwrap()]);
    let remote = format!("journey/{pod}:{}", in_pod.join("copy.bin").display());
    s.k.ok(&["cp", local.to_str().unwrap(), &remote]);
    let back = scratch.join("download.bin");
    s.k.ok(&["cp", &remote, back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the round trip through cp changed the file"
    );

    // logs -f, then a request through port-forward: the echo server's log
    // line about it reaches the follower.
    let (logs, log_lines) = s.follow(&["logs", "-f", pod]);
    wait_line(&log_lines, "\"listening\"");
    // The lines are kept until kubectl ends: it prints a line per
    // connection, and a closed stdout would kill it.
    let (pf, pf_lines) = s.follow(&["port-forward", &format!("pod/{pod}"), ":8080"]);
    let port = forwarded_port(&pf_lines);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the forwarded port");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(b"hello through port-forward\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("the echo answer");
    assert!(answer.contains("\"server\":\"echo\""), "{answer:?}");
    wait_line(&log_lines, "\"accepted\"");
    stop(pf);
    drop(pf_lines);
    stop(logs);

    // Capabilities: iptables in the pod's netns only with NET_ADMIN, also
    // through exec.
    let sleeper = "sleep 1000 & wait";
    s.apply(&shell_pod("plain", sleeper, json!({})));
    let mut netadmin = shell_pod("netadmin", sleeper, json!({}));
    netadmin["spec"]["containers"][0]["securityContext"] = json!({"capabilities": {"add": ["NET_ADMIN"]}});
    s.apply(&netadmin);
    s.wait("Ready", "plain");
    s.wait("Ready", "netadmin");
    let denied = s.run(&["exec", "plain", "--", "iptables", "-t", "nat", "-N", "JOURNEY"]);
    assert!(
        !denied.success() && denied.stderr.contains("Permission denied"),
        "{denied}"
    );
    s.ok(&["exec", "netadmin", "--", "iptables", "-t", "nat", "-N", "JOURNEY"]);
    let rules = s.ok(&["exec", "netadmin", "--", "iptables-save", "-t", "nat"]);
    assert!(rules.contains(":JOURNEY"), "{rules}");

    // cordon: a new pod stays Pending until uncordon.
    s.k.ok(&["cordon", "node-0", "node-1"]);
    s.apply(&shell_pod("waiter", sleeper, json!({})));
    s.wait("PodScheduled=False", "waiter");
    assert_eq!(s.node_of("waiter"), "");
    s.k.ok(&["uncordon", "node-0", "node-1"]);
    s.wait("Ready", "waiter");

    // A taint on every node: a pod tolerating it runs, one that does not
    // stays Pending until the taint is gone.
    s.k.ok(&["taint", "nodes", "--all", "dedicated=infra:NoSchedule"]);
    let tolerates =
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]});
    s.apply(&shell_pod("tolerant", sleeper, tolerates));
    s.apply(&shell_pod("intolerant", sleeper, json!({})));
    s.wait("Ready", "tolerant");
    s.wait("PodScheduled=False", "intolerant");
    assert_eq!(s.node_of("intolerant"), "");
    s.k.ok(&["taint", "nodes", "--all", "dedicated-"]);
    s.wait("Ready", "intolerant");

    // delete --grace-period: the process's SIGTERM handler runs (its line
    // in logs -f), and the pod goes as soon as it exits.
    let graceful = "trap 'echo got SIGTERM; exit 0' TERM; echo ready; sleep 1000 & wait";
    s.apply(&shell_pod("graceful", graceful, json!({})));
    s.wait("Ready", "graceful");
    let (logs, log_lines) = s.follow(&["logs", "-f", "graceful"]);
    wait_line(&log_lines, "ready");
    let asked = Instant::now();
    s.ok(&["delete", "pod", "graceful", "--grace-period=20", TIMEOUT]);
    wait_line(&log_lines, "got SIGTERM");
    assert!(asked.elapsed() < Duration::from_secs(15), "{:?}", asked.elapsed());
    stop(logs);

    // One that ignores SIGTERM (and says so) is SIGKILLed once its grace
    // period is over.
    let pid_file = scratch.join("stubborn.pid");
    // `$$$$`: Kubernetes expands `$$` in args to `$`; the shell sees `$$`.
    let stubborn = format!(
        "echo $$$$ > {}; trap 'echo ignoring SIGTERM' TERM; echo ready; while true; do sleep 0.1; done",
        pid_file.display()
    );
    s.apply(&shell_pod("stubborn", &stubborn, json!({})));
    s.wait("Ready", "stubborn");
    let (logs, log_lines) = s.follow(&["logs", "-f", "stubborn"]);
    wait_line(&log_lines, "ready");
    let pid = std::fs::read_to_string(&pid_file).expect("the pid file");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(alive(&pid), "pid {pid:?}: {stat:?}");
    let asked = Instant::now();
    s.ok(&["delete", "pod", "stubborn", "--grace-period=3", TIMEOUT]);
    let took = asked.elapsed();
    wait_line(&log_lines, "ignoring SIGTERM");
    stop(logs);
    assert!(
        took >= Duration::from_secs(3),
        "gone after {took:?}, within its grace period"
    );
    assert!(took < Duration::from_secs(20), "gone only after {took:?}");
    assert!(!alive(&pid), "the process ignoring SIGTERM was SIGKILLed");

    // drain: node-0's pods are evicted (bare pods with --force), the
    // Deployment's come back on node-1, node-0 stays cordoned until
    // uncordon.
    assert!(
        !pods_on(&s, "node-0").is_empty(),
        "something runs on node-0 before the drain"
    );
    s.k.ok(&[
        "drain",
        "node-0",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        TIMEOUT,
    ]);
    assert_eq!(pods_on(&s, "node-0"), Vec::<String>::new());
    let nodes = web_rolled_out(&s, "spec.nodeName");
    assert_eq!(nodes, "node-1 node-1", "the Deployment's pods moved to node-1");
    assert!(s.k.ok(&["get", "node", "node-0"]).contains("SchedulingDisabled"));
    s.k.ok(&["uncordon", "node-0"]);

    let took = started.elapsed();
    eprintln!("the kubectl session took {took:?}");
    assert!(took < Duration::from_secs(120), "the session took {took:?}");
}
