//! `istio-cni` given hostile input by the runtime or by the files its config
//! names: a clear CNI error, promptly, in bounded memory, and never a request
//! to the API server for a name that is not a Kubernetes name.
//!
//! Every run is capped (1 GiB of address space, 20 s) so a regression fails
//! the test instead of hanging it or taking the machine's memory.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);
/// What "promptly" means for a refusal: no wait, no retry loop.
const PROMPT: Duration = Duration::from_secs(3);
const MIB: usize = 1 << 20;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    max_rss: usize,
    /// Bytes of stdin the plugin took before it closed the pipe.
    stdin_written: usize,
}

impl Run {
    /// The single error document of a failed call.
    fn error(&self) -> Value {
        assert_eq!(self.code, Some(1), "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("one JSON document ({e}): {}", self.stdout))
    }

    fn msg(&self) -> String {
        self.error()["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// Runs the plugin with `env`, feeding stdin from `feed` on a thread (which
/// returns how much it wrote), under the caps above.
///
/// The peak RSS is the plugin's own `VmHWM`, read when it stops at exit under
/// ptrace: `ru_maxrss` would count this test process's pages, which a child
/// carries until its exec.
#[allow(
    clippy::zombie_processes,
    reason = "reaped with waitpid, which also reports the ptrace stops"
)]
fn call(env: &[(&str, String)], feed: impl FnOnce(&mut ChildStdin) -> usize + Send + 'static) -> Run {
    let mut cmd = support::plugin_command(env);
    let cap = libc::rlimit {
        rlim_cur: 1 << 30,
        rlim_max: 1 << 30,
    };
    // SAFETY: setrlimit and ptrace are async-signal-safe and affect only the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 || libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // The child stops at its exec; from there on it stops once more, at exit.
    // SAFETY: waitpid and ptrace on our own traced, stopped child.
    unsafe {
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFSTOPPED(status), "stopped at exec: {status:#x}");
        let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
        assert_eq!(libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options), 0);
        assert_eq!(libc::ptrace(libc::PTRACE_CONT, pid, 0, 0), 0);
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || feed(&mut stdin));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut max_rss = 0;
    loop {
        // SAFETY: as above; std never reaps the child (no wait() on `child`).
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                break;
            }
            let at_exit = status >> 8 == libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8);
            let signal = if at_exit {
                max_rss = peak_rss(pid);
                0
            } else {
                libc::WSTOPSIG(status)
            };
            // SAFETY: resumes our stopped tracee, passing on any signal it got.
            unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, signal) };
            continue;
        }
        if started.elapsed() > DEADLINE {
            // SAFETY: the child is ours and not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    assert!(elapsed < DEADLINE, "the plugin did not finish within {DEADLINE:?}");
    assert!(max_rss > 0, "the plugin's exit was seen, and its peak RSS with it");
    Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed,
        max_rss,
        stdin_written: writer.join().unwrap(),
    }
}

/// `VmHWM` of a live process, in bytes.
fn peak_rss(pid: libc::pid_t) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn text(s: String) -> impl FnOnce(&mut ChildStdin) -> usize + Send + 'static {
    move |w| {
        // The plugin may refuse before reading it all.
        let _ = w.write_all(s.as_bytes());
        s.len()
    }
}

