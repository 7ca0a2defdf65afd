//! Programming time into a fresh pod netns: the whole `program()` (IPv6
//! detection, binary detection, state verification, sandboxed restore,
//! routes) against the floor of a bare `iptables-nft-restore --noflush` (or
//! `nft -f -`) of the same payload in a fresh netns. Each iteration gets its
//! own netns; creating and deleting it is not measured.
//!
//! A third variant runs `program()` with the mount sandbox (docs/plugin.md#exec-sandbox) switched off,
//! to show what the sandbox costs.
//!
//! Needs root; prints `SKIP:` and measures nothing otherwise. At the end it
//! prints the medians and the program/baseline ratios.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use istio_cni::capture::{CaptureConfig, NodeEnv};
use istio_cni::netns::run_in_netns;
use istio_cni::pod::PodInfo;
use istio_cni::program::{Backend, ProgramOptions, program_with};
use istio_cni::redirect::Redirect;
use istio_cni::{iptables, nftables};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SAMPLES: Mutex<Vec<(&'static str, Duration)>> = Mutex::new(Vec::new());

/// A throw-away named netns with one IPv4 address; deleted on drop.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new() -> Self {
        let name = format!(
            "icnibench{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
            vec!["-n", &name, "addr", "add", "10.250.0.2/24", "dev", "d0"],
        ] {
            let ok = Command::new("ip").args(&args).status().is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?} failed");
        }
        let path = Path::new("/run/netns").join(&name);
        Self { name, path }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn redirect() -> Redirect {
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app", "namespace": "default", "annotations": {"sidecar.istio.io/status": "{}"}},
        "spec": {"containers": [{"name": "app"}, {"name": "istio-proxy", "args": ["proxy", "sidecar"]}]}
    }))
    .expect("pod JSON");
    Redirect::from_pod(&PodInfo::from_pod(&pod)).expect("valid redirect")
}

/// Feeds `input` to `cmd args…` inside the netns, unsandboxed: the floor.
fn bare(netns: &Path, cmd: &'static str, args: &'static [&'static str], input: String) {
    let status = run_in_netns(netns, move || {
        let mut child = Command::new(cmd)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        child.wait().expect("wait")
    })
    .expect("enter netns");
    assert!(status.success(), "{cmd} failed");
}

/// Benchmarks `f` under `label` (also the name of its samples in the report).
fn in_fresh_netns(g: &mut BenchmarkGroup<'_, WallTime>, label: &'static str, f: impl Fn(&Path) + Copy) {
    g.bench_function(label, |b| b.iter_custom(measure(label, f)));
}

/// A benchmark body: programs the netns with `program_with`.
fn programming<'a>(redirect: &'a Redirect, backend: Backend, opts: &'a ProgramOptions) -> impl Fn(&Path) + Copy + 'a {
    move |ns| {
        program_with(ns, redirect, &NodeEnv::default(), backend, opts).expect("program");
    }
}

/// Times `f` once per iteration, each in a fresh netns, and records samples.
fn measure(label: &'static str, f: impl Fn(&Path)) -> impl FnMut(u64) -> Duration {
    move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let ns = Netns::new();
            let start = Instant::now();
            f(&ns.path);
            let took = start.elapsed();
            total += took;
            SAMPLES.lock().expect("samples").push((label, took));
        }
        total
    }
}

fn bench(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: program benchmark needs root to create network namespaces");
        return;
    }
    let redirect = redirect();
    let cfg = CaptureConfig::new(&redirect, &NodeEnv::default(), false).expect("config");
    let payload = iptables::render(&cfg).v4;
    let transaction = nftables::render(&cfg);

    let mut g = c.benchmark_group("program");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let defaults = ProgramOptions::default();
    let no_sandbox = ProgramOptions {
        sandbox: false,
        ..Default::default()
    };
    in_fresh_netns(
        &mut g,
        "program(), iptables",
        programming(&redirect, Backend::Iptables, &defaults),
    );
    in_fresh_netns(
        &mut g,
        "program(), iptables, no sandbox",
        programming(&redirect, Backend::Iptables, &no_sandbox),
    );
    in_fresh_netns(&mut g, "bare iptables-nft-restore", |ns| {
        bare(ns, "iptables-nft-restore", &["--noflush"], payload.clone())
    });
    in_fresh_netns(
        &mut g,
        "program(), nftables",
        programming(&redirect, Backend::Nftables, &defaults),
    );
    in_fresh_netns(&mut g, "bare nft -f", |ns| {
        bare(ns, "nft", &["-f", "-"], transaction.clone())
    });
    g.finish();
    report();
}

fn median(label: &str) -> Option<Duration> {
    let mut v: Vec<Duration> = SAMPLES
        .lock()
        .expect("samples")
        .iter()
        .filter(|(l, _)| *l == label)
        .map(|(_, d)| *d)
        .collect();
    v.sort();
    v.get(v.len() / 2).copied()
}

fn report() {
    println!("\nmedians over all samples (warm-up included):");
    for (prog, base) in [
        ("program(), iptables", "bare iptables-nft-restore"),
        ("program(), iptables, no sandbox", "bare iptables-nft-restore"),
        ("program(), nftables", "bare nft -f"),
    ] {
        if let (Some(p), Some(b)) = (median(prog), median(base)) {
            println!(
                "  {prog}: {p:.2?}   {base}: {b:.2?}   ratio {:.1}x",
                p.as_secs_f64() / b.as_secs_f64()
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
