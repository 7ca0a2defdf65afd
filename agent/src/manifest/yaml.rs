//! YAML that kubectl reads back as it was meant.
//!
//! `serde_yaml` writes YAML 1.2, where `yes`, `no`, `on`, `off`, `y` and `n`
//! are plain strings, so it leaves them unquoted. kubectl and Helm read
//! manifests with a YAML 1.1 parser, where those words are booleans: an
//! annotation value `yes` then becomes `true` and the object is rejected
//! (annotations must be strings). [`to_string`] quotes every such word,
//! as a mapping key, a mapping value or a sequence item, and leaves block
//! scalars' content alone.

use serde::Serialize;

/// Plain scalars a YAML 1.1 parser reads as booleans but YAML 1.2 (and so
/// `serde_yaml`) treats as strings. (`true`/`false`/`null` and their
/// variants are quoted by `serde_yaml` already.)
const YAML11_ONLY_BOOLS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
];

/// `value` as YAML in which no string can be read as a YAML 1.1 boolean.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_yaml::Error> {
    Ok(quote_yaml11_bools(&serde_yaml::to_string(value)?))
}

fn is_yaml11_bool(word: &str) -> bool {
    YAML11_ONLY_BOOLS.contains(&word)
}

/// Quotes the words of [`YAML11_ONLY_BOOLS`] standing as plain scalars in
/// `serde_yaml` output (block style: one key or item per line; multi-line
/// strings as `|`/`>` block scalars, whose content lines are kept as is).
fn quote_yaml11_bools(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    // The indentation of the line that opened a block scalar: lines indented
    // deeper (or blank) are its content.
    let mut block: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = body.len() - body.trim_start_matches(' ').len();
        if let Some(opener) = block {
            if body.trim().is_empty() || indent > opener {
                out.push_str(line);
                continue;
            }
            block = None;
        }
        let (fixed, opens_block) = quote_line(body);
        if opens_block {
            block = Some(indent);
        }
        out.push_str(&fixed);
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// One line of block-style YAML with its key and value quoted where they are
/// YAML 1.1 booleans; whether the line opens a block scalar.
fn quote_line(line: &str) -> (String, bool) {
    let mut out = String::new();
    let mut rest = line;
    // Indentation, sequence-item dashes and the complex-key indicators
    // (`? ` before a key written as a block, `: ` before its value).
    loop {
        let trimmed = rest.trim_start_matches(' ');
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        match ["- ", "? ", ": "].iter().find(|p| rest.starts_with(**p)) {
            Some(prefix) => {
                out.push_str(prefix);
                rest = &rest[prefix.len()..];
            }
            None => break,
        }
    }
    // A plain key (quoted keys start with a quote and are left alone).
    let value = match plain_key(rest) {
        Some((key, value)) => {
            out.push_str(&quote_if_bool(key));
            out.push(':');
            match value.strip_prefix(' ') {
                Some(v) => {
                    out.push(' ');
                    v
                }
                None => value,
            }
        }
        None => rest,
    };
    let opens_block = value.starts_with('|') || value.starts_with('>');
    out.push_str(&quote_if_bool(value));
    (out, opens_block)
}

/// `key: value` or `key:`: (key as written, what follows the colon). A
/// quoted key is returned with its quotes (and so is never re-quoted).
fn plain_key(s: &str) -> Option<(&str, &str)> {
    let key_end = match s.chars().next() {
        Some('\'') => closing_single_quote(s)?,
        Some('"') => closing_double_quote(s)?,
        _ => {
            return s
                .find(": ")
                .or_else(|| s.strip_suffix(':').map(str::len))
                .map(|at| (&s[..at], &s[at + 1..]));
        }
    };
    let rest = &s[key_end..];
    (rest == ":" || rest.starts_with(": ")).then(|| (&s[..key_end], &rest[1..]))
}

/// The end (exclusive) of the single-quoted scalar `s` starts with (`''`
/// is an escaped quote).
fn closing_single_quote(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The end (exclusive) of the double-quoted scalar `s` starts with.
fn closing_double_quote(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn quote_if_bool(word: &str) -> String {
    if is_yaml11_bool(word) {
        format!("'{word}'")
    } else {
        word.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    #[test]
    fn annotation_values_keys_and_items_are_quoted() {
        let v = json!({"metadata": {"annotations": {"rolled": "yes", "on": "x", "n": "no"}},
            "args": ["on", "off", "y", "plain"], "nested": [{"k": "Yes"}]});
        let text = to_string(&v).unwrap();
        assert!(text.contains("rolled: 'yes'"), "{text}");
        assert!(text.contains("'on': x"), "{text}");
        assert!(text.contains("'n': 'no'"), "{text}");
        assert!(
            text.contains("- 'on'\n") && text.contains("- 'off'\n") && text.contains("- 'y'\n"),
            "{text}"
        );
        assert!(text.contains("- plain\n"), "{text}");
        assert!(text.contains("- k: 'Yes'\n"), "{text}");
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn block_scalar_content_is_kept() {
        let v = json!({"data": {"script": "on\nyes: no\n- off\n", "after": "no"}});
        let text = to_string(&v).unwrap();
        assert!(text.contains("\n    on\n    yes: no\n    - off\n"), "{text}");
        assert!(text.contains("after: 'no'"), "{text}");
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(YAML11_ONLY_BOOLS).prop_map(str::to_string),
            proptest::sample::select(&["true", "null", "1", "a: b", "- x", "|", "'q'", "", " y", "on\nno"][..])
                .prop_map(str::to_string),
            "[a-zA-Z:|>\\- '\n]{0,8}",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            word().prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null)
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(word(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The quoted text means the same to a YAML 1.2 reader, and no
        /// scalar outside a block scalar is left a YAML 1.1 boolean.
        #[test]
        fn quoting_keeps_the_meaning(v in value()) {
            let text = to_string(&v).unwrap();
            let back: Value = serde_yaml::from_str(&text).unwrap();
            prop_assert_eq!(&back, &v);
            let plain = serde_yaml::to_string(&v).unwrap();
            let mut block: Option<usize> = None;
            for line in text.lines() {
                let indent = line.len() - line.trim_start_matches(' ').len();
                if let Some(opener) = block {
                    if line.trim().is_empty() || indent > opener { continue; }
                    block = None;
                }
                let (fixed, opens) = quote_line(line);
                prop_assert_eq!(&fixed, line, "left unquoted in:\n{}\nfrom:\n{}", text, plain);
                if opens { block = Some(indent); }
            }
        }
    }
}