fn add_env(namespace: &str, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", "ADD".into()),
        ("CNI_CONTAINERID", "c0ffee".into()),
        ("CNI_NETNS", "/var/run/netns/does-not-exist".into()),
        ("CNI_IFNAME", "eth0".into()),
        ("CNI_PATH", "/opt/cni/bin".into()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"),
        ),
    ]
}

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("istio-cni-hostile-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

fn conf_with_run_dir(dir: &Path) -> String {
    json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni", "cni_agent_run_dir": dir}).to_string()
}

#[test]
fn a_kubeconfig_that_is_not_a_small_regular_file_is_refused_promptly_naming_it() {
    let dir = scratch("kubeconfig");
    let kubeconfig = dir.join("istio-cni-kubeconfig");
    // (what the kubeconfig path is, what the error says about it)
    type Make = dyn Fn(&Path);
    let cases: [(&str, &Make, &str); 3] = [
        ("FIFO", &|p| mkfifo(p), "not a regular file (a FIFO)"),
        (
            "directory",
            &|p| std::fs::create_dir(p).unwrap(),
            "not a regular file (a directory)",
        ),
        (
            "5 MiB file",
            &|p| std::fs::File::create(p).unwrap().set_len(5 << 20).unwrap(),
            "larger than the limit of 4194304 bytes",
        ),
    ];
    for (what, make, reason) in cases {
        make(&kubeconfig);
        let run = call(&add_env("default", "web"), text(conf_with_run_dir(&dir)));
        let e = run.error();
        assert_eq!(e["code"], 11, "{what}: {e}");
        let expected = format!("kubeconfig {}: {reason}", kubeconfig.display());
        assert!(e["msg"].as_str().unwrap().contains(&expected), "{what}: {e}");
        assert!(run.elapsed < PROMPT, "{what}: took {:?}", run.elapsed);
        assert!(run.max_rss < 64 * MIB, "{what}: {} bytes resident", run.max_rss);
        let _ = std::fs::remove_file(&kubeconfig).or_else(|_| std::fs::remove_dir(&kubeconfig));
    }

    // A legacy config naming /dev/zero (this grew to 20 GB before the fix).
    let legacy = json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "istio-cni",
        "kubernetes": {"kubeconfig": "/dev/zero"}});
    let run = call(&add_env("default", "web"), text(legacy.to_string()));
    assert!(
        run.msg()
            .contains("kubeconfig /dev/zero: not a regular file (a character device)"),
        "{}",
        run.stdout
    );
    assert!(
        run.elapsed < PROMPT && run.max_rss < 64 * MIB,
        "{:?}, {} bytes",
        run.elapsed,
        run.max_rss
    );

    // STATUS reads the same file the same way.
    mkfifo(&kubeconfig);
    let status = json!({"cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "istio-cni",
        "cni_agent_run_dir": dir, "status_check": true});
    let env = [
        ("CNI_COMMAND", "STATUS".to_string()),
        ("CNI_PATH", "/opt/cni/bin".into()),
    ];
    let run = call(&env, text(status.to_string()));
    assert_eq!(run.error()["code"], 50);
    assert!(run.msg().contains("a FIFO") && run.elapsed < PROMPT, "{}", run.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn files_the_kubeconfig_names_are_bounded_too() {
    let dir = scratch("named-files");
    mkfifo(&dir.join("token"));
    for (user, cluster, expected) in [
        (
            "{}",
            "certificate-authority: /dev/zero",
            "certificate-authority /dev/zero: not a regular file".to_string(),
        ),
        (
            "{tokenFile: token}",
            "insecure-skip-tls-verify: true",
            format!("tokenFile {}/token: not a regular file (a FIFO)", dir.display()),
        ),
    ] {
        let kubeconfig = format!(
            "clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1', {cluster}}}}}]\n\
             users: [{{name: u, user: {user}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        );
        std::fs::write(dir.join("istio-cni-kubeconfig"), kubeconfig).unwrap();
        let run = call(&add_env("default", "web"), text(conf_with_run_dir(&dir)));
        assert!(run.msg().contains(&expected), "{}", run.stdout);
        assert!(
            run.elapsed < PROMPT && run.max_rss < 64 * MIB,
            "{:?}, {} bytes",
            run.elapsed,
            run.max_rss
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plain-HTTP "API server" that records each request line and answers
/// every GET with `pod`.
struct FakeApi {
    requests: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl FakeApi {
    fn start(label: &str, pod: Value) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                seen.lock().unwrap().push(line.trim_end().to_string());
                // The rest of the head, up to the blank line.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let body = pod.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let dir = scratch(label);
        let kubeconfig = format!(
            "clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        );
        std::fs::write(dir.join("istio-cni-kubeconfig"), kubeconfig).unwrap();
        FakeApi { requests, dir }
    }

    fn conf(&self) -> String {
        conf_with_run_dir(&self.dir)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn pod_names_that_are_not_kubernetes_names_never_reach_the_api() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0.web", "namespace": "default"},
        "spec": {"containers": [{"name": "app"}]}});
    let api = FakeApi::start("names", pod);
    let cases = [
        ("default/pods/web?", "other", "K8S_POD_NAMESPACE"),
        ("default", "web?", "K8S_POD_NAME"),
        ("default", "web?x", "K8S_POD_NAME"),
        ("default", "web#frag", "K8S_POD_NAME"),
        ("default", "..", "K8S_POD_NAME"),
        ("default", "web%2Fx", "K8S_POD_NAME"),
        ("default", "Web", "K8S_POD_NAME"),
        ("default", "web x", "K8S_POD_NAME"),
        ("..", "web", "K8S_POD_NAMESPACE"),
        ("a.b", "web", "K8S_POD_NAMESPACE"),
    ];
    for (namespace, name, arg) in cases {
        let run = call(&add_env(namespace, name), text(api.conf()));
        let e = run.error();
        assert_eq!(e["code"], 4, "{namespace}/{name}: {e}");
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains(arg) && msg.contains("is not a valid Kubernetes name"),
            "{namespace}/{name}: {msg}"
        );
    }
    assert_eq!(api.requests(), Vec::<String>::new(), "no request for an invalid name");

    let run = call(&add_env("default", "web-0.web"), text(api.conf()));
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        api.requests(),
        ["GET /api/v1/namespaces/default/pods/web-0.web HTTP/1.1"]
    );
}

#[test]
fn a_negative_proxy_uid_from_the_api_fails_closed_before_any_rule() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"sidecar.istio.io/status": "{}"}},
        "spec": {"containers": [{"name": "web"},
            {"name": "istio-proxy", "args": ["proxy", "sidecar"], "securityContext": {"runAsUser": -5}}]}});
    let api = FakeApi::start("uid", pod);
    let run = call(&add_env("default", "web"), text(api.conf()));
    let e = run.error();
    assert_eq!(e["code"], 999);
    assert_eq!(
        e["msg"],
        "pod default/web: istio-proxy container securityContext.runAsUser: invalid value \"-5\": must be between 0 and 2147483647"
    );
}

