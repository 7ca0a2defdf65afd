//! A forced failure reads as something people can act on: `cni/ptp/chained`
//! with `istio-cni` wrapped by a plugin that flushes the pod's nat table
//! behind it (and keeps flushing, so the agent's repair cannot mend it). The
//! meshed pod's `istio-validation` then fails for good, and the report must
//! say so in one line — in JUnit's `message` and in the HTML — with the
//! rules diff and the validator's log below it, collapsed except the first.
//!
//! `ISTIO_CNI_FAILURE_REPORT=DIR` keeps the HTML report in `DIR` (for a look
//! in a browser: `ci/screenshot-report`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use istio_cni_conformance::progress::{Mode, Progress};
use istio_cni_conformance::report::{html, junit};
use istio_cni_conformance::runner::{self, RunPlan};
use istio_cni_scenarios::catalog;
use istio_cni_scenarios::env::{Env, Target};
use testkit::{Need, Scratch, gate};

/// The real plugin runs; after a successful ADD a background loop (bounded,
/// ending with the netns) flushes and deletes the pod netns's nat chains.
fn write_wrapper(path: &Path, real: &Path) {
    let script = format!(
        r#"#!/bin/sh
REAL='{}'
[ "$CNI_COMMAND" = ADD ] || exec "$REAL" "$@"
out=$("$REAL" "$@")
rc=$?
if [ "$rc" -eq 0 ] && [ -n "$CNI_NETNS" ]; then
  (
    i=0
    while [ "$i" -lt 400 ] && [ -e "$CNI_NETNS" ]; do
      nsenter --net="$CNI_NETNS" sh -c 'iptables-nft -t nat -F; iptables-nft -t nat -X'
      i=$((i + 1))
      sleep 0.1
    done
  ) </dev/null >/dev/null 2>&1 &
fi
printf '%s\n' "$out"
exit "$rc"
"#,
        real.display()
    );
    std::fs::write(path, script).expect("writing the wrapper");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod the wrapper");
}

/// The value of the first `name="..."` attribute after `from` in `xml`, unescaped.
fn attribute(xml: &str, from: &str, name: &str) -> String {
    let at = xml.find(from).unwrap_or_else(|| panic!("no {from} in\n{xml}"));
    let rest = &xml[at..];
    let key = format!("{name}=\"");
    let start = rest.find(&key).unwrap_or_else(|| panic!("no {name} on {from}")) + key.len();
    let end = rest[start..].find('"').expect("a closing quote") + start;
    rest[start..end]
        .replace("&#10;", "\n")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn a_forced_failure_reports_a_reason_people_can_act_on() {
    if !gate("a_forced_failure_reports_a_reason_people_can_act_on", &[Need::Root]) {
        return;
    }
    let mut env = Env::new(Target::Local).expect("the workspace binaries");
    let scratch = Scratch::new("failure-report");
    let real = std::fs::canonicalize(&env.bins.istio_cni).expect("the istio-cni binary");
    let wrapper = scratch.join("istio-cni");
    write_wrapper(&wrapper, &real);
    env.bins.istio_cni = wrapper;
    let scenario = catalog::named("cni/ptp/chained").expect("cni/ptp/chained in the catalog");
    let plan = RunPlan::one_local(scenario, env, Duration::from_secs(300));
    let mut out = Vec::new();
    let results = runner::run(plan, &mut Progress::new(&mut out, Mode::Lines, 1));
    let xml = junit::render(&results);
    let page = html::render(&results, "cni/ptp/chained with a nat-flushing wrapper around istio-cni");
    if let Some(dir) = std::env::var_os("ISTIO_CNI_FAILURE_REPORT") {
        let path = html::write(
            Path::new(&dir),
            &results,
            "cni/ptp/chained with a nat-flushing wrapper around istio-cni",
        )
        .expect("writing the report");
        eprintln!("report: {}", path.display());
    }

    let message = attribute(&xml, "<failure ", "message");
    assert!(
        message.chars().count() <= 200,
        "{} chars: {message}",
        message.chars().count()
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(
        message.starts_with("pod default/hello not Running after 30s: "),
        "what was expected: {message}"
    );
    assert!(
        message.contains("init container istio-validation exited 126"),
        "the validation exit code: {message}"
    );
    assert!(
        message.contains("no ISTIO_OUTPUT chain in the pod netns"),
        "the missing chain: {message}"
    );
    assert!(
        !message.contains("Pod {") && !message.contains("ObjectMeta"),
        "no Debug dump: {message}"
    );

    // The same line in the table and the HTML.
    let table = istio_cni_conformance::report::table::render(&results);
    assert!(table.contains(&message), "{table}");
    let escaped_message = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    assert!(page.contains(&escaped_message), "the HTML shows the reason");

    assert!(
        !page.contains('\u{1b}') && !xml.contains('\u{1b}'),
        "no ANSI escape bytes"
    );
    assert!(!page.contains("\\u{1b}"), "no escaped ANSI sequences either");
    let details = page.matches("<details").count();
    let open = page.matches("<details open").count();
    assert!(details > 3, "{details} details blocks");
    assert_eq!(open, 1, "only the first details block is open");
    let first = page.find("<details").expect("details");
    assert_eq!(page.find("<details open"), Some(first), "the open one is the first");
    // The first block is the rules diff: the chain the pod should have, missing.
    let first_block = &page[first..page[first..].find("</details>").map_or(page.len(), |e| first + e)];
    assert!(
        first_block.contains("rules diff of default/hello: expected vs actual"),
        "{first_block}"
    );
    assert!(
        first_block.contains("<span class=\"del\">-:ISTIO_OUTPUT"),
        "the diff lacks the ISTIO_OUTPUT chain:\n{first_block}"
    );
    assert!(
        page.contains("<summary>log of istio-validation (default/hello, previous)</summary>")
            || page.contains("<summary>log of istio-validation (default/hello, current)</summary>"),
        "the validator's log"
    );
    assert!(page.contains("× "), "events are counted");
    assert!(page.contains("CNI config diff, before the agent vs now (node-0)"));
}
