//! `--set key=value`: Helm's syntax, as far as values files need it.
//!
//! - several assignments in one argument: `a=1,b=2` (`\,` is a literal comma);
//! - dotted paths `repair.deletePods=true` (`\.` is a literal dot, e.g. in
//!   annotation keys), list indices `tolerations[0].key=x`;
//! - lists `excludeNamespaces={kube-system,istio-system}`;
//! - Helm's typing: `true`/`false` are booleans, `null` removes the key, a
//!   plain integer (no leading zero) is a number, anything else a string.

use serde_json::{Map, Value};

/// One path step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Applies one `--set` argument to `tree` (a values document).
pub fn apply(tree: &mut Value, arg: &str) -> Result<(), String> {
    for assignment in split_unescaped(arg, ',', true) {
        if assignment.is_empty() {
            continue;
        }
        let (key, raw) = split_key(&assignment).ok_or_else(|| format!("{assignment:?} is not key=value"))?;
        let path = parse_path(&key)?;
        let value = parse_value(&raw);
        set_path(tree, &path, value).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

/// Parses `--set` arguments into one values document.
pub fn parse(args: &[String]) -> Result<Value, String> {
    let mut tree = Value::Object(Map::new());
    for arg in args {
        apply(&mut tree, arg).map_err(|e| format!("--set {arg:?}: {e}"))?;
    }
    Ok(tree)
}

/// Splits on `sep` outside escapes (and, if `braces`, outside `{...}`),
/// keeping escapes for the next stage.
fn split_unescaped(s: &str, sep: char, braces: bool) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0usize;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut();
        let Some(cur) = cur else { break };
        match c {
            '\\' => {
                cur.push(c);
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            '{' if braces => {
                depth += 1;
                cur.push(c);
            }
            '}' if braces => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if c == sep && depth == 0 => parts.push(String::new()),
            c => cur.push(c),
        }
    }
    parts
}

/// `key=value` at the first unescaped `=`.
fn split_key(s: &str) -> Option<(String, String)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '=' => return Some((s[..i].to_string(), s[i + 1..].to_string())),
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_path(key: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for segment in split_unescaped(key, '.', false) {
        // `name[0][1]`: the name, then indices.
        let (name, mut rest) = match segment.find('[') {
            Some(i) if !segment[..i].ends_with('\\') => (&segment[..i], &segment[i..]),
            _ => (segment.as_str(), ""),
        };
        if name.is_empty() && steps.is_empty() {
            return Err(format!("{key:?} has an empty key"));
        }
        if !name.is_empty() {
            steps.push(Step::Key(unescape(name)));
        } else if rest.is_empty() {
            return Err(format!("{key:?} has an empty key"));
        }
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| format!("{key:?}: unclosed ["))?;
            let index = rest[1..close]
                .parse::<usize>()
                .map_err(|_| format!("{key:?}: {:?} is not a list index", &rest[1..close]))?;
            steps.push(Step::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("{key:?}: unexpected {rest:?} after an index"));
            }
        }
    }
    Ok(steps)
}

fn parse_value(raw: &str) -> Value {
    match raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        Some("") => Value::Array(Vec::new()),
        Some(inner) => Value::Array(
            split_unescaped(inner, ',', false)
                .iter()
                .map(|item| typed(item))
                .collect(),
        ),
        None => typed(raw),
    }
}

/// Helm's `typedVal`.
fn typed(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        "0" => Value::from(0),
        _ => {
            let looks_int = !raw.starts_with('0') && !raw.starts_with("+") && !raw.starts_with("-0");
            match raw.parse::<i64>() {
                Ok(n) if looks_int => Value::from(n),
                _ => Value::String(unescape(raw)),
            }
        }
    }
}

fn set_path(node: &mut Value, path: &[Step], value: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    match first {
        Step::Key(k) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(map) = node else {
                return Err("not a map".into());
            };
            let child = map.entry(k.clone()).or_insert(Value::Null);
            set_path(child, rest, value)
        }
        Step::Index(i) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let Value::Array(items) = node else {
                return Err("not a list".into());
            };
            // Helm refuses huge indices too; they are always a typo.
            if *i > 10_000 {
                return Err(format!("list index {i} is too large"));
            }
            if items.len() <= *i {
                items.resize(i + 1, Value::Null);
            }
            set_path(&mut items[*i], rest, value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(args: &[&str]) -> Value {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn nested_paths_and_types() {
        assert_eq!(
            set(&[
                "cni.repair.deletePods=true,cni.repair.repairPods=false",
                "tag=1.24.0",
                "resourceQuotas.pods=0"
            ]),
            json!({"cni": {"repair": {"deletePods": true, "repairPods": false}}, "tag": "1.24.0", "resourceQuotas": {"pods": 0}})
        );
        assert_eq!(
            set(&["a=007", "b=12", "c=null", "d="]),
            json!({"a": "007", "b": 12, "c": null, "d": ""})
        );
    }

    #[test]
    fn lists_indices_and_escapes() {
        assert_eq!(
            set(&["excludeNamespaces={kube-system,istio-system}"]),
            json!({"excludeNamespaces": ["kube-system", "istio-system"]})
        );
        assert_eq!(
            set(&["tolerations[1].key=x"]),
            json!({"tolerations": [null, {"key": "x"}]})
        );
        assert_eq!(
            set(&[r"podAnnotations.example\.com/team=a\,b"]),
            json!({"podAnnotations": {"example.com/team": "a,b"}})
        );
    }

    #[test]
    fn bad_syntax_is_an_error() {
        assert!(parse(&["novalue".to_string()]).is_err());
        assert!(parse(&["a[x]=1".to_string()]).is_err());
        assert!(parse(&[".a=1".to_string()]).is_err());
    }
}
