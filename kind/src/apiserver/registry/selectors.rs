//! Label and field selectors: parsing and matching (pure).
//!
//! Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! `k` (exists), `!k` (does not exist), `k>n`, `k<n`; comma-separated, all
//! must hold. Field selectors: `path=v`, `path==v`, `path!=v`, comma-separated,
//! where `path` is a dotted path into the object (`spec.nodeName`,
//! `metadata.name`, `status.phase`, ...); a missing field is the empty string.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: LabelOp,
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<LabelRequirement>,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.chars.peek().copied() {
            if !f(c) {
                break;
            }
            s.push(c);
            self.chars.next();
        }
        s
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.chars.next();
            true
        } else {
            false
        }
    }
}

fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty label key".into());
    }
    if key.len() > 316 || key.matches('/').count() > 1 || key.starts_with('/') || key.ends_with('/') {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err(format!("invalid label value {v:?}: must be no more than 63 characters"));
    }
    Ok(())
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut lx = Lexer {
            chars: s.chars().peekable(),
        };
        let mut requirements = Vec::new();
        lx.skip_ws();
        if lx.peek().is_none() {
            return Ok(LabelSelector::default());
        }
        loop {
            lx.skip_ws();
            let negated = lx.eat('!');
            lx.skip_ws();
            let key = lx.take_while(is_key_char);
            validate_key(&key)?;
            lx.skip_ws();
            let op = if negated {
                LabelOp::DoesNotExist
            } else {
                match lx.peek() {
                    None | Some(',') => LabelOp::Exists,
                    Some('=') => {
                        lx.chars.next();
                        lx.eat('=');
                        LabelOp::Equals(single_value(&mut lx)?)
                    }
                    Some('!') => {
                        lx.chars.next();
                        if !lx.eat('=') {
                            return Err(format!("expected '=' after '!' in {s:?}"));
                        }
                        LabelOp::NotEquals(single_value(&mut lx)?)
                    }
                    Some('>') => {
                        lx.chars.next();
                        LabelOp::GreaterThan(int_value(&mut lx)?)
                    }
                    Some('<') => {
                        lx.chars.next();
                        LabelOp::LessThan(int_value(&mut lx)?)
                    }
                    Some(c) if c.is_ascii_alphabetic() => {
                        let word = lx.take_while(|c| c.is_ascii_alphabetic());
                        let values = set_values(&mut lx)?;
                        match word.as_str() {
                            "in" => LabelOp::In(values),
                            "notin" => LabelOp::NotIn(values),
                            _ => return Err(format!("unknown operator {word:?} in {s:?}")),
                        }
                    }
                    Some(c) => return Err(format!("unexpected {c:?} in label selector {s:?}")),
                }
            };
            requirements.push(LabelRequirement { key, op });
            lx.skip_ws();
            match lx.chars.next() {
                None => break,
                Some(',') => continue,
                Some(c) => return Err(format!("unexpected {c:?} in label selector {s:?}")),
            }
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The selector an API object carries (`spec.selector` of a Deployment,
    /// ReplicaSet or DaemonSet): `matchLabels` and `matchExpressions` (`In`,
    /// `NotIn`, `Exists`, `DoesNotExist`), all of which must hold.
    pub fn from_api(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<LabelSelector, String> {
        let mut requirements: Vec<LabelRequirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| LabelRequirement {
                key: k.clone(),
                op: LabelOp::Equals(v.clone()),
            })
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "{:?}: values must be non-empty for operator {}",
                        e.key, e.operator
                    ));
                }
                "In" => LabelOp::In(values),
                "NotIn" => LabelOp::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!("{:?}: values must be empty for operator {}", e.key, e.operator));
                }
                "Exists" => LabelOp::Exists,
                "DoesNotExist" => LabelOp::DoesNotExist,
                other => return Err(format!("{:?}: {other:?} is not a valid label selector operator", e.key)),
            };
            requirements.push(LabelRequirement { key: e.key.clone(), op });
        }
        Ok(LabelSelector { requirements })
    }

    /// The query form (see [`LabelSelector::to_query`]) of the
    /// `spec.selector` of the workload object `obj`; empty when it has none
    /// or an invalid one (what `kubectl get -o wide` and a `Scale` show).
    pub fn query_of_spec(obj: &Value) -> String {
        obj.pointer("/spec/selector")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .and_then(|v| LabelSelector::from_api(&v).ok())
            .map(|v| v.to_query())
            .unwrap_or_default()
    }

    /// The `?labelSelector=` form (`a=b,c in (d,e),!f`), for listing what the
    /// selector matches.
    pub fn to_query(&self) -> String {
        self.requirements
            .iter()
            .map(|r| match &r.op {
                LabelOp::Equals(v) => format!("{}={v}", r.key),
                LabelOp::NotEquals(v) => format!("{}!={v}", r.key),
                LabelOp::In(vs) => format!("{} in ({})", r.key, vs.join(",")),
                LabelOp::NotIn(vs) => format!("{} notin ({})", r.key, vs.join(",")),
                LabelOp::Exists => r.key.clone(),
                LabelOp::DoesNotExist => format!("!{}", r.key),
                LabelOp::GreaterThan(n) => format!("{}>{n}", r.key),
                LabelOp::LessThan(n) => format!("{}<{n}", r.key),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
    }

    /// Matches against an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.requirements.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            r.matches(v)
        })
    }
}

