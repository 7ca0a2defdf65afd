//! Missing required `CNI_*` variables: a failure with an error document on
//! stdout, code 4, and a message naming every missing variable.

use super::{Case, CaseOutcome};
use crate::harness::Harness;
use crate::report::Finding;

/// The variables each command requires (docs/cni-spec.md#parameters; `CNI_PATH`
/// is optional in the spec, so it is not checked).
pub const REQUIRED: [(&str, &[&str]); 3] = [
    ("ADD", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]),
    ("DEL", &["CNI_CONTAINERID", "CNI_IFNAME"]),
    ("CHECK", &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]),
];

/// One case per (command, variable), and one per command with all of its
/// variables missing.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (command, vars) in REQUIRED {
        for var in vars {
            cases.push(Case::new(
                format!("env/missing-{var}[{command}]"),
                move |h: &Harness| missing(h, command, &[var]),
            ));
        }
        cases.push(Case::new(format!("env/missing-all[{command}]"), move |h: &Harness| {
            missing(h, command, vars)
        }));
    }
    cases
}

fn missing(h: &Harness, command: &str, vars: &[&str]) -> CaseOutcome {
    let version = if command == "CHECK" {
        h.check_version()
    } else {
        h.base_version()
    };
    let Some(version) = version else {
        return Ok(Finding::skip(format!(
            "the plugin claims no requested version{}",
            if command == "CHECK" {
                " with CHECK (≥ 0.4.0)"
            } else {
                ""
            }
        )));
    };
    let sandbox = h.sandbox()?;
    let env: Vec<(String, Option<String>)> = vars.iter().map(|v| ((*v).to_owned(), None)).collect();
    let inv = h.invoke(command, &sandbox.rt, &env, &h.request(&version, None))?;
    let doc = inv.expect_code(4)?;
    let text = doc.text();
    let unnamed: Vec<&str> = vars.iter().copied().filter(|v| !text.contains(v)).collect();
    if !unnamed.is_empty() {
        return Err(format!(
            "the error message {:?} does not name {}",
            text.trim(),
            unnamed.join(", ")
        ));
    }
    Ok(Finding::pass())
}
