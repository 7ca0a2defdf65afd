//! The suite against deliberately broken plugins (shell scripts, most of
//! them wrapping Debian's `portmap`): each violation must turn into a FAIL
//! of the case that covers it, with a reason that says what is wrong, while
//! unrelated cases still pass. This is what keeps the suite from passing
//! everything.
//!
//! Needs root; without it the tests print `SKIP:` and pass (they panic when
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::path::Path;

use istio_cni_conformance::{CaseResult, Judged, SuiteOptions, SuiteReport, Verdict, run_suite};
use support::{SPEC, Scratch, case, debian_plugin, write_script};

/// Runs the cases matching `only` against the script `body` installed as
/// `<scratch>/<name>` (the calling test has passed its gate).
fn run_mutant(name: &str, body: &str, only: &[&str]) -> SuiteReport {
    let scratch = Scratch::new(name);
    let path = scratch.join(name);
    write_script(&path, body);
    let mut opts = SuiteOptions::new(&path);
    opts.only = only.iter().map(|s| (*s).to_owned()).collect();
    opts.parallel = 4;
    let report = run_suite(&opts);
    println!("{name}:\n{report}");
    report
}

fn fails_with<'r>(report: &'r SuiteReport, name: &str, needle: &str) -> &'r CaseResult {
    let c = case(report, name);
    match &c.outcome {
        Verdict::Fail(why) if why.contains(needle) => c,
        _ => panic!("expected {name} to fail with {needle:?}, got: {c}\n{report}"),
    }
}

fn portmap() -> String {
    let p = debian_plugin("portmap");
    format!("'{}'", Path::new(&p).display())
}

/// A script that runs `portmap`, hands its stdout (`$out`) to `emit` and
/// exits with portmap's status.
fn portmap_wrapped(emit: &str) -> String {
    format!("out=$({})\nrc=$?\n{emit}\nexit $rc", portmap())
}

#[test]
fn logs_on_stdout_are_caught() {
    testkit::gate_or_return!(SPEC);
    let body = portmap_wrapped("printf '%s\\n' \"$out\"\necho \"chatty: $CNI_COMMAND done\"");
    let report = run_mutant(
        "chatty",
        &body,
        &[
            "version/report",
            "add/prev-result[1.0.0]",
            "env/missing-all[ADD]",
            "stdout/",
        ],
    );
    fails_with(&report, "version/report", "data after the JSON document");
    fails_with(&report, "add/prev-result[1.0.0]", "data after the JSON document");
    fails_with(&report, "env/missing-all[ADD]", "data after the JSON document");
    // A successful DEL is judged on its exit status; its stray output is
    // the audit's business (here the cleanup DEL of add/prev-result).
    fails_with(
        &report,
        "stdout/single-json-document",
        "[add/prev-result[1.0.0]] DEL (success): stdout is not JSON",
    );
}

#[test]
fn a_plugin_that_drops_the_prev_result_and_ignores_errors_is_caught() {
    testkit::gate_or_return!(SPEC);
    let body = r#"in=$(cat)
case "$CNI_COMMAND" in
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}' ;;
  ADD) v=$(printf '%s' "$in" | sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p')
       printf '{"cniVersion":"%s"}\n' "$v" ;;
esac
exit 0"#;
    let report = run_mutant(
        "forgetful",
        body,
        &[
            "version/",
            "add/prev-result[0.4.0]",
            "env/missing-CNI_NETNS[ADD]",
            "config/garbage-stdin[ADD]",
            "check/refused[0.3.1]",
            "concurrency/",
            "chain/",
            "del/twice[0.4.0]",
        ],
    );
    assert!(case(&report, "version/report").passed(), "{report}");
    assert!(case(&report, "del/twice[0.4.0]").passed(), "{report}");
    fails_with(
        &report,
        "add/prev-result[0.4.0]",
        "the result is not the prevResult: interfaces: expected",
    );
    fails_with(
        &report,
        "env/missing-CNI_NETNS[ADD]",
        "ADD succeeded, an error was expected",
    );
    fails_with(
        &report,
        "config/garbage-stdin[ADD]",
        "ADD succeeded, an error was expected",
    );
    fails_with(
        &report,
        "check/refused[0.3.1]",
        "CHECK succeeded, an error was expected",
    );
    fails_with(&report, "concurrency/parallel-add", "4 of 4 parallel calls failed");
    fails_with(
        &report,
        "chain/runner",
        "the chain's final result differs from the primary's",
    );
}

#[test]
fn del_that_needs_the_netns_is_caught() {
    testkit::gate_or_return!(SPEC);
    let body = format!(
        "if [ \"$CNI_COMMAND\" = DEL ] && [ ! -e \"$CNI_NETNS\" ]; then\n  \
         echo '{{\"code\":11,\"msg\":\"netns is gone\"}}'\n  exit 1\nfi\nexec {}",
        portmap()
    );
    let report = run_mutant("strict-del", &body, &["del/"]);
    fails_with(&report, "del/netns-gone", "code 11: netns is gone");
    fails_with(&report, "del/no-netns", "DEL with CNI_NETNS empty: DEL failed: code 11");
    for ok in ["del/twice[1.0.0]", "del/prev-result-absent", "del/prev-result-empty"] {
        assert!(case(&report, ok).passed(), "{ok}:\n{report}");
    }
}

#[test]
fn errors_on_stderr_only_are_caught() {
    testkit::gate_or_return!(SPEC);
    let body = portmap_wrapped("if [ $rc -eq 0 ]; then printf '%s\\n' \"$out\"; else printf '%s\\n' \"$out\" >&2; fi");
    let report = run_mutant(
        "stderr-errors",
        &body,
        &["env/missing-all[ADD]", "config/", "add/prev-result[1.0.0]"],
    );
    fails_with(&report, "env/missing-all[ADD]", "without an error document on stdout");
    fails_with(
        &report,
        "config/missing-name[ADD]",
        "without an error document on stdout",
    );
    assert!(case(&report, "add/prev-result[1.0.0]").passed(), "{report}");
}
