//! ADD: with the primary's result as `prevResult` the plugin prints it back
//! in the request's version, unchanged; without one (misconfigured as the
//! first plugin) it either prints a bare result or refuses — both allowed,
//! the case records which.

use serde_json::Value;

use super::{Case, CaseOutcome, with_note};
use crate::compare::{ip_version_problems, result_diff};
use crate::harness::Harness;
use crate::invoke::excerpt;
use crate::report::Finding;

/// `add/prev-result[V]` and `add/no-prev-result[V]` for every version.
pub fn cases(versions: &[String]) -> Vec<Case> {
    let mut cases = Case::per_version("add/prev-result", versions, prev_result);
    cases.extend(Case::per_version("add/no-prev-result", versions, no_prev_result));
    cases
}

/// Checks that `out` is `prev` passed through at `version`: same
/// `cniVersion`, same interfaces, ips, routes and dns, and the version's
/// `ips[].version` rule.
pub fn check_pass_through(prev: &Value, out: &Value, version: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    match out.get("cniVersion") {
        Some(Value::String(v)) if v == version => {}
        other => problems.push(format!(
            "cniVersion is {}, expected {version:?}",
            other.map_or_else(|| "absent".to_owned(), Value::to_string)
        )),
    }
    problems.extend(result_diff(prev, out));
    problems.extend(ip_version_problems(out, version));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("the result is not the prevResult: {}", problems.join("; ")))
    }
}

fn prev_result(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    check_pass_through(&att.prev, &out, version)?;
    Ok(with_note(att.note.as_deref(), ""))
}

fn no_prev_result(h: &Harness, version: &str) -> CaseOutcome {
    let sandbox = h.sandbox()?;
    let inv = h.invoke("ADD", &sandbox.rt, &[], &h.request(version, None))?;
    let finding = if inv.succeeded() {
        let out = inv.expect_document()?;
        match out.get("cniVersion").and_then(Value::as_str) {
            Some(v) if v == version => {}
            other => {
                return Err(format!(
                    "ADD without prevResult printed a result with cniVersion {other:?}, expected {version:?}"
                ));
            }
        }
        // A runtime DELs what it ADDed; the result is the prevResult now.
        let _ = h.invoke("DEL", &sandbox.rt, &[], &h.del_request(version, &out))?;
        Finding::pass_with(format!("succeeded with the result {}", excerpt(&out.to_string())))
    } else {
        let doc = inv.error_doc()?;
        // A runtime DELs after a failed ADD too.
        let _ = h.invoke("DEL", &sandbox.rt, &[], &h.request(version, None))?;
        Finding::pass_with(format!("refused with code {}: {}", doc.code, excerpt(&doc.text())))
    };
    Ok(finding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pass_through_checks_version_and_content() {
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}], "dns": {}});
        assert!(
            check_pass_through(
                &prev,
                &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}),
                "1.0.0"
            )
            .is_ok()
        );
        let err = check_pass_through(&prev, &json!({"cniVersion": "0.4.0"}), "1.0.0").unwrap_err();
        assert!(err.contains("cniVersion is \"0.4.0\""), "{err}");
        assert!(err.contains("ips: expected"), "{err}");
    }
}