const EXCLUDED: &str = "kube-system";

/// A valid config for an excluded pod, padded with spaces to `len` bytes.
fn padded_conf(len: usize) -> String {
    let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
        "cni_agent_run_dir": "/nonexistent", "exclude_namespaces": [EXCLUDED]})
    .to_string();
    format!("{conf}{}", " ".repeat(len - conf.len()))
}

#[test]
fn stdin_is_bounded_at_one_mib() {
    // Exactly the bound: accepted as before.
    let run = call(&add_env(EXCLUDED, "coredns"), text(padded_conf(MIB)));
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "{\n    \"cniVersion\": \"1.0.0\"\n}");

    // 256 MiB offered: refused after reading just past the bound.
    let endless = |w: &mut ChildStdin| {
        let chunk = vec![b' '; 64 << 10];
        let mut written = 0;
        while written < 256 * MIB && w.write_all(&chunk).is_ok() {
            written += chunk.len();
        }
        written
    };
    let run = call(&add_env(EXCLUDED, "coredns"), endless);
    let e = run.error();
    assert_eq!(e["code"], 5);
    assert_eq!(e["msg"], "network config on stdin is larger than 1048576 bytes");
    // What the plugin read, plus at most what the pipe buffered.
    assert!(run.stdin_written < 4 * MIB, "{} bytes taken", run.stdin_written);
    assert!(run.max_rss < 64 * MIB, "{} bytes resident", run.max_rss);
}

#[test]
fn prev_results_are_limited_without_building_a_json_tree() {
    let base = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
        "cni_agent_run_dir": "/nonexistent", "exclude_namespaces": [EXCLUDED]});

    // 1025 IPs: refused, naming the list and the limit.
    let mut conf = base.clone();
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "ips": vec![json!({"address": "10.0.0.2/32"}); 1025]});
    let run = call(&add_env(EXCLUDED, "coredns"), text(conf.to_string()));
    let e = run.error();
    assert_eq!(e["code"], 6);
    assert!(e["msg"].as_str().unwrap().contains("more than 1024 ips"), "{e}");

    // 1024 of everything: passed through whole, as before.
    let mut conf = base.clone();
    let full = json!({"cniVersion": "1.0.0",
        "interfaces": vec![json!({"name": "eth0", "sandbox": "/var/run/netns/x"}); 1024],
        "ips": vec![json!({"address": "10.0.0.2/32", "interface": 0}); 1024],
        "routes": vec![json!({"dst": "0.0.0.0/0", "gw": "10.0.0.1"}); 1024],
        "dns": {"nameservers": vec!["10.96.0.10"; 1024]}});
    conf["prevResult"] = full.clone();
    let run = call(&add_env(EXCLUDED, "coredns"), text(conf.to_string()));
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_eq!(serde_json::from_str::<Value>(&run.stdout).unwrap(), full);

    // The costliest shapes that fit under the stdin bound: tiny objects (a
    // JSON tree would spend ~100 bytes on each byte of `{"":0},`) in an
    // unknown key and in the prevResult's own unknown key, and IPs.
    let fill = |piece: &str, conf: &Value| {
        let room = MIB - conf.to_string().len() - 64;
        let n = room / (piece.len() + 1);
        format!("[{}]", vec![piece; n].join(","))
    };
    let tiny = r#"{"":0}"#;
    let shapes = [
        ("unknown key of tiny objects", "\"x\"", tiny),
        (
            "prevResult's unknown key of tiny objects",
            "\"prevResult\":{\"cniVersion\":\"1.0.0\",\"x\"",
            tiny,
        ),
        (
            "prevResult of IPs",
            "\"prevResult\":{\"cniVersion\":\"1.0.0\",\"ips\"",
            r#"{"address":"1.2.3.4/32"}"#,
        ),
    ];
    for (what, key, piece) in shapes {
        let head = base.to_string();
        let closing = if key.contains("prevResult") { "}}" } else { "}" };
        let stdin = format!("{},{key}:{}{closing}", &head[..head.len() - 1], fill(piece, &base));
        assert!(stdin.len() <= MIB, "{what}: {} bytes", stdin.len());
        let run = call(&add_env(EXCLUDED, "coredns"), text(stdin));
        assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
        assert!(run.max_rss < 32 * MIB, "{what}: {} bytes resident", run.max_rss);
        eprintln!("{what}: exit {:?}, max RSS {} KiB", run.code, run.max_rss / 1024);
    }
}
