//! The agent's footprint and reaction time, measured on the release binary:
//!
//! - idle RSS after the install (anchor: Istio's chart requests 100 Mi);
//! - reconvergence after a primary CNI config rewrite (the entry back in
//!   the primary's file), quiet — the baseline — and during a 1,000-event
//!   storm of other files in the conf dir, median and p99, with the ratio;
//! - CPU during the storm (user + system over wall time).
//!
//! ```sh
//! cargo bench -p istio-cni-agent --bench agent     # AGENT_BENCH_REWRITES=N (default 60)
//! ```
//! No privileges needed. Nothing here asserts a time; figures are printed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Agent, NodeDirs, has_istio_entry, wait_for};

const PRIMARY: &str = r#"{
  "cniVersion": "0.3.1",
  "name": "kindnet",
  "plugins": [
    { "type": "ptp", "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.244.0.0/24" }]] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
"#;

const STORM_EVENTS: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Rewrites the primary in place and times the entry coming back.
fn rewrite_and_wait(primary: &std::path::Path) -> Option<Duration> {
    std::fs::write(primary, PRIMARY).ok()?;
    let start = Instant::now();
    wait_for(Duration::from_secs(10), || has_istio_entry(primary))?;
    Some(start.elapsed())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rewrites: usize = std::env::var("AGENT_BENCH_REWRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 5 } else { 60 });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "agent bench: {rewrites} rewrites per case, load {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    let dirs = NodeDirs::new("bench");
    let primary = dirs.conf_dir.join("10-kindnet.conflist");
    std::fs::write(&primary, PRIMARY).expect("writing the primary");
    let mut agent = Agent::start(&dirs.env());
    agent.wait_ready(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(if quick { 0 } else { 2 }));
    let pid = agent.child.id();
    let (rss, hwm) = rss_kib(pid);
    println!(
        "idle RSS after install: {:.1} MiB (peak {:.1} MiB) = {:.1}% of the chart's 100 Mi request",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );

    // Quiet: one rewrite at a time, spaced past the throttle's interval.
    let mut quiet = Vec::new();
    for _ in 0..rewrites {
        if let Some(t) = rewrite_and_wait(&primary) {
            quiet.push(t);
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    quiet.sort();

    // Storm: another writer fires 1,000 events at the conf dir while the
    // primary is rewritten and timed, as in the quiet case.
    let storming = Arc::new(AtomicBool::new(true));
    let storm_dir = dirs.conf_dir.clone();
    let flag = storming.clone();
    let cpu_before = agent.cpu_time();
    let storm_start = Instant::now();
    let storm = std::thread::spawn(move || {
        for i in 0..STORM_EVENTS {
            let _ = std::fs::write(storm_dir.join(format!("storm-{}.json", i % 10)), format!("{i}"));
            // Spread over about a second, so rewrites land inside it.
            std::thread::sleep(Duration::from_micros(1000));
        }
        flag.store(false, Ordering::SeqCst);
    });
    let mut stormy = Vec::new();
    while storming.load(Ordering::SeqCst) {
        if let Some(t) = rewrite_and_wait(&primary) {
            stormy.push(t);
        }
    }
    let _ = storm.join();
    let wall = storm_start.elapsed();
    let cpu = agent.cpu_time().saturating_sub(cpu_before);
    stormy.sort();

    println!("reconvergence after a primary rewrite (entry back in the file):");
    println!("  case                              n       p50       p99   p50/quiet");
    for (name, v) in [("quiet (baseline)", &quiet), ("during a 1,000-event storm", &stormy)] {
        println!(
            "  {name:<28} {:>4} {:>7.2} ms {:>7.2} ms {:>10.2}x",
            v.len(),
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(percentile(v, 0.5)) / ms(percentile(&quiet, 0.5)).max(f64::EPSILON)
        );
    }
    println!(
        "CPU during the storm: {:.0} ms over {:.0} ms wall = {:.1}% of one core",
        ms(cpu),
        ms(wall),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON)
    );
    let (rss, hwm) = rss_kib(pid);
    println!(
        "RSS after the storm: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = agent.terminate();
}
