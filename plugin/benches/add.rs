//! Process-level CNI ADD as the runtime calls it (fork, exec, stdin config,
//! stdout result), against the embedded API server, with two references
//! measured in the same run:
//!
//! * the floor: exec of the plugin, one GET of the pod, one bare
//!   `iptables-nft-restore --noflush` of the same payload;
//! * Istio's sequence: the same exec and GET, then Istio's subprocesses in
//!   the pod netns (`iptables-nft-save`, `iptables-nft-save --version`, the
//!   probe `iptables-nft -t nat -A INPUT -p 255 -j RETURN` and its `-D`,
//!   then the restore).
//!
//! Cases: meshed ADD with iptables-nft (fresh netns), iptables-legacy (the
//! netns already holds a legacy table, so legacy is chosen) and native
//! nftables; a non-meshed pod; an excluded namespace — all with the pod
//! read from the API server (no agent on the node); then meshed and
//! non-meshed again with the node agent's pod cache answering the lookup
//! (the agent's own `PodSocket`, in this process). Each prints p50, p90,
//! p99 and its p50 over the floor's and over Istio's. Then the steps of one
//! meshed ADD, measured one by one in-process: a process that does nothing,
//! exec, GET, the cache lookup, detection, verification, restore.
//!
//! Run: `cargo bench -p istio-cni --bench add` (needs root; build the
//! release binary first). `ADD_BENCH_PODS` sets the pods per case (200);
//! `ADD_BENCH_PLUGIN` names another `istio-cni` binary to measure;
//! `ADD_BENCH_WRAP` runs each plugin process under a profiler, e.g.
//! `strace -ff -tt -T -o /tmp/trace/add` (docs/perf.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use istio_cni::api::node_cache::NodeCache;
use istio_cni::api::{Client, Target};
use istio_cni::capture::{CaptureConfig, NodeEnv};
use istio_cni::cni::add::PodApi;
use istio_cni::iptables::apply::{self, Family, VersionCache, cache};
use istio_cni::iptables::{RestorePayload, render};
use istio_cni::netns::exec::{CommandSpec, Runner};
use istio_cni::netns::run_in_netns;
use istio_cni::pod::PodInfo;
use istio_cni::redirect::Redirect;
use istio_cni_agent::server::pods::PodSocket;
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::node::Netns;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The node the bench's pods are bound to (no such node runs: the pods
/// exist only for the plugin's lookups).
const NODE: &str = "not-a-node";

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn istio_cni() -> PathBuf {
    if let Some(bin) = std::env::var_os("ADD_BENCH_PLUGIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("bench path");
    let target = exe
        .ancestors()
        .find(|p| p.ends_with("target") || p.join("release").is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for profile in ["release", "debug"] {
        let candidate = target.join(profile).join("istio-cni");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("build istio-cni first: cargo build --release -p istio-cni");
}

/// Fresh netns names, never reused within a run.
struct Netnses {
    dir: PathBuf,
    next: usize,
}

impl Netnses {
    /// A fresh netns with an address (what the primary CNI leaves behind).
    fn fresh(&mut self) -> Netns {
        let i = self.next;
        self.next += 1;
        let ns = Netns::create(&self.dir.join(format!("bench-{i}"))).expect("netns");
        let ip = format!("10.{}.{}.{}/8", 100 + i / 62500, (i / 250) % 250, i % 250 + 2);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
            vec!["addr", "add", &ip, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
        ] {
            let ok = ns.command("ip").args(&args).status().is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?}");
        }
        ns
    }
}

fn pod(name: &str, ns: &str, meshed: bool) -> Pod {
    let annotations = if meshed {
        json!({"sidecar.istio.io/status": "{}"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app"}, {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"]}]}}))
    .expect("pod")
}

/// One plugin process: `command` with `conf` on stdin; its wall time.
fn exec(bin: &Path, command: &str, conf: &str, netns: &Path, ns: &str, name: &str) -> Duration {
    let start = Instant::now();
    let mut child = wrapped(bin)
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("c-{name}"))
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
        )
        .env("ISTIO_CNI_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn istio-cni");
    let _ = child.stdin.take().expect("stdin").write_all(conf.as_bytes());
    let out = child.wait_with_output().expect("istio-cni");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{command} {ns}/{name}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    took
}

