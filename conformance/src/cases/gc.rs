//! GC (1.1.0): succeeds with the valid attachments under
//! `cni.dev/valid-attachments` (plus the legacy key, as libcni sends) and
//! under the legacy `cni.dev/attachments` alone, and leaves a listed
//! attachment intact (CHECK still passes); refused with code 1 before 1.1.0.

use istio_cni_kind::cni::request::{GC_LEGACY_ATTACHMENTS_KEY, GC_VALID_ATTACHMENTS_KEY, gc_stdin};
use istio_cni_kind::cni::{GcAttachment, RuntimeConf};
use serde_json::Value;

use super::{Case, CaseOutcome, skip_unless_1_1_0, with_note};
use crate::harness::{Harness, NETWORK};
use crate::report::Finding;

/// The GC cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::new("gc/valid-attachments[1.1.0]", |h: &Harness| keeps(h, Keys::Both)),
        Case::new("gc/legacy-attachments[1.1.0]", |h: &Harness| keeps(h, Keys::LegacyOnly)),
        Case::new("gc/refused[1.0.0]", refused),
    ]
}

/// Which attachment keys GC's stdin carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// Both, as libcni sends.
    Both,
    /// Only `cni.dev/attachments` (runtimes before the rename).
    LegacyOnly,
}

fn request(h: &Harness, version: &str, valid: &[GcAttachment], keys: Keys) -> Vec<u8> {
    let stdin = gc_stdin(NETWORK, version, h.plugin_conf(), valid);
    if keys == Keys::Both {
        return stdin;
    }
    let mut doc: Value = serde_json::from_slice(&stdin).unwrap_or(Value::Null);
    if let Some(obj) = doc.as_object_mut() {
        obj.remove(GC_VALID_ATTACHMENTS_KEY);
    }
    doc.to_string().into_bytes()
}

fn keeps(h: &Harness, keys: Keys) -> CaseOutcome {
    if let Some(skip) = skip_unless_1_1_0(h) {
        return Ok(skip);
    }
    let att = h.attach("1.1.0")?;
    let out = att.plugin_add()?.expect_document()?;
    let valid = [GcAttachment {
        container_id: att.rt().container_id.clone(),
        ifname: att.rt().ifname.clone(),
    }];
    let key = match keys {
        Keys::Both => format!("{GC_VALID_ATTACHMENTS_KEY} (and {GC_LEGACY_ATTACHMENTS_KEY})"),
        Keys::LegacyOnly => GC_LEGACY_ATTACHMENTS_KEY.to_owned(),
    };
    h.invoke("GC", &RuntimeConf::default(), &[], &request(h, "1.1.0", &valid, keys))?
        .expect_success()
        .map_err(|e| format!("GC with {key}: {e}"))?;
    h.invoke("CHECK", att.rt(), &[], &h.request("1.1.0", Some(&out)))?
        .expect_success()
        .map_err(|e| format!("CHECK of the attachment GC was told to keep: {e}"))?;
    Ok(with_note(att.note.as_deref(), "the kept attachment still CHECKs"))
}

fn refused(h: &Harness) -> CaseOutcome {
    if let Some(skip) = h.skip_unless_claimed("1.1.0") {
        return Ok(skip);
    }
    h.invoke(
        "GC",
        &RuntimeConf::default(),
        &[],
        &request(h, "1.0.0", &[], Keys::Both),
    )?
    .expect_code(1)?;
    Ok(Finding::pass())
}
