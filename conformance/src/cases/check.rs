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
        .map(|v| {
            let version = v.clone();
            if at_least(v, "0.4.0").unwrap_or(false) {
                Case::new(format!("check/after-add[{v}]"), move |h: &Harness| {
                    after_add(h, &version)
                })
            } else {
                Case::new(format!("check/refused[{v}]"), move |h: &Harness| refused(h, &version))
            }
        })
        .collect()
}

fn after_add(h: &Harness, version: &str) -> CaseOutcome {
    if let Some(skip) = h.skip_unless_claimed(version) {
        return Ok(skip);
    }
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    h.invoke("CHECK", att.rt(), &[], &h.request(version, Some(&out)))?
        .expect_success()?;
    Ok(with_note(att.note.as_deref(), ""))
}

fn refused(h: &Harness, version: &str) -> CaseOutcome {
    if let Some(skip) = h.skip_unless_claimed(version) {
        return Ok(skip);
    }
    let att = h.attach(version)?;
    let out = att.plugin_add()?.expect_document()?;
    h.invoke("CHECK", att.rt(), &[], &h.request(version, Some(&out)))?
        .expect_code(1)?;
    Ok(Finding::pass())
}
