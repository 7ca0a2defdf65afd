//! The runner: `list`, selection across suites, the summary line and exit
//! status, argument errors, JUnit and HTML outputs of a real (cheap) run.
//! Runs that execute something need root (`privileged`); without it they
//! print `SKIP:` and pass (they panic when `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::process::{Command, Output};

use testkit::{Need, Scratch, gate};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_istio-cni-conformance"))
        .args(args)
        .output()
        .expect("running istio-cni-conformance")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or_default()
}

#[test]
fn list_prints_names_and_summaries_across_suites() {
    let out = run(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default())
        .collect();
    for line in stdout.lines() {
        let (name, summary) = line.split_once('\t').unwrap_or_else(|| panic!("no tab: {line:?}"));
        assert!(!name.is_empty() && !summary.is_empty(), "{line:?}");
    }
    assert_eq!(names[0], "spec/version/report", "spec cases first");
    assert!(names.contains(&"spec/stdout/single-json-document"));
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "names are unique");
    let scenarios = names.iter().filter(|n| !n.starts_with("spec/")).count();
    assert_eq!(
        scenarios,
        istio_cni_scenarios::catalog::all().len(),
        "every catalog scenario is listed"
    );

    let out = run(&["list", "--suite", "cni", "--filter", "del/twice"]);
    assert_eq!(
        text(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "spec/del/twice[0.3.0]",
            "spec/del/twice[0.3.1]",
            "spec/del/twice[0.4.0]",
            "spec/del/twice[1.0.0]",
            "spec/del/twice[1.1.0]"
        ]
    );
    let out = run(&["list", "--suite", "install"]);
    assert!(
        text(&out.stdout)
            .lines()
            .all(|l| l.starts_with("platform/") || l.contains("install")),
        "{}",
        text(&out.stdout)
    );
}

/// A typo in a CI gate's filter must not run nothing and pass.
#[test]
fn a_filter_that_selects_nothing_exits_2_naming_the_closest_names() {
    for suite in ["scenarios", "all", "install"] {
        let out = run(&["run", "--suite", suite, "--filter", "nomatch"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{suite}: {}{stderr}", text(&out.stdout));
        assert_eq!(text(&out.stdout), "", "{suite}: nothing ran");
        assert!(stderr.contains(r#"--filter "nomatch" selects nothing"#), "{stderr}");
        assert!(stderr.contains(&format!("suite {suite} on cluster local")), "{stderr}");
    }
    let out = run(&[
        "run",
        "--suite",
        "scenarios",
        "--filter",
        "race/",
        "--filter",
        "race/repairPod5",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "one pattern of several: {stderr}");
    assert!(
        stderr.contains(r#"--filter "race/repairPod5" selects nothing"#) && stderr.contains("race/repairPods"),
        "{stderr}"
    );
    // A scenario of another cluster is not there to select on this one.
    let out = run(&["run", "--suite", "scenarios", "--filter", "cni/calico/chained"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&["list", "--filter", "cni/ptp/chianed"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("closest names: cni/ptp/chained"), "{stderr}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn bad_runner_arguments_exit_2() {
    for (args, needle) in [
        (&["run", "--cluster", "existing"][..], "--kubeconfig"),
        (&["run", "--jobs", "0"][..], "at least 1"),
        (&["run", "--cni", "calico"][..], "--cluster kind"),
        (
            &["run", "--cluster", "kind", "--cni", "weave"][..],
            "unknown primary CNI",
        ),
        (&["run", "--suite", "everything"][..], "everything"),
        (&["list", "--suite", "everything"][..], "everything"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn kind_without_its_tools_fails_fast_with_the_backends_message() {
    // An empty PATH: docker and kind cannot be found.
    let scratch = Scratch::new("runner-kind");
    let out = Command::new(env!("CARGO_BIN_EXE_istio-cni-conformance"))
        .args(["run", "--suite", "scenarios", "--cluster", "kind", "--filter", "race/"])
        .env("PATH", scratch.path())
        .output()
        .expect("running istio-cni-conformance");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the kind backend needs docker, kind, kubectl on PATH"),
        "{stderr}"
    );
}

#[test]
fn the_spec_suite_keeps_its_lines_under_the_runner() {
    if !gate("the_spec_suite_keeps_its_lines_under_the_runner", &[Need::Root]) {
        return;
    }
    // The spec cases through --suite all, selected by --filter, with outputs.
    let scratch = Scratch::new("runner-spec");
    let junit = scratch.join("out/junit.xml");
    let report = scratch.join("report");
    let out = run(&[
        "run",
        "--suite",
        "all",
        "--filter",
        "spec/version/",
        "--jobs",
        "2",
        "--junit",
        &junit.to_string_lossy(),
        "--report",
        &report.to_string_lossy(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(last_line(&stdout), "2 passed, 0 failed, 0 skipped", "{stdout}");
    assert!(
        stdout.contains("PASS  spec/version/report ("),
        "one line per item off a terminal: {stdout}"
    );
    assert!(stdout.contains("\nNAME "), "the results table: {stdout}");
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    assert!(
        xml.contains("<testsuite name=\"spec\" tests=\"2\" failures=\"0\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase name=\"spec/version/empty-stdin\" classname=\"spec\""),
        "{xml}"
    );
    let html = std::fs::read_to_string(report.join("index.html")).expect("the HTML report");
    assert!(html.contains("spec/version/report") && html.contains("2 passed, 0 failed, 0 skipped"));

    // The historical form: case lines only, bare names.
    let out = run(&["run", "--suite", "cni", "--only", "version/"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("PASS  version/report: supportedVersions"),
        "{stdout}"
    );
    assert_eq!(
        lines[1..],
        ["PASS  version/empty-stdin", "2 passed, 0 failed, 0 skipped"]
    );
}

#[test]
fn a_cheap_scenario_runs_on_the_embedded_cluster() {
    if !gate("a_cheap_scenario_runs_on_the_embedded_cluster", &[Need::Root]) {
        return;
    }
    // Whatever the catalog has that is cheapest: a rule snapshot if there is one.
    let Some(name) = istio_cni_scenarios::catalog::all()
        .into_iter()
        .map(|s| s.name)
        .find(|n| n.starts_with("snapshot/"))
    else {
        eprintln!("SKIP: a_cheap_scenario_runs_on_the_embedded_cluster: no snapshot scenario in the catalog yet");
        return;
    };
    let out = run(&["run", "--suite", "scenarios", "--filter", &name]);
    let stdout = text(&out.stdout);
    let summary = last_line(&stdout);
    assert!(
        summary.ends_with(" passed, 0 failed, 0 skipped") || summary.ends_with(" passed, 0 failed, 1 skipped"),
        "{name}: {stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains(&format!("  {name} (")), "{stdout}");
}
