//! Stdout discipline: libcni parses the plugin's stdout, so an ADD result
//! and every error must be exactly one JSON object, and other successes
//! nothing or one JSON object — no log lines. The case makes an ADD, a DEL
//! and an error of its own, then audits every invocation of the run.

use super::{Case, CaseOutcome};
use crate::harness::Harness;
use crate::report::Finding;

/// How many offending invocations a failure lists.
const SHOWN: usize = 5;

/// The stdout case (run last).
pub fn cases() -> Vec<Case> {
    vec![Case::new("stdout/single-json-document", single_json_document)]
}

fn single_json_document(h: &Harness) -> CaseOutcome {
    if let Some(version) = h.base_version() {
        let att = h.attach(&version)?;
        if let Ok(out) = att.plugin_add()?.expect_document() {
            att.plugin_del(&out)?;
        }
        h.invoke("ADD", att.rt(), &[], b"{ not JSON")?;
    }
    let all = h.invocations();
    let violations: Vec<String> = all
        .iter()
        .filter_map(|r| r.invocation.stdout_violation().map(|v| format!("[{}] {v}", r.case)))
        .collect();
    if violations.is_empty() {
        return Ok(Finding::pass_with(format!("{} invocations audited", all.len())));
    }
    let shown: Vec<&str> = violations.iter().take(SHOWN).map(String::as_str).collect();
    Err(format!(
        "{} of {} invocations broke the stdout discipline: {}{}",
        violations.len(),
        all.len(),
        shown.join("; "),
        if violations.len() > SHOWN { "; ..." } else { "" }
    ))
}
