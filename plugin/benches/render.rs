//! Render time: pod manifest → decision → redirect → rules, for the basic
//! injected pod and for a pod with 50 CIDRs and 50 ports in its annotations.
//! The basic pod is the baseline; the report prints the large pod's ratio.

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use istio_cni::capture::{CaptureConfig, NodeEnv};
use istio_cni::pod::{PodInfo, decide, load_pods};
use istio_cni::redirect::Redirect;
use istio_cni::{iptables, nftables};

const BASIC: &str = testkit::fixtures::INJECTED_CLASSIC;

fn large_pod() -> String {
    let cidrs: Vec<String> = (0..50).map(|i| format!("10.{i}.0.0/16")).collect();
    let ports: Vec<String> = (0..50).map(|i| (8000 + i).to_string()).collect();
    let out_ports: Vec<String> = (0..50).map(|i| (9000 + i).to_string()).collect();
    BASIC.replace(
        "    traffic.sidecar.istio.io/includeOutboundIPRanges: '*'\n",
        &format!(
            "    traffic.sidecar.istio.io/includeOutboundIPRanges: '{}'\n    traffic.sidecar.istio.io/excludeOutboundIPRanges: '{}'\n    traffic.sidecar.istio.io/excludeInboundPorts: '{}'\n    traffic.sidecar.istio.io/excludeOutboundPorts: '{}'\n",
            cidrs[..25].join(","),
            cidrs[25..].join(","),
            ports.join(","),
            out_ports.join(","),
        ),
    )
}

fn pod(manifest: &str) -> PodInfo {
    load_pods(manifest).expect("fixture parses").remove(0).pod
}

/// What the plugin does per ADD once it has the pod: decide, validate, render.
fn render_iptables(pod: &PodInfo) -> iptables::RestorePayload {
    assert_eq!(decide(pod), istio_cni::pod::Decision::Redirect);
    let redirect = Redirect::from_pod(pod).expect("valid annotations");
    let cfg = CaptureConfig::new(&redirect, &NodeEnv::default(), false).expect("valid node env");
    iptables::render(&cfg)
}

fn render_nft(pod: &PodInfo) -> String {
    let redirect = Redirect::from_pod(pod).expect("valid annotations");
    let cfg = CaptureConfig::new(&redirect, &NodeEnv::default(), false).expect("valid node env");
    nftables::render(&cfg)
}

fn bench(c: &mut Criterion) {
    let basic = pod(BASIC);
    let large_manifest = large_pod();
    let large = pod(&large_manifest);
    assert!(
        render_iptables(&large).v4.lines().count() > 150,
        "the large pod has many rules"
    );

    let mut g = c.benchmark_group("render");
    g.bench_function("basic pod, iptables", |b| b.iter(|| render_iptables(black_box(&basic))));
    g.bench_function("50 CIDRs + 50 ports, iptables", |b| {
        b.iter(|| render_iptables(black_box(&large)))
    });
    g.bench_function("basic pod, nftables", |b| b.iter(|| render_nft(black_box(&basic))));
    g.bench_function("50 CIDRs + 50 ports, nftables", |b| {
        b.iter(|| render_nft(black_box(&large)))
    });
    g.bench_function("parse manifest, basic pod", |b| b.iter(|| load_pods(black_box(BASIC))));
    g.finish();
}

criterion_group!(benches, bench);

/// Criterion's median estimate (ns) for a benchmark of this run.
fn median_ns(group: &str, name: &str) -> Option<f64> {
    // Criterion keeps the benchmark id as the directory name.
    let target =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let path = format!("{target}/criterion/{group}/{name}/new/estimates.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    println!("\nmedians, and ratios against the basic pod measured in this run:");
    for backend in ["iptables", "nftables"] {
        let base = median_ns("render", &format!("basic pod, {backend}"));
        let large = median_ns("render", &format!("50 CIDRs + 50 ports, {backend}"));
        if let (Some(base), Some(large)) = (base, large) {
            println!(
                "  {backend}: basic pod {:.1} µs, 50 CIDRs + 50 ports {:.1} µs, ratio {:.1}x",
                base / 1e3,
                large / 1e3,
                large / base
            );
        }
    }
}
