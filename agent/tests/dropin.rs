//! Drop-in under Istio's own chart: the real binary started exactly as the
//! chart's container spec says (`fixtures/chart/istio-cni-node.yaml`) —
//! command `install-cni` found on the image's PATH, its args, the env a
//! kubelet builds from it, the hostPath mounts at the chart's container
//! paths — in a private mount and network namespace, against an API server
//! that accepts connections and never answers.
//!
//! Proves: it installs, `/readyz` is 200 on 127.0.0.1:8000 and [::1]:8000,
//! `/metrics` on :15014 is Prometheus text with `process_*`, every log line
//! is one JSON object with Istio's keys; SIGTERM at any instant of start-up
//! (waiting for a primary config, installing, waiting for the API server's
//! first pod list) exits 0 within 1 s with the node restored byte for byte;
//! `AMBIENT_ENABLED=true` exits 1 naming the setting.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod install_common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use install_common::agent::{AGENT, signal, wait_for_exit, wait_until};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Volume};
use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::{Need, Scratch, gate};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chart/istio-cni-node.yaml");
const PRIMARY_NAME: &str = "10-calico.conflist";
const PRIMARY: &str = "{\n  \"name\": \"k8s-pod-network\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [\n    {\"type\": \"calico\", \"ipam\": {\"type\": \"calico-ipam\"}},\n    {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}\n  ]\n}\n";
/// The image's PATH (Debian's).
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The chart's ConfigMap data and its `install-cni` container and volumes.
struct Chart {
    config: BTreeMap<String, String>,
    container: Container,
    volumes: Vec<Volume>,
}

fn chart() -> Chart {
    let text = fs::read_to_string(FIXTURE).unwrap();
    let mut docs = text.split("\n---\n");
    let cm: ConfigMap = serde_yaml::from_str(docs.next().unwrap()).unwrap();
    let ds: DaemonSet = serde_yaml::from_str(docs.next().unwrap()).unwrap();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let container = pod.containers.into_iter().find(|c| c.name == "install-cni").unwrap();
    Chart {
        config: cm.data.unwrap_or_default(),
        container,
        volumes: pod.volumes.unwrap_or_default(),
    }
}

/// One node: the host's filesystem (hostPath sources) and the container's root.
struct Node {
    scratch: Scratch,
    host: PathBuf,
    root: PathBuf,
}

impl Node {
    fn new(label: &str, primary: bool) -> Node {
        let scratch = Scratch::new(label);
        let host = scratch.join("host");
        let root = scratch.join("root");
        for d in ["opt/cni/bin", "etc/cni/net.d", "var/run/istio-cni", "sa", "image"] {
            fs::create_dir_all(host.join(d)).unwrap();
        }
        fs::create_dir_all(&root).unwrap();
        fs::write(host.join("opt/cni/bin/bridge"), b"primary plugin").unwrap();
        if primary {
            fs::write(host.join("etc/cni/net.d").join(PRIMARY_NAME), PRIMARY).unwrap();
        }
        // The projected service-account volume: a token and a real CA.
        let ca = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap();
        fs::write(host.join("sa/ca.crt"), ca.cert.pem()).unwrap();
        fs::write(host.join("sa/token"), b"chart-token").unwrap();
        fs::write(host.join("sa/namespace"), b"istio-system").unwrap();
        // The image's /opt/cni/bin: only the plugin.
        fs::write(host.join("image/istio-cni"), b"#!/bin/sh\nexit 0\n").unwrap();
        Node { scratch, host, root }
    }

