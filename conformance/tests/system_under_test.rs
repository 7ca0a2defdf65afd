//! The system under test on the command line: `--chart DIR [--values F]
//! [--set K=V]`, `--manifests FILE`, `--image REF=DIR|EXECUTABLE`,
//! `--agent-image REF`. Unusable arguments exit 2 naming the input, before
//! anything runs; a chart the runner did not render itself, its image given
//! to the embedded cluster under a name the runner never chose, runs a
//! scenario end to end (root).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{Need, Scratch, gate};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chart");
/// The image the fixture chart's DaemonSet names: no entry of the runner's
/// own image table matches it (not by reference, not by short name).
const CHART_IMAGE: &str = "registry.test/acme/cni-node:v9";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_istio-cni-conformance"))
        .arg("run")
        .args(args)
        .output()
        .expect("running istio-cni-conformance")
}

fn usage_error(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?} must exit 2: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{args:?} ran something: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn unusable_systems_under_test_exit_2_naming_the_input() {
    let scratch = Scratch::new("sut-args");
    let missing = scratch.join("no-such-chart");
    let err = usage_error(&["--no-setup", "--chart", missing.to_str().unwrap()]);
    assert!(
        err.contains("--chart") && err.contains("no-such-chart") && err.contains("Chart.yaml"),
        "{err}"
    );

    let err = usage_error(&["--no-setup", "--image", "registry.test/acme/cni-node:v9"]);
    assert!(
        err.contains("registry.test/acme/cni-node:v9") && err.contains("REF=DIR"),
        "{err}"
    );

    let err = usage_error(&["--no-setup", "--image", "x=/no/such/dir"]);
    assert!(err.contains("/no/such/dir"), "{err}");

    let manifests = scratch.join("agent.yaml");
    std::fs::write(&manifests, "kind: ServiceAccount\nmetadata: {name: a}\n").unwrap();
    let err = usage_error(&[
        "--no-setup",
        "--chart",
        CHART,
        "--manifests",
        manifests.to_str().unwrap(),
    ]);
    assert!(err.contains("--chart and --manifests"), "{err}");
    let err = usage_error(&["--no-setup", "--manifests", manifests.to_str().unwrap()]);
    assert!(err.contains("agent.yaml: no DaemonSet"), "{err}");

    let err = usage_error(&["--no-setup", "--set", "chained=false"]);
    assert!(err.contains("--values and --set are values of --chart"), "{err}");
    let err = usage_error(&["--no-setup", "--chart", CHART, "--set", "chained"]);
    assert!(err.contains("--set \"chained\"") && err.contains("KEY=VALUE"), "{err}");
    let err = usage_error(&["--no-setup", "--chart", CHART, "--agent-image", "x/y:1"]);
    assert!(err.contains("--agent-image"), "{err}");
    let err = usage_error(&[
        "--no-setup",
        "--cluster",
        "existing",
        "--kubeconfig",
        "/k",
        "--image",
        &format!("a={}", scratch.path().display()),
    ]);
    assert!(err.contains("--image adds to the embedded cluster's images"), "{err}");
}

/// The agent image as `agent/Dockerfile` lays it out, in `dir`.
fn agent_image(dir: &Path) -> PathBuf {
    let bin = |name: &str| testkit::workspace_bin(name, name);
    let image = dir.join("agent-image");
    istio_cni_kind::kubelet::ImageTable::new()
        .with_agent_dir(&image, &bin("istio-cni-agent"), &bin("istio-cni"))
        .expect("laying out the agent image");
    image
}

#[test]
fn a_chart_with_an_image_the_runner_did_not_choose_runs_a_scenario() {
    if !gate(
        "a_chart_with_an_image_the_runner_did_not_choose_runs_a_scenario",
        &[Need::Root, Need::CniPlugins, Need::Tool("helm")],
    ) {
        return;
    }
    let scratch = Scratch::new("sut-chart");
    let image = agent_image(scratch.path());
    let entry = format!("{CHART_IMAGE}={}", image.display());
    let out = chart_scenario(&["--image", &entry]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("1 passed, 0 failed, 0 skipped"), "{stdout}");

    // Without the entry nothing runs the chart's image: the table entry is
    // what ran the agent.
    let out = chart_scenario(&["--scenario-timeout", "40"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

/// `cni/ptp/chained` with the fixture chart as the system under test, and
/// `more` arguments.
fn chart_scenario(more: &[&str]) -> Output {
    let args = [
        "--no-setup",
        "--suite",
        "scenarios",
        "--filter",
        "cni/ptp/chained",
        "--chart",
        CHART,
    ];
    run(&[&args[..], more].concat())
}
