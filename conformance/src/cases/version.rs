//! VERSION: a valid version report naming every chaining version up to
//! 1.0.0, also when stdin is empty (libcni's skel never reads it).

use istio_cni_kind::cni::RuntimeConf;
use istio_cni_kind::cni::version::CURRENT;
use serde_json::Value;

use super::{Case, CaseOutcome};
use crate::harness::Harness;
use crate::report::Finding;

/// Versions every chained plugin must list (1.1.0 is optional).
pub const REQUIRED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The VERSION cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::new("version/report", report),
        Case::new("version/empty-stdin", empty_stdin),
    ]
}

/// Checks a VERSION document: `cniVersion` a string, `supportedVersions` a
/// list of strings including [`REQUIRED_VERSIONS`]. Returns both.
pub fn check_report(doc: &Value) -> Result<(String, Vec<String>), String> {
    let cni_version = doc
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the version report has no string \"cniVersion\": {doc}"))?;
    let list = doc
        .get("supportedVersions")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("the version report has no \"supportedVersions\" list: {doc}"))?;
    let mut supported = Vec::new();
    for v in list {
        let v = v
            .as_str()
            .ok_or_else(|| format!("supportedVersions holds a non-string {v}"))?;
        supported.push(v.to_owned());
    }
    let missing: Vec<&str> = REQUIRED_VERSIONS
        .iter()
        .copied()
        .filter(|v| !supported.iter().any(|s| s == v))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "supportedVersions [{}] lacks {}",
            supported.join(", "),
            missing.join(", ")
        ));
    }
    Ok((cni_version.to_owned(), supported))
}

fn report(h: &Harness) -> CaseOutcome {
    let stdin = format!("{{\"cniVersion\":\"{CURRENT}\"}}");
    let inv = h.invoke("VERSION", &RuntimeConf::default(), &[], stdin.as_bytes())?;
    let doc = inv.expect_document()?;
    let (cni_version, supported) = check_report(&doc)?;
    let claims_1_1 = supported.iter().any(|v| v == "1.1.0");
    Ok(Finding::pass_with(format!(
        "supportedVersions [{}]{}; cniVersion {cni_version:?}",
        supported.join(", "),
        if claims_1_1 {
            " (claims 1.1.0: STATUS and GC are checked)"
        } else {
            ""
        }
    )))
}

fn empty_stdin(h: &Harness) -> CaseOutcome {
    let inv = h.invoke("VERSION", &RuntimeConf::default(), &[], b"")?;
    let doc = inv.expect_document()?;
    let (_, supported) = check_report(&doc)?;
    if let Ok(info) = h.plugin_versions() {
        if info.supported_versions != supported {
            return Err(format!(
                "with empty stdin supportedVersions is [{}], with a request it is [{}]",
                supported.join(", "),
                info.supported_versions.join(", ")
            ));
        }
    }
    Ok(Finding::pass())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_are_checked() {
        let ok =
            json!({"cniVersion": "1.0.0", "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]});
        assert_eq!(check_report(&ok).unwrap().1.len(), 6);
        let short = json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.1", "1.0.0"]});
        assert!(check_report(&short).unwrap_err().contains("lacks 0.3.0, 0.4.0"));
        assert!(
            check_report(&json!({"supportedVersions": []}))
                .unwrap_err()
                .contains("cniVersion")
        );
        let bad = json!({"cniVersion": "1.0.0", "supportedVersions": [1]});
        assert!(check_report(&bad).unwrap_err().contains("non-string"));
    }
}