    /// Every file under the host's CNI dirs and the run dir, with its bytes.
    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for d in ["opt/cni/bin", "etc/cni/net.d", "var/run/istio-cni"] {
            for e in fs::read_dir(self.host.join(d)).unwrap() {
                let p = e.unwrap().path();
                out.insert(
                    format!("{d}/{}", p.file_name().unwrap().to_string_lossy()),
                    fs::read(&p).unwrap_or_default(),
                );
            }
        }
        out
    }

    fn installed(&self) -> bool {
        let conf = fs::read_to_string(self.host.join("etc/cni/net.d").join(PRIMARY_NAME)).unwrap_or_default();
        conf.contains("\"istio-cni\"")
            && self.host.join("opt/cni/bin/istio-cni").exists()
            && self.host.join("var/run/istio-cni/istio-cni-kubeconfig").exists()
    }

    /// The env a kubelet gives the container: envFrom, env (downward API
    /// resolved for this node), the service variables, the image's PATH.
    fn env(&self, chart: &Chart, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), IMAGE_PATH.into()),
            ("HOSTNAME".into(), "istio-cni-node-x7k2p".into()),
        ];
        env.extend(chart.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        for e in chart.container.env.clone().unwrap_or_default() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => match (&from.field_ref, &from.resource_field_ref) {
                    (Some(f), _) => match f.field_path.as_str() {
                        "spec.nodeName" => "node-1".into(),
                        "metadata.name" => "istio-cni-node-x7k2p".into(),
                        "metadata.namespace" => "istio-system".into(),
                        other => panic!("unexpected fieldRef {other}"),
                    },
                    (None, Some(_)) => "4294967296".into(),
                    _ => panic!("unexpected valueFrom in {}", e.name),
                },
                _ => String::new(),
            };
            env.push((e.name, value));
        }
        env.push(("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()));
        env.push(("KUBERNETES_SERVICE_PORT".into(), "443".into()));
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        env
    }

    /// A shell script that builds the container's root in a private mount
    /// namespace (system dirs shared read-only in spirit, the image's own
    /// files, the chart's mounts) and execs the chart's command in it.
    fn container_script(&self, chart: &Chart) -> String {
        let r = self.root.display();
        let mut s = format!(
            "set -eu\nR={r}\nmount -t tmpfs tmpfs \"$R\"\n\
             for d in bin sbin lib lib32 lib64 libx32 usr etc dev proc; do\n\
               if [ -L /$d ]; then ln -s \"$(readlink /$d)\" \"$R/$d\";\n\
               elif [ -d /$d ]; then mkdir -p \"$R/$d\"; mount --rbind /$d \"$R/$d\"; fi\n\
             done\n\
             mount -t tmpfs tmpfs \"$R/usr/local/bin\"\n\
             touch \"$R/usr/local/bin/install-cni\"\n\
             mount --bind {AGENT} \"$R/usr/local/bin/install-cni\"\n\
             mkdir -p \"$R/opt/cni/bin\" \"$R/tmp\"\n\
             cp {}/image/istio-cni \"$R/opt/cni/bin/istio-cni\"\n",
            self.host.display()
        );
        let mut mounts: Vec<(String, PathBuf, bool)> = vec![(SA_DIR.into(), self.host.join("sa"), true)];
        for m in chart.container.volume_mounts.clone().unwrap_or_default() {
            let volume = chart.volumes.iter().find(|v| v.name == m.name).unwrap();
            let host_path = volume.host_path.as_ref().unwrap().path.clone();
            let source = if host_path == "/proc" {
                PathBuf::from("/proc")
            } else {
                self.host.join(host_path.trim_start_matches('/'))
            };
            mounts.push((m.mount_path, source, m.read_only.unwrap_or(false)));
        }
        for (target, source, ro) in mounts {
            s.push_str(&format!(
                "mkdir -p \"$R{target}\"\nmount --rbind {} \"$R{target}\"\n",
                source.display()
            ));
            if ro {
                s.push_str(&format!("mount -o remount,bind,ro \"$R{target}\" || true\n"));
            }
        }
        s.push_str("cd \"$R\"\nexec chroot \"$R\" \"$@\"\n");
        s
    }

    /// Starts the container: chart command and args, exactly.
    fn start(&self, chart: &Chart, extra_env: &[(&str, &str)]) -> Child {
        let mut argv = chart.container.command.clone().unwrap();
        argv.extend(chart.container.args.clone().unwrap_or_default());
        let log = fs::File::create(self.scratch.join("container.log")).unwrap();
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(self.container_script(chart))
            .arg("container")
            .args(&argv)
            .env_clear()
            .envs(self.env(chart, extra_env))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.scratch.join("container.log")).unwrap_or_default()
    }
}

/// Whether `pid` is the agent with SIGTERM blocked (its first act): from
/// then on a signal means cleanup, never the default action.
fn agent_owns_sigterm(pid: u32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap_or(0);
    comm.trim() == "install-cni" && blocked & (1 << (libc::SIGTERM - 1)) != 0
}

/// [`wait_for_exit`], killing the child when it still runs.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let status = wait_for_exit(child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// An API server that accepts every connection and never answers; counts them.
fn silent_api_server() -> Arc<Mutex<Vec<TcpStream>>> {
    let listener = TcpListener::bind("127.0.0.1:443").expect("binding 127.0.0.1:443 in the private netns");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    held
}

/// GET over plain HTTP/1.1: the status code and the response text.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