/// The plugin's command, run under `ADD_BENCH_WRAP` when set (a
/// whitespace-separated command line such as `strace -ff -tt -T -o /tmp/t/add`,
/// for profiling; the times then include the wrapper).
fn wrapped(bin: &Path) -> Command {
    let wrap = std::env::var("ADD_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        None => Command::new(bin),
        Some(first) => {
            let mut cmd = Command::new(first);
            cmd.args(words).arg(bin);
            cmd
        }
    }
}

/// A subprocess in the pod netns (as `ip netns exec` would), stdin optional.
fn in_netns(ns: &Netns, argv: &[&str], stdin: Option<&str>) {
    let mut cmd = ns.command(argv[0]);
    cmd.args(&argv[1..])
        .env("PATH", SYSTEM_PATH)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = stdin {
        let _ = child.stdin.take().expect("stdin").write_all(text.as_bytes());
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{argv:?}: {status}");
}

/// p50, p90, p99 of a sample.
fn percentiles(v: &mut [Duration]) -> [Duration; 3] {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    [at(0.5), at(0.9), at(0.99)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Bench {
    bin: PathBuf,
    cluster: Cluster,
    kubeconfig: PathBuf,
    netns: Netnses,
    pods: usize,
    /// The agent's pod cache, once started (its run dir is the second conf's).
    cache: Option<NodeCache>,
}

impl Bench {
    fn create_pods(&self, prefix: &str, ns: &str, meshed: bool) {
        let api: Api<Pod> = Api::namespaced(self.cluster.client(), ns);
        for i in 0..=self.pods {
            self.cluster
                .block_on(api.create(&PostParams::default(), &pod(&format!("{prefix}-{i}"), ns, meshed)))
                .expect("create pod");
        }
    }

    /// ADD per pod into a fresh netns (`seed` prepares it); pod 0 warms up.
    fn adds(&mut self, prefix: &str, ns: &str, meshed: bool, conf: &str, seed: &dyn Fn(&Netns)) -> Vec<Duration> {
        self.create_pods(prefix, ns, meshed);
        if let Some(cache) = &self.cache
            && conf.contains(&cache.socket().parent().expect("run dir").display().to_string())
        {
            // Every pod in the agent's cache before the first ADD: the case
            // measures hits (a pod not yet seen would go to the API server).
            let last = format!("{prefix}-{}", self.pods);
            let deadline = Instant::now() + Duration::from_secs(30);
            while cache.lookup(ns, &last).is_err() {
                assert!(Instant::now() < deadline, "{ns}/{last} never reached the agent's cache");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut times = Vec::new();
        for i in 0..=self.pods {
            let netns = self.netns.fresh();
            seed(&netns);
            let took = exec(&self.bin, "ADD", conf, netns.path(), ns, &format!("{prefix}-{i}"));
            if i > 0 {
                times.push(took);
            }
            let _ = netns.delete();
        }
        times
    }

    fn client(&self) -> Client {
        Client::new(
            Target::load(&self.kubeconfig).expect("kubeconfig"),
            Duration::from_secs(2),
        )
        .expect("client")
    }

    /// What the plugin does per process to read a pod: load the kubeconfig,
    /// build the client (TLS set up), one GET.
    fn get(&self, name: &str) -> (Pod, Duration) {
        let start = Instant::now();
        let pod = self.client().get_pod("default", name).expect("GET");
        (pod, start.elapsed())
    }

    /// exec + GET + the given subprocesses in a fresh netns.
    fn reference(&mut self, conf: &str, steps: &dyn Fn(&Netns, &str)) -> Vec<Duration> {
        let mut times = Vec::new();
        for i in 0..=self.pods {
            let netns = self.netns.fresh();
            let start = Instant::now();
            exec(&self.bin, "VERSION", conf, netns.path(), "default", "x");
            let (pod, _) = self.get(&format!("meshed-nft-{i}"));
            steps(&netns, &payload(&pod).v4);
            if i > 0 {
                times.push(start.elapsed());
            }
            let _ = netns.delete();
        }
        times
    }
}

fn payload(pod: &Pod) -> RestorePayload {
    let redirect = Redirect::from_pod(&PodInfo::from_pod(pod)).expect("redirect");
    render(&CaptureConfig::new(&redirect, &NodeEnv::default(), false).expect("config"))
}

fn bare_restore(ns: &Netns, payload: &str) {
    in_netns(ns, &["iptables-nft-restore", "--noflush"], Some(payload));
}

fn istio_sequence(ns: &Netns, payload: &str) {
    let probe = |op: &str| ["iptables-nft", "-t", "nat", op, "INPUT", "-p", "255", "-j", "RETURN"].map(str::to_owned);
    in_netns(ns, &["iptables-nft-save"], None);
    in_netns(ns, &["iptables-nft-save", "--version"], None);
    for op in ["-A", "-D"] {
        let argv = probe(op);
        in_netns(ns, &argv.iter().map(String::as_str).collect::<Vec<_>>(), None);
    }
    bare_restore(ns, payload);
}

/// Durations of each step of one meshed ADD's programming, in-process on
/// the netns thread with a warm cache: detection, verification, restore.
fn program_steps(netns: &Path, payload: RestorePayload, cache: VersionCache) -> [Duration; 3] {
    let runner = Runner::new(netns);
    run_in_netns(netns, move || {
        let t0 = Instant::now();
        let (bin, saved) = apply::detect_family(&runner, Family::V4, &cache).expect("detect");
        let t1 = Instant::now();
        let saved = saved.unwrap_or_else(|| {
            runner
                .run_checked(&CommandSpec::new(bin.save_cmd(), Vec::<String>::new()))
                .expect("save")
                .stdout
        });
        let t2 = Instant::now();
        assert!(!saved.contains("ISTIO"), "a fresh netns");
        runner.run_checked(&bin.restore_command(&payload.v4)).expect("restore");
        [t1 - t0, t2 - t1, t2.elapsed()]
    })
    .expect("netns thread")
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the ADD benchmark needs root to create network namespaces");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pods = std::env::var("ADD_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize);
    let cluster = Cluster::create(ClusterSpec::default()).expect("cluster");
    let dir = std::env::temp_dir().join(format!("istio-cni-add-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("istio-cni-kubeconfig");
    let server = cluster.local().expect("the local backend").api();
    server
        .write_kubeconfig(&kubeconfig, &server.admin_token())
        .expect("kubeconfig");
    let mut b = Bench {
        bin: istio_cni(),
        cluster,
        kubeconfig,
        netns: Netnses {
            dir: dir.clone(),
            next: 0,
        },
        pods,
        cache: None,
    };
    let conf_in = |run_dir: &Path, extra: serde_json::Value| {
        let mut v = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
            "cni_agent_run_dir": run_dir, "exclude_namespaces": ["kube-system"], "pod_namespace": "istio-system"});
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v.to_string()
    };
    let conf = conf_in(&dir, json!({}));
    let conf_nft = conf_in(&dir, json!({"native_nftables": true}));
    // A second run dir where the agent's pod cache listens, as on a node
    // whose agent runs: the plugin asks it before the API server.
    let agent_dir = dir.join("agent");
    let pod_socket = b
        .cluster
        .block_on(PodSocket::start(&agent_dir, b.cluster.client(), NODE))
        .expect("the agent's pod cache");
    b.cache = Some(NodeCache::new(pod_socket.path().to_path_buf(), Duration::from_secs(1)));
    let cached = conf_in(&agent_dir, json!({}));
    let cached_nft = conf_in(&agent_dir, json!({"native_nftables": true}));
    let none = |_: &Netns| {};
    let legacy_seed = |ns: &Netns| in_netns(ns, &["iptables-legacy", "-t", "filter", "-L", "-n"], None);

    /// Label, pod name prefix, namespace, meshed, config, netns seed.
    type Case<'a> = (&'a str, &'a str, &'a str, bool, &'a str, &'a dyn Fn(&Netns));
    let table: [Case; 8] = [
        ("meshed, iptables-nft", "meshed-nft", "default", true, &conf, &none),
        (
            "meshed, iptables-legacy",
            "meshed-legacy",
            "default",
            true,
            &conf,
            &legacy_seed,
        ),
        (
            "meshed, native nftables",
            "meshed-native",
            "default",
            true,
            &conf_nft,
            &none,
        ),
        ("non-meshed", "plain", "default", false, &conf, &none),
        ("excluded namespace", "excluded", "kube-system", true, &conf, &none),
        (
            "meshed, iptables-nft, agent cache",
            "cached-nft",
            "default",
            true,
            &cached,
            &none,
        ),
        (
            "meshed, native nftables, agent cache",
            "cached-native",
            "default",
            true,
            &cached_nft,
            &none,
        ),
        (
            "non-meshed, agent cache",
            "cached-plain",
            "default",
            false,
            &cached,
            &none,
        ),
    ];
    let mut cases: Vec<(&str, Vec<Duration>)> = table
        .into_iter()
        .map(|(label, prefix, ns, meshed, conf, seed)| (label, b.adds(prefix, ns, meshed, conf, seed)))
        .collect();
    let mut floor = b.reference(&conf, &bare_restore);
    let mut istio = b.reference(&conf, &istio_sequence);
    let [floor_p50, ..] = percentiles(&mut floor);
    let [istio_p50, ..] = percentiles(&mut istio);
    cases.push(("floor: exec + GET + bare restore", floor));
    cases.push(("Istio's sequence (anchor)", istio));

    println!("process-level ADD, {pods} pods per case ({}):", b.bin.display());
    println!(
        "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "case", "p50", "p90", "p99", "/floor", "/Istio"
    );
    for (label, mut times) in cases {
        let [p50, p90, p99] = percentiles(&mut times);
        println!(
            "  {label:<34} {:>9} {:>9} {:>9} {:>8.2}x {:>8.2}x",
            ms(p50),
            ms(p90),
            ms(p99),
            p50.as_secs_f64() / floor_p50.as_secs_f64(),
            p50.as_secs_f64() / istio_p50.as_secs_f64()
        );
    }

    // The steps of one meshed ADD, each measured `pods` times.
    let cache = VersionCache::at(dir.join(cache::DIR_NAME));
    let (mut trues, mut execs, mut gets, mut warm_gets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut lookups = Vec::new();
    let node_cache = b.cache.clone().expect("the agent's pod cache");
    let (mut detects, mut verifies, mut restores) = (Vec::new(), Vec::new(), Vec::new());
    let client = b.client();
    for i in 1..=pods {
        let netns = b.netns.fresh();
        trues.push(exec(
            Path::new("/bin/true"),
            "VERSION",
            &conf,
            netns.path(),
            "default",
            "x",
        ));
        execs.push(exec(&b.bin, "VERSION", &conf, netns.path(), "default", "x"));
        let (pod, took) = b.get(&format!("meshed-nft-{i}"));
        gets.push(took);
        let start = Instant::now();
        node_cache
            .lookup("default", &format!("cached-nft-{i}"))
            .expect("cached pod");
        lookups.push(start.elapsed());
        let start = Instant::now();
        client.get_pod("default", &format!("meshed-nft-{i}")).expect("GET");
        warm_gets.push(start.elapsed());
        let [d, v, r] = program_steps(netns.path(), payload(&pod), cache.clone());
        detects.push(d);
        verifies.push(v);
        restores.push(r);
        let _ = netns.delete();
    }
    println!("one meshed ADD (iptables-nft, warm cache), step by step:");
    for (label, times) in [
        ("  a process that does nothing", &mut trues),
        ("exec (the plugin, VERSION)", &mut execs),
        ("GET (kubeconfig, TLS, one request)", &mut gets),
        ("  GET on an open connection", &mut warm_gets),
        ("  lookup in the agent's pod cache", &mut lookups),
        ("detection", &mut detects),
        ("verification (pre-restore state)", &mut verifies),
        ("restore (sandboxed)", &mut restores),
    ] {
        let [p50, p90, p99] = percentiles(times);
        println!("  {label:<34} {:>9} {:>9} {:>9}", ms(p50), ms(p90), ms(p99));
    }
    b.cluster.block_on(async { pod_socket.close() });
    let _ = std::fs::remove_dir_all(&dir);
    b.cluster.delete().expect("teardown");
}
