//! DEL: idempotent and best-effort — twice in a row, without a netns, after
//! the netns is gone, without or with an empty `prevResult`.

use serde_json::{Value, json};

use super::{Case, CaseOutcome, with_note};
use crate::harness::Harness;
use crate::report::Finding;

/// `del/twice[V]` per version, and the single-version DEL cases.
pub fn cases(versions: &[String]) -> Vec<Case> {
    let mut cases = Case::per_version("del/twice", versions, twice);
    cases.push(Case::at_base("del/no-netns", no_netns));
    cases.push(Case::at_base("del/netns-gone", netns_gone));
    cases.push(Case::new("del/prev-result-absent", |h: &Harness| {
        with_prev(h, PrevResult::Absent)
    }));
    cases.push(Case::new("del/prev-result-empty", |h: &Harness| {
        with_prev(h, PrevResult::Empty)
    }));
    cases
}

fn twice(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    for which in ["first", "second"] {
        att.plugin_del(&out)?
            .expect_success()
            .map_err(|e| format!("{which} DEL: {e}"))?;
    }
    Ok(with_note(att.note.as_deref(), ""))
}

fn no_netns(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    let stdin = h.del_request(version, &out);
    // libcni sends CNI_NETNS empty; some runtimes leave it out.
    let empty = [("CNI_NETNS".to_owned(), Some(String::new()))];
    h.invoke("DEL", att.rt(), &empty, &stdin)?
        .expect_success()
        .map_err(|e| format!("DEL with CNI_NETNS empty: {e}"))?;
    let unset = [("CNI_NETNS".to_owned(), None)];
    h.invoke("DEL", att.rt(), &unset, &stdin)?
        .expect_success()
        .map_err(|e| format!("DEL with CNI_NETNS unset: {e}"))?;
    Ok(with_note(
        att.note.as_deref(),
        "CNI_NETNS empty and unset both accepted",
    ))
}

fn netns_gone(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    att.sandbox.delete_netns().map_err(|e| e.to_string())?;
    if att.sandbox.pod.path().exists() {
        return Err(format!(
            "suite: the sandbox {} still exists after deleting it",
            att.sandbox.pod.path().display()
        ));
    }
    att.plugin_del(&out)?
        .expect_success()
        .map_err(|e| format!("DEL with CNI_NETNS pointing at a deleted netns: {e}"))?;
    Ok(with_note(att.note.as_deref(), ""))
}

/// The `prevResult` a DEL gets.
#[derive(Debug, Clone, Copy)]
enum PrevResult {
    /// No `prevResult` key (libcni without a cached result).
    Absent,
    /// A result with nothing but its `cniVersion`.
    Empty,
}

fn with_prev(h: &Harness, prev: PrevResult) -> CaseOutcome {
    let Some(version) = h.check_version() else {
        return Ok(Finding::skip(
            "the plugin claims no requested version ≥ 0.4.0 (DEL gets prevResult from 0.4.0)",
        ));
    };
    let att = h.attach(&version)?;
    att.plugin_add()?.expect_document()?;
    let empty: Value = json!({ "cniVersion": version });
    let stdin = match prev {
        PrevResult::Absent => h.request(&version, None),
        PrevResult::Empty => h.request(&version, Some(&empty)),
    };
    h.invoke("DEL", att.rt(), &[], &stdin)?.expect_success()?;
    Ok(with_note(att.note.as_deref(), ""))
}