/// Runs `f` on a thread of its own network namespace (loopback up): the
/// agent it starts and the connections it makes stay private, so the
/// chart's fixed ports (8000, 15014, 443) never collide with anything.
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = linux_ns::Netns::unpinned().unwrap_or_else(|e| panic!("{e}"));
    let up = ns.command("ip").args(["link", "set", "lo", "up"]).status().expect("ip");
    assert!(up.success(), "ip link set lo up: {up}");
    ns.run(f).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` with the chart's container spec in a private network namespace
/// (see [`in_private_netns`]); skips `test` when not root.
fn with_chart_in_private_netns(test: &str, f: impl FnOnce(Chart) + Send + 'static) {
    if gate(test, &[Need::Root]) {
        in_private_netns(|| f(chart()));
    }
}

#[test]
fn the_charts_container_installs_is_ready_on_both_families_and_logs_istio_json() {
    with_chart_in_private_netns(
        "the_charts_container_installs_is_ready_on_both_families_and_logs_istio_json",
        |chart| {
            assert_eq!(
                chart.container.command.as_deref(),
                Some(&["install-cni".to_string()][..])
            );
            let node = Node::new("chart", true);
            let before = node.snapshot();
            let api = silent_api_server();
            let mut child = node.start(&chart, &[]);
            let ready = wait_until(Duration::from_secs(20), || {
                node.installed()
                    && ["127.0.0.1:8000", "[::1]:8000"]
                        .iter()
                        .all(|a| http_get(a.parse().unwrap(), "/readyz").map(|r| r.0) == Some(200))
            });
            if !ready {
                let _ = child.kill();
                let _ = child.wait();
                panic!("not installed and ready on both families:\n{}", node.log());
            }
            let (code, metrics) = http_get("[::1]:15014".parse().unwrap(), "/metrics").unwrap();
            assert_eq!(code, 200, "{metrics}");
            assert!(
                metrics.contains("Content-Type: text/plain; version=0.0.4")
                    || metrics.contains("content-type: text/plain; version=0.0.4"),
                "{metrics}"
            );
            for sample in [
                "istio_cni_install_ready 1",
                "process_resident_memory_bytes ",
                "process_start_time_seconds ",
            ] {
                assert!(metrics.contains(sample), "no {sample:?} in\n{metrics}");
            }
            // The repair controller (the chart turns repairPods on) now waits for
            // a first pod list from a server that never answers.
            let waiting = wait_until(Duration::from_secs(10), || {
                node.log().contains("starting CNI sidecar repair controller") && !api.lock().unwrap().is_empty()
            });
            assert!(
                waiting,
                "the repair controller never reached the API server:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(200));
            let sent = Instant::now();
            signal(&child, Signal::SIGTERM);
            let status = wait_exit(&mut child, Duration::from_secs(10));
            let took = sent.elapsed();
            assert!(
                status.is_some_and(|s| s.success()),
                "{status:?} after {took:?}:\n{}",
                node.log()
            );
            // Well under the 10 s the waits it interrupts would take (no timing
            // figure: a loaded machine may take a while to schedule the exit).
            assert!(took < Duration::from_secs(5), "exit took {took:?}:\n{}", node.log());
            assert_eq!(node.snapshot(), before, "the node is not restored:\n{}", node.log());
            // One JSON object per line, with Istio's keys.
            let log = node.log();
            let mut scopes = std::collections::BTreeSet::new();
            for line in log.lines() {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{log}"));
                let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
                for k in ["level", "time", "msg"] {
                    assert!(v[k].is_string(), "no {k} in {line}");
                }
                // Not tracing's own JSON shape (`timestamp`, `target`, a `fields` object).
                assert!(keys.iter().all(|k| !["timestamp", "target"].contains(k)), "{line}");
                assert!(!v["fields"].is_object(), "{line}");
                scopes.insert(v["scope"].as_str().unwrap_or("").to_string());
            }
            assert!(scopes.contains("cni-agent"), "{log}");
            assert!(
                log.contains("ignoring ambient-only settings") && log.contains("AMBIENT_DNS_CAPTURE"),
                "{log}"
            );
            assert!(log.contains("cleanup done"), "{log}");
            eprintln!(
                "chart container: ready on 127.0.0.1:8000 and [::1]:8000; SIGTERM while the API server is silent: exit 0 in {took:?}, node restored"
            );
        },
    );
}

#[test]
fn sigterm_at_any_instant_of_start_up_with_a_silent_api_server() {
    with_chart_in_private_netns("sigterm_at_any_instant_of_start_up_with_a_silent_api_server", |chart| {
        let _api = silent_api_server();
        let mut worst = (Duration::ZERO, String::new());
        // Waiting for a primary config (none on the node), then instants
        // through install and the repair controller's wait for the API.
        let cases: Vec<(bool, u64)> = std::iter::once((false, 150))
            .chain([0, 2, 5, 10, 20, 40, 80, 160, 320, 640].map(|ms| (true, ms)))
            .collect();
        for (primary, ms) in cases {
            let node = Node::new("instant", primary);
            let before = node.snapshot();
            let mut child = node.start(&chart, &[]);
            let owned = wait_until(Duration::from_secs(10), || agent_owns_sigterm(child.id()));
            assert!(owned, "the agent never started:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(ms));
            let sent = Instant::now();
            signal(&child, Signal::SIGTERM);
            let status = wait_exit(&mut child, Duration::from_secs(10));
            let took = sent.elapsed();
            let what = format!("primary {primary}, SIGTERM {ms} ms after start");
            assert!(
                status.is_some_and(|s| s.success()),
                "{what}: {status:?} after {took:?}\n{}",
                node.log()
            );
            assert!(
                took < Duration::from_secs(1),
                "{what}: exit took {took:?}\n{}",
                node.log()
            );
            assert_eq!(
                node.snapshot(),
                before,
                "{what}: the node is not restored\n{}",
                node.log()
            );
            if took > worst.0 {
                worst = (took, what);
            }
        }
        eprintln!(
            "SIGTERM at 11 instants of start-up, API server silent: every exit 0, node restored, slowest exit {:?} ({})",
            worst.0, worst.1
        );
    });
}

#[test]
fn ambient_enabled_is_refused_naming_the_setting() {
    with_chart_in_private_netns("ambient_enabled_is_refused_naming_the_setting", |chart| {
        let node = Node::new("ambient", true);
        let before = node.snapshot();
        let mut child = node.start(&chart, &[("AMBIENT_ENABLED", "true")]);
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", node.log());
        let log = node.log();
        assert!(
            log.contains("AMBIENT_ENABLED") && log.contains("sidecar data plane only"),
            "{log}"
        );
        assert_eq!(node.snapshot(), before);
    });
}

/// The chart configures the agent through its environment: a bad value
/// names the variable, not only the flag it maps to.
#[test]
fn a_bad_environment_value_names_the_variable() {
    for (var, value, reason) in [
        ("KUBECONFIG_MODE", "abc", "\"abc\" is not an integer"),
        ("LOG_OUTPUT_LEVEL", "loud", "\"loud\" is not a level"),
        ("CHAINED_CNI_PLUGIN", "maybe", "maybe"),
    ] {
        let out = Command::new(AGENT)
            .env_clear()
            .env(var, value)
            .output()
            .expect("run the agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(
            stderr.starts_with(&format!("istio-cni-agent: {var}={value:?} (environment, read as --")),
            "{var}: {stderr}"
        );
        assert!(stderr.contains(reason), "{var}: {stderr}");
    }
    // Given as a flag, the message names the flag.
    let out = Command::new(AGENT)
        .env_clear()
        .arg("--kubeconfig-mode=abc")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'--kubeconfig-mode <KUBECONFIG_MODE>'") && !stderr.contains("(environment"),
        "{stderr}"
    );
}

/// The binary answers under Istio's name without a mount namespace too.
#[test]
fn install_cni_name_version_and_go_flags() {
    let scratch = Scratch::new("name");
    let link = scratch.join("install-cni");
    std::os::unix::fs::symlink(AGENT, &link).unwrap();
    let out = Command::new(&link).arg("version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("install-cni version "), "{text}");
    let out = Command::new(&link).args(["version", "--short"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), env!("CARGO_PKG_VERSION"));
    let out = Command::new(&link).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: install-cni"), "{help}");
    for flag in [
        "--ctrlz_port",
        "--log_caller",
        "--log_stacktrace_level",
        "--log_target",
        "--log_as_json",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    let out = Command::new(&link)
        .args(["--log_output_level=cni-agent:loud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--log_output_level") && err.contains("loud"), "{err}");
}

/// The image lays files out as Istio's install-cni image does: the chart's
/// `install-cni` on PATH at /usr/local/bin, the plugin under /opt/cni/bin
/// (there is no Docker here: the Dockerfile is read as text).
#[test]
fn the_image_has_istios_layout() {
    let text = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    let lines: Vec<&str> = runtime.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(
        lines.contains(&"COPY --from=build /out/istio-cni /opt/cni/bin/istio-cni"),
        "{runtime}"
    );
    assert!(
        lines.contains(&"COPY --from=build /out/istio-cni-agent /usr/local/bin/istio-cni-agent"),
        "{runtime}"
    );
    // A relative link: the same binary, invoked as install-cni.
    assert!(
        lines.contains(&"RUN ln -s istio-cni-agent /usr/local/bin/install-cni"),
        "{runtime}"
    );
}