impl LabelRequirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (LabelOp::Exists, v) => v.is_some(),
            (LabelOp::DoesNotExist, v) => v.is_none(),
            (LabelOp::Equals(want), Some(v)) => v == want,
            (LabelOp::NotEquals(want), Some(v)) => v != want,
            (LabelOp::NotEquals(_), None) => true,
            (LabelOp::In(set), Some(v)) => set.iter().any(|s| s == v),
            (LabelOp::NotIn(set), Some(v)) => !set.iter().any(|s| s == v),
            (LabelOp::NotIn(_), None) => true,
            (LabelOp::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (LabelOp::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (_, None) => false,
        }
    }
}

fn single_value(lx: &mut Lexer<'_>) -> Result<String, String> {
    lx.skip_ws();
    let v = lx.take_while(is_value_char);
    validate_value(&v)?;
    Ok(v)
}

fn int_value(lx: &mut Lexer<'_>) -> Result<i64, String> {
    lx.skip_ws();
    let v = lx.take_while(|c| c.is_ascii_digit() || c == '-');
    v.parse::<i64>()
        .map_err(|_| format!("invalid integer {v:?} in label selector"))
}

fn set_values(lx: &mut Lexer<'_>) -> Result<Vec<String>, String> {
    lx.skip_ws();
    if !lx.eat('(') {
        return Err("expected '(' after set operator".into());
    }
    let mut values = Vec::new();
    loop {
        lx.skip_ws();
        let v = lx.take_while(is_value_char);
        validate_value(&v)?;
        values.push(v);
        lx.skip_ws();
        match lx.chars.next() {
            Some(',') => continue,
            Some(')') => break,
            _ => return Err("expected ',' or ')' in set".into()),
        }
    }
    Ok(values)
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub path: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// Splits on unescaped `sep`, keeping escapes in place.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return Err(format!("invalid escape sequence in field selector value {s:?}")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for part in split_unescaped(s, ',') {
            let (path, value, negated) = if let Some((p, v)) = part.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, v, false)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, v, false)
            } else {
                return Err(format!("invalid field selector {part:?}: expected an operator"));
            };
            let path = path.trim();
            if path.is_empty() || !path.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
                return Err(format!("invalid field selector key {path:?}"));
            }
            requirements.push(FieldRequirement {
                path: path.to_string(),
                value: unescape(value.trim())?,
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value an `x=y` requirement on `path` pins, if any (used to narrow
    /// lookups, e.g. `metadata.name`).
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| !r.negated && r.path == path)
            .map(|r| r.value.as_str())
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(obj, &r.path);
            (actual == r.value) != r.negated
        })
    }
}

