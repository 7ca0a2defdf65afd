//! Canonical JSON: what Go's `json.Marshal` of a `map[string]interface{}`
//! produces — compact, object keys sorted by bytes at every level. libcni
//! builds every plugin's stdin this way, so the runner does the same
//! regardless of how `serde_json` orders maps.

use serde_json::Value;

/// Compact JSON with object keys sorted at every level.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Pretty JSON (two-space indent) with sorted keys and a trailing newline,
/// for files written to disk.
pub fn pretty(value: &Value) -> String {
    let sorted = sort_keys(value);
    let mut text = serde_json::to_string_pretty(&sorted).unwrap_or_else(|_| canonical(value));
    text.push('\n');
    text
}

/// A copy of `value` whose objects were rebuilt in sorted key order.
fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sort_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        scalar => scalar.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sorted_at_every_level() {
        let v = json!({"z": 1, "a": {"y": [ {"b": 1, "a": "x\"y"} ], "b": null}, "B": true});
        assert_eq!(
            canonical(&v),
            r#"{"B":true,"a":{"b":null,"y":[{"a":"x\"y","b":1}]},"z":1}"#
        );
    }

    #[test]
    fn pretty_ends_with_newline() {
        assert_eq!(pretty(&json!({"b": 1, "a": 2})), "{\n  \"a\": 2,\n  \"b\": 1\n}\n");
    }
}
