//! STATUS (1.1.0): exit 0 when ready, or code 50/51 when not (both
//! accepted, the case reports which); refused with code 1 before 1.1.0.

use istio_cni_kind::cni::{RuntimeConf, request};

use super::{Case, CaseOutcome, skip_unless_1_1_0};
use crate::harness::{Harness, NETWORK};
use crate::invoke::excerpt;
use crate::report::Finding;

/// STATUS error codes: not available, not available with limited connectivity.
pub const NOT_AVAILABLE: [u64; 2] = [50, 51];

/// The STATUS cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::new("status/ready[1.1.0]", ready),
        Case::new("status/refused[1.0.0]", refused),
    ]
}

/// STATUS as libcni sends it: only `CNI_COMMAND` and `CNI_PATH` set.
fn status(h: &Harness, version: &str) -> Result<crate::invoke::Invocation, String> {
    let stdin = request::status_stdin(NETWORK, version, h.plugin_conf());
    h.invoke("STATUS", &RuntimeConf::default(), &[], &stdin)
}

fn ready(h: &Harness) -> CaseOutcome {
    if let Some(skip) = skip_unless_1_1_0(h) {
        return Ok(skip);
    }
    let inv = status(h, "1.1.0")?;
    if inv.succeeded() {
        return Ok(Finding::pass_with("ready (exit 0)"));
    }
    let doc = inv.error_doc()?;
    if NOT_AVAILABLE.contains(&doc.code) {
        Ok(Finding::pass_with(format!(
            "not ready: code {}: {}",
            doc.code,
            excerpt(&doc.text())
        )))
    } else {
        Err(format!(
            "STATUS failed with code {} ({}); only 50 and 51 mean \"not available\"",
            doc.code,
            excerpt(&doc.text())
        ))
    }
}

fn refused(h: &Harness) -> CaseOutcome {
    if let Some(skip) = h.skip_unless_claimed("1.1.0") {
        return Ok(skip);
    }
    status(h, "1.0.0")?.expect_code(1)?;
    Ok(Finding::pass())
}