/// The string value at a dotted path (`""` when absent).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_all_operators() {
        let s = LabelSelector::parse("a=1, b==2,c!=3,d in (x, y),e notin (z),f,!g,h>5,i<7").unwrap();
        let ops: Vec<_> = s.requirements.iter().map(|r| (r.key.as_str(), r.op.clone())).collect();
        assert_eq!(
            ops,
            vec![
                ("a", LabelOp::Equals("1".into())),
                ("b", LabelOp::Equals("2".into())),
                ("c", LabelOp::NotEquals("3".into())),
                ("d", LabelOp::In(vec!["x".into(), "y".into()])),
                ("e", LabelOp::NotIn(vec!["z".into()])),
                ("f", LabelOp::Exists),
                ("g", LabelOp::DoesNotExist),
                ("h", LabelOp::GreaterThan(5)),
                ("i", LabelOp::LessThan(7)),
            ]
        );
    }

    /// Asserts whether each selector of `cases` matches, naming the one that
    /// does not behave.
    fn each_matches(matches: impl Fn(&str) -> bool, cases: &[(&str, bool)]) {
        for &(selector, want) in cases {
            assert_eq!(matches(selector), want, "{selector:?}");
        }
    }

    #[test]
    fn matches_semantics() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "10")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (db,web)", true),
            ("app in (db)", false),
            ("missing in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("n>9", true),
            ("n<9", false),
            ("example.com/key!=x", true),
            ("app=", false),
        ];
        each_matches(|s| LabelSelector::parse(s).unwrap().matches(&l), &cases);
    }

    #[test]
    fn empty_value_equality() {
        let l = labels(&[("a", "")]);
        assert!(LabelSelector::parse("a=").unwrap().matches(&l));
        assert!(!LabelSelector::parse("b=").unwrap().matches(&l));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "a=(",
            "a in x",
            "a in (x",
            "=x",
            "a!x",
            "a foo (b)",
            "a=b c",
            "/a=b",
            "a>x",
            "a,,b",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn matches_object_labels() {
        let o = json!({"metadata": {"labels": {"app": "x"}}});
        assert!(LabelSelector::parse("app=x").unwrap().matches_object(&o));
        assert!(!LabelSelector::parse("app=y").unwrap().matches_object(&o));
        assert!(LabelSelector::parse("!app2").unwrap().matches_object(&json!({})));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running"},
        });
        let cases = [
            ("", true),
            ("spec.nodeName=n1", true),
            ("spec.nodeName==n1", true),
            ("spec.nodeName=n2", false),
            ("spec.nodeName!=n2", true),
            ("metadata.name=p1,metadata.namespace=default", true),
            ("status.phase=Running", true),
            ("status.phase!=Running", false),
            ("spec.hostNetwork=true", true),
            // A missing field is the empty string.
            ("spec.schedulerName=", true),
        ];
        each_matches(|s| FieldSelector::parse(s).unwrap().matches_object(&pod), &cases);
        assert_eq!(
            FieldSelector::parse("metadata.name=x").unwrap().exact("metadata.name"),
            Some("x")
        );
        assert_eq!(
            FieldSelector::parse("metadata.name!=x").unwrap().exact("metadata.name"),
            None
        );
    }

    #[test]
    fn field_selector_escapes_and_errors() {
        let s = FieldSelector::parse(r"metadata.name=a\,b,spec.nodeName=c\=d").unwrap();
        assert_eq!(s.requirements[0].value, "a,b");
        assert_eq!(s.requirements[1].value, "c=d");
        assert!(FieldSelector::parse("nooperator").is_err());
        assert!(FieldSelector::parse("=x").is_err());
        assert!(FieldSelector::parse(r"a=b\x").is_err());
    }

    #[test]
    fn api_selectors_match_and_print_as_queries() {
        let api: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}]}))
            .unwrap();
        let sel = LabelSelector::from_api(&api).unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])));
        assert_eq!(sel.to_query(), "app=web,tier in (a,b),!canary");
        assert_eq!(LabelSelector::parse(&sel.to_query()).unwrap(), sel);
        let bad: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "k", "operator": "In"}]})).unwrap();
        assert!(LabelSelector::from_api(&bad).unwrap_err().contains("non-empty"));
    }
}
