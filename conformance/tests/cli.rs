//! The `istio-cni-conformance` binary: help, argument errors, the case
//! list, the report format and the exit status.
//!
//! The runs need root; without it those tests print `SKIP:` and pass (they
//! panic when `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::process::{Command, Output};

use support::{SPEC, Scratch, debian_plugin, gate, write_script};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_istio-cni-conformance"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("running istio-cni-conformance")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every line is a case line except the last, the summary.
fn assert_report_format(stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    let (summary, cases) = lines.split_last().expect("some output");
    for line in cases {
        let ok = ["PASS  ", "FAIL  ", "SKIP  "].iter().any(|p| line.starts_with(p));
        assert!(ok, "not a case line: {line:?}\n{stdout}");
        if !line.starts_with("PASS  ") {
            assert!(line[6..].contains(": "), "FAIL/SKIP lines give a reason: {line:?}");
        }
    }
    let words: Vec<&str> = summary.split(' ').collect();
    assert!(
        matches!(
            words.as_slice(),
            [p, "passed,", f, "failed,", s, "skipped"]
                if [p, f, s].iter().all(|n| n.parse::<usize>().is_ok())
        ),
        "bad summary {summary:?}"
    );
}

#[test]
fn help_explains_how_to_check_istio_cni() {
    let out = run(&["run", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "--plugin <PATH>",
        "--config-extra <JSON>",
        "--pod-namespace <NAMESPACE>",
        "--primary <PRIMARY>",
        "exclude_namespaces",
        "cni_agent_run_dir",
        "--pod-namespace kube-system",
        "N passed, N failed, N skipped",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[test]
fn bad_arguments_exit_2() {
    let out = run(&["run", "--plugin", "/x", "--versions", "0.2.0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no chaining"), "{}", text(&out.stderr));
    let out = run(&["run", "--plugin", "/x", "--config-extra", "[]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("JSON object"));
    let out = run(&["run", "--plugin", "/x", "--only", "no-such-case"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("selects no case"));
    let out = run(&["run", "--suite", "no-such-suite"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
}

#[test]
fn list_prints_the_selected_cases() {
    let out = run(&[
        "run",
        "--plugin",
        "/x",
        "--versions",
        "0.4.0,1.0.0",
        "--only",
        "del/",
        "--list",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "del/twice[0.4.0]\ndel/twice[1.0.0]\ndel/no-netns\ndel/netns-gone\ndel/prev-result-absent\ndel/prev-result-empty\n"
    );
}

#[test]
fn a_passing_run_prints_case_lines_and_exits_0() {
    if !gate("a_passing_run_prints_case_lines_and_exits_0", SPEC) {
        return;
    }
    let plugin = debian_plugin("portmap");
    let out = run(&[
        "run",
        "--suite",
        "cni",
        "--plugin",
        &plugin.to_string_lossy(),
        "--only",
        "version/",
        "--only",
        "status/",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_report_format(&stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("PASS  version/report: supportedVersions [0.1.0,"),
        "{stdout}"
    );
    assert_eq!(lines[1], "PASS  version/empty-stdin");
    assert!(
        lines[2].starts_with("SKIP  status/ready[1.1.0]: portmap does not claim 1.1.0"),
        "{stdout}"
    );
    assert_eq!(lines.last().copied(), Some("2 passed, 0 failed, 2 skipped"));
}

#[test]
fn a_failing_run_prints_fail_lines_and_exits_1() {
    if !gate("a_failing_run_prints_fail_lines_and_exits_1", SPEC) {
        return;
    }
    let scratch = Scratch::new("cli-fail");
    let plugin = scratch.join("noisy");
    write_script(&plugin, "echo starting up\nexit 0");
    let out = run(&["run", "--plugin", &plugin.to_string_lossy(), "--only", "version/"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_report_format(&stdout);
    assert_eq!(
        stdout,
        "FAIL  version/report: VERSION succeeded but stdout is not JSON: expected value at line 1 column 1 (exit 0, stdout \"starting up\")\n\
         FAIL  version/empty-stdin: VERSION succeeded but stdout is not JSON: expected value at line 1 column 1 (exit 0, stdout \"starting up\")\n\
         0 passed, 2 failed, 0 skipped\n"
    );
}

#[test]
fn without_root_setup_fails_with_a_reason() {
    if !gate("without_root_setup_fails_with_a_reason", SPEC) {
        return;
    }
    // Drop to nobody for this one run: the suite explains what it needs.
    let plugin = debian_plugin("portmap");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_istio-cni-conformance"))
        .args(["run", "--plugin", &plugin.to_string_lossy()])
        .output();
    let Ok(out) = out else {
        eprintln!("SKIP: without_root_setup_fails_with_a_reason: setpriv is not available");
        return;
    };
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with("FAIL  setup: the suite creates network namespaces and needs root"),
        "{stdout}"
    );
    assert!(stdout.ends_with("0 passed, 1 failed, 0 skipped\n"), "{stdout}");
}
