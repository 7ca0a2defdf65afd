//! CHECK: succeeds right after ADD (from 0.4.0, with the final result as
//! `prevResult`); refused with code 1 for configs before 0.4.0.

use istio_cni_kind::cni::version::at_least;

use super::{Case, CaseOutcome, with_note};
use crate::harness::Harness;
use crate::report::Finding;

/// `check/after-add[V]` for V ≥ 0.4.0, `check/refused[V]` below.
pub fn cases(versions: &[String]) -> Vec<Case> {
    versions
        .iter()
        .flat_map(|v| {
            let (name, run): (_, fn(&Harness, &str) -> CaseOutcome) = if at_least(v, "0.4.0").unwrap_or(false) {
                ("check/after-add", after_add)
            } else {
                ("check/refused", refused)
            };
            Case::per_version(name, std::slice::from_ref(v), run)
        })
        .collect()
}

fn after_add(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    h.invoke("CHECK", att.rt(), &[], &h.request(version, Some(&out)))?
        .expect_success()?;
    Ok(with_note(att.note.as_deref(), ""))
}

fn refused(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    h.invoke("CHECK", att.rt(), &[], &h.request(version, Some(&out)))?
        .expect_code(1)?;
    Ok(Finding::pass())
}
