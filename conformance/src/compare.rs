//! Semantic comparison of CNI results, and moving a result between the
//! 0.3.x/0.4.0 and 1.x formats.
//!
//! Two results are equal when their `interfaces`, `ips`, `routes` and `dns`
//! are, after dropping what Go's `omitempty` would drop (nulls, empty
//! strings, empty lists and objects). An empty `dns` object therefore equals
//! no `dns` at all: libcni before 1.2 prints `"dns": {}` in 1.0.0 results,
//! newer versions omit it.

use istio_cni_kind::cni::version::at_least;
use serde_json::{Map, Value};

/// The result fields a pass-through plugin must preserve.
pub const RESULT_FIELDS: [&str; 4] = ["interfaces", "ips", "routes", "dns"];

/// A copy of `value` without nulls, empty strings, empty lists and empty
/// objects inside objects (recursively); numbers such as `"interface": 0`
/// are kept.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let v = normalize(v);
                if !is_empty(&v) {
                    out.insert(k.clone(), v);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The differences between `expected` and `actual` in the preserved
/// fields, one entry per field that differs (empty when equal).
pub fn result_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let expected = normalize(expected);
    let actual = normalize(actual);
    RESULT_FIELDS
        .iter()
        .filter_map(|field| {
            let want = expected.get(*field).cloned().unwrap_or(Value::Null);
            let got = actual.get(*field).cloned().unwrap_or(Value::Null);
            (want != got).then(|| format!("{field}: expected {want}, got {got}"))
        })
        .collect()
}

/// Checks the per-version shape of `ips[]`: before 1.0.0 every entry
/// carries `"version": "4"|"6"` matching its address; from 1.0.0 none does.
pub fn ip_version_problems(result: &Value, cni_version: &str) -> Vec<String> {
    let wants_version = !at_least(cni_version, "1.0.0").unwrap_or(true);
    let Some(ips) = result.get("ips").and_then(Value::as_array) else {
        return Vec::new();
    };
    ips.iter()
        .enumerate()
        .filter_map(|(i, ip)| {
            let version = ip.get("version");
            match (wants_version, version) {
                (true, Some(Value::String(v))) if Some(v.as_str()) == address_family(ip) => None,
                (true, Some(v)) => Some(format!(
                    "ips[{i}].version is {v}, expected {:?} for {}",
                    address_family(ip).unwrap_or("?"),
                    ip.get("address").unwrap_or(&Value::Null)
                )),
                (true, None) => Some(format!("ips[{i}] has no \"version\" (required before 1.0.0)")),
                (false, Some(v)) => Some(format!("ips[{i}] has \"version\": {v} (removed in 1.0.0)")),
                (false, None) => None,
            }
        })
        .collect()
}

/// `"4"` or `"6"` from an `ips[]` entry's address.
fn address_family(ip: &Value) -> Option<&'static str> {
    let address = ip.get("address")?.as_str()?;
    Some(if address.contains(':') { "6" } else { "4" })
}

/// `result` re-labelled as a `to` result: `cniVersion` set, `ips[].version`
/// added (before 1.0.0) or removed (from 1.0.0). Valid between the
/// 0.3.0–1.1.0 formats, which differ only in that field; 1.1.0 only added
/// optional fields to 1.0.0.
pub fn convert_result(result: &Value, to: &str) -> Value {
    let mut out = result.clone();
    let wants_version = !at_least(to, "1.0.0").unwrap_or(true);
    if let Some(obj) = out.as_object_mut() {
        obj.insert("cniVersion".to_owned(), Value::String(to.to_owned()));
        if let Some(Value::Array(ips)) = obj.get_mut("ips") {
            for ip in ips.iter_mut() {
                let family = address_family(ip);
                if let Some(entry) = ip.as_object_mut() {
                    if wants_version {
                        if let (false, Some(family)) = (entry.contains_key("version"), family) {
                            entry.insert("version".to_owned(), Value::String(family.to_owned()));
                        }
                    } else {
                        entry.remove("version");
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prev040() -> Value {
        json!({"cniVersion": "0.4.0",
            "interfaces": [{"name": "cni0", "mac": "aa"}, {"name": "eth0", "mac": "bb", "sandbox": "/n"}],
            "ips": [{"version": "4", "interface": 1, "address": "10.251.0.2/24", "gateway": "10.251.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {}})
    }

    #[test]
    fn equal_modulo_empty_fields_and_dns() {
        let mut out = prev040();
        out.as_object_mut().unwrap().remove("dns");
        out["interfaces"][0]["sandbox"] = json!("");
        assert!(result_diff(&prev040(), &out).is_empty());
        let mut out = prev040();
        out["dns"] = json!({"nameservers": []});
        assert!(result_diff(&prev040(), &out).is_empty());
    }

    #[test]
    fn lost_or_changed_fields_are_reported() {
        let mut out = prev040();
        out.as_object_mut().unwrap().remove("routes");
        out["ips"][0]["version"] = json!("6");
        let diff = result_diff(&prev040(), &out);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].starts_with("ips:"));
        assert!(diff[1].starts_with("routes:"));
        // The interface index 0 is a value, not an empty field.
        let mut zero = prev040();
        zero["ips"][0]["interface"] = json!(0);
        assert_eq!(result_diff(&prev040(), &zero).len(), 1);
    }

    #[test]
    fn ip_versions_per_spec_version() {
        assert!(ip_version_problems(&prev040(), "0.4.0").is_empty());
        let p = ip_version_problems(&prev040(), "1.0.0");
        assert_eq!(p, ["ips[0] has \"version\": \"4\" (removed in 1.0.0)"]);
        let v100 = convert_result(&prev040(), "1.1.0");
        assert_eq!(v100["cniVersion"], "1.1.0");
        assert!(v100["ips"][0].get("version").is_none());
        assert!(ip_version_problems(&v100, "1.1.0").is_empty());
        let back = convert_result(&v100, "0.3.1");
        assert_eq!(back["ips"][0]["version"], "4");
        let mut wrong = prev040();
        wrong["ips"][0]["version"] = json!("6");
        assert!(ip_version_problems(&wrong, "0.3.0")[0].contains("expected \"4\""));
        wrong["ips"][0].as_object_mut().unwrap().remove("version");
        assert!(ip_version_problems(&wrong, "0.3.0")[0].contains("no \"version\""));
    }
}
