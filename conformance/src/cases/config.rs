//! Bad stdin: not JSON (code 6), no network `name` (code 7), a `cniVersion`
//! the plugin does not support (code 1).

use serde_json::Value;

use super::{Case, CaseOutcome};
use crate::harness::Harness;
use crate::report::Finding;

/// A `cniVersion` no plugin supports.
pub const UNSUPPORTED_VERSION: &str = "9.9.9";

/// The configuration cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::new("config/garbage-stdin[ADD]", |h: &Harness| garbage(h, "ADD")),
        Case::new("config/garbage-stdin[DEL]", |h: &Harness| garbage(h, "DEL")),
        Case::new("config/missing-name[ADD]", missing_name),
        Case::new("config/unsupported-version[ADD]", unsupported_version),
    ]
}

fn garbage(h: &Harness, command: &str) -> CaseOutcome {
    let sandbox = h.sandbox()?;
    let inv = h.invoke(command, &sandbox.rt, &[], b"this is { not JSON")?;
    inv.expect_code(6)?;
    Ok(Finding::pass())
}

/// The plugin's request at `version` with `edit` applied to the JSON.
fn edited_request(h: &Harness, version: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut request: Value = serde_json::from_slice(&h.request(version, None)).unwrap_or(Value::Null);
    if let Some(obj) = request.as_object_mut() {
        edit(obj);
    }
    request.to_string().into_bytes()
}

fn missing_name(h: &Harness) -> CaseOutcome {
    let Some(version) = h.base_version() else {
        return Ok(Finding::skip("the plugin claims no requested version"));
    };
    let sandbox = h.sandbox()?;
    let stdin = edited_request(h, &version, |obj| {
        obj.remove("name");
    });
    let inv = h.invoke("ADD", &sandbox.rt, &[], &stdin)?;
    inv.expect_code(7)?;
    Ok(Finding::pass())
}

fn unsupported_version(h: &Harness) -> CaseOutcome {
    let sandbox = h.sandbox()?;
    let stdin = edited_request(h, "1.0.0", |obj| {
        obj.insert("cniVersion".to_owned(), Value::String(UNSUPPORTED_VERSION.to_owned()));
    });
    let inv = h.invoke("ADD", &sandbox.rt, &[], &stdin)?;
    inv.expect_code(1)?;
    Ok(Finding::pass())
}
