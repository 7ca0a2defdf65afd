//! Span-exact edits of a CNI config's text (istio-cni-agent.md §4.6 without
//! Istio's re-serialization). The file is validated as strict JSON, then
//! edited by byte ranges from a syntax tree: every byte we do not insert or
//! remove stays as it was — key order, whitespace, number spelling, escapes,
//! the primary's cniVersion. Istio instead re-sorts keys and re-prints
//! numbers through f64.
//!
//! Appending inserts `<separator><entry>` right after the last plugin, where
//! the separator is copied from between the last two plugins; removing the
//! last plugin cuts exactly that range. So removal undoes insertion byte for
//! byte and installing twice equals installing once.

use jsonc_parser::ast::{self, Array, Object};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};
use serde_json::Value;

use super::entry::{Entry, PLUGIN_TYPE};

/// The list name Istio gives a converted `.conf` that has none.
pub const DEFAULT_LIST_NAME: &str = "k8s-pod-network";
/// The list version when the `.conf` has none: the first with chaining (prevResult).
pub const DEFAULT_LIST_VERSION: &str = "0.3.1";

/// What a config file holds, judged as Istio does: a top-level `type` key
/// means a single plugin (`.conf` form) whatever the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single,
    List,
}

/// The file as strict JSON (Go's `encoding/json` rejects comments and trailing
/// commas, so must we), which must be an object.
pub fn parse(text: &str) -> Result<(Value, Shape), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("not a JSON object".into());
    };
    let shape = if obj.contains_key("type") {
        Shape::Single
    } else {
        Shape::List
    };
    Ok((value, shape))
}

/// The `plugins` of a list, each checked to be an object.
pub fn plugins(value: &Value) -> Result<&Vec<Value>, String> {
    let list = match value.get("plugins") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err("error reading plugin list: \"plugins\" is not an array".into()),
        None => return Err("error reading plugin list: no \"plugins\" key".into()),
    };
    if let Some(i) = list.iter().position(|p| !p.is_object()) {
        return Err(format!("error reading plugin list: plugin {i} is not an object"));
    }
    Ok(list)
}

/// The text with our entry as the last plugin and no other istio-cni entry.
/// A single plugin becomes a list (see [`wrap_single`]).
pub fn insert(text: &str, entry: &Entry) -> Result<String, String> {
    let (value, shape) = parse(text)?;
    match shape {
        Shape::Single => {
            if super::entry::is_ours(&value) {
                return Err(format!(
                    "the file is an {PLUGIN_TYPE} config itself, not a primary network to chain into"
                ));
            }
            wrap_single(text, entry)
        }
        Shape::List => {
            plugins(&value)?;
            let (without, _) = remove_ours(text)?;
            append(&without, entry)
        }
    }
}

/// Removes every istio-cni plugin (any Istio version's format) by span.
/// Returns the text and how many were removed.
pub fn remove_ours(text: &str) -> Result<(String, usize), String> {
    let mut text = text.to_string();
    let mut removed = 0;
    // One at a time, re-parsing in between: the ranges stay simple and
    // adjacent removals cannot overlap.
    loop {
        let cut = {
            let root = syntax(&text)?;
            let array = plugins_array(&root)?;
            let Some(i) = array.elements.iter().position(is_our_node) else {
                return Ok((text, removed));
            };
            let el = &array.elements;
            if el.len() == 1 {
                (array.range.start + 1, array.range.end - 1)
            } else if i > 0 {
                (el[i - 1].end(), el[i].end())
            } else {
                (el[0].start(), el[1].start())
            }
        };
        text.replace_range(cut.0..cut.1, "");
        removed += 1;
    }
}

/// Appends our entry after the last plugin, formatted like its neighbours.
fn append(text: &str, entry: &Entry) -> Result<String, String> {
    let root = syntax(text)?;
    let array = plugins_array(&root)?;
    let unit = indent_unit(text);
    let (at, insertion) = match array.elements.as_slice() {
        [] => {
            // Only reachable when the list held nothing but istio-cni.
            let inner = (array.range.start + 1, array.range.end - 1);
            let line = line_indent(text, array.range.start);
            let body = match unit {
                Some(u) => format!("\n{line}{u}{}\n{line}", entry.render(Some(u), &format!("{line}{u}"))),
                None => entry.render(None, ""),
            };
            let mut out = text.to_string();
            out.replace_range(inner.0..inner.1, &body);
            return Ok(out);
        }
        [only] => {
            let gap = &text[array.range.start + 1..only.start()];
            (only.end(), format!(",{gap}"))
        }
        [.., prev, last] => (last.end(), text[prev.end()..last.start()].to_string()),
    };
    let rendered = match insertion.rfind('\n') {
        // A multi-line list: our entry starts on its own line at the
        // neighbours' column and nests with the file's indent unit.
        Some(nl) => entry.render(Some(unit.unwrap_or("  ")), &insertion[nl + 1..]),
        None => entry.render(None, ""),
    };
    let mut out = String::with_capacity(text.len() + insertion.len() + rendered.len());
    out.push_str(&text[..at]);
    out.push_str(&insertion);
    out.push_str(&rendered);
    out.push_str(&text[at..]);
    Ok(out)
}

/// A single plugin (`.conf`) as a list holding it and our entry. The plugin
/// object's text is kept verbatim (not re-indented: byte for byte). The list
/// takes the plugin's own `cniVersion` and `name` when it has them, because
/// libcni injects the list's values into every plugin: Istio's fixed
/// `0.3.1`/`k8s-pod-network` changes the version the primary runs at and the
/// network name host-local keys its IP store on. Istio's values are the
/// fallback ([`DEFAULT_LIST_VERSION`] when the version is missing or older
/// than chaining, [`DEFAULT_LIST_NAME`] when the name is missing or not a
/// valid network name).
pub fn wrap_single(text: &str, entry: &Entry) -> Result<String, String> {
    let root = syntax(text)?;
    let obj = root.as_object().ok_or("not a JSON object")?;
    let literal = |key: &str| -> Option<&str> {
        let s = obj.get_string(key)?;
        (!s.value.is_empty()).then(|| &text[s.range.start..s.range.end])
    };
    // Chaining (prevResult) starts at 0.3.0: an older or unreadable version
    // would leave our plugin without the primary's result.
    let version = obj
        .get_string("cniVersion")
        .filter(|v| chains(&v.value))
        .and(literal("cniVersion"))
        .map_or_else(|| quote(DEFAULT_LIST_VERSION), str::to_string);
    // The list's name reaches every plugin, ours included, which rejects
    // names a container ID could not have.
    let name = obj
        .get_string("name")
        .filter(|n| istio_cni::cni::config::valid_name(&n.value))
        .and(literal("name"))
        .map_or_else(|| quote(DEFAULT_LIST_NAME), str::to_string);
    let (start, end) = (obj.range.start, obj.range.end);
    let (lead, plugin, trail) = (&text[..start], &text[start..end], &text[end..]);
    let body = match indent_unit(text) {
        Some(u) => format!(
            "{{\n{u}\"cniVersion\": {version},\n{u}\"name\": {name},\n{u}\"plugins\": [\n{plugin},\n{}\n{u}]\n}}",
            entry.render(Some(u), "")
        ),
        None => format!(
            "{{\"cniVersion\":{version},\"name\":{name},\"plugins\":[{plugin},{}]}}",
            entry.render(None, "")
        ),
    };
    Ok(format!("{lead}{body}{trail}"))
}

/// Whether a CNI version (`major.minor.patch`) is 0.3.0 or later.
fn chains(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), Some(Ok(_)), None) => (major, minor) >= (0, 3),
        _ => false,
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The strict syntax tree (the text already passed serde_json, so this only
/// fails on a bug; the error is still reported, never unwrapped).
fn syntax(text: &str) -> Result<ast::Value<'_>, String> {
    let strict = ParseOptions {
        allow_comments: false,
        allow_loose_object_property_names: false,
        allow_trailing_commas: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    let parsed = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &strict)
        .map_err(|e| format!("not valid JSON: {e}"))?;
    parsed.value.ok_or_else(|| "empty file".to_string())
}

fn plugins_array<'t, 'a>(root: &'t ast::Value<'a>) -> Result<&'t Array<'a>, String> {
    let obj: &Object = root.as_object().ok_or("not a JSON object")?;
    // Go's map decoding keeps the last of duplicate keys; so do we.
    let prop = obj
        .properties
        .iter()
        .rev()
        .find(|p| p.name.as_str() == "plugins")
        .ok_or("error reading plugin list: no \"plugins\" key")?;
    prop.value
        .as_array()
        .ok_or_else(|| "error reading plugin list: \"plugins\" is not an array".to_string())
}

fn is_our_node(v: &ast::Value) -> bool {
    v.as_object()
        .and_then(|o| o.properties.iter().rev().find(|p| p.name.as_str() == "type"))
        .and_then(|p| p.value.as_string_lit())
        .is_some_and(|s| s.value == PLUGIN_TYPE)
}

/// The file's indent unit: the leading whitespace of its first indented
/// line; None for a one-line file.
fn indent_unit(text: &str) -> Option<&str> {
    text.split('\n').skip(1).find_map(|line| {
        let ws = line.len() - line.trim_start_matches([' ', '\t']).len();
        (ws > 0 && ws < line.len()).then(|| &line[..ws])
    })
}

/// The leading whitespace of the line holding byte `at`.
fn line_indent(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InstallSettings;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: InstallSettings,
    }

    fn entry() -> Entry {
        let s = Cli::try_parse_from(["t", "--exclude-namespaces", "kube-system"])
            .unwrap()
            .s;
        Entry::build(&s, "info", true).unwrap()
    }

    #[test]
    fn append_then_remove_is_byte_exact() {
        let texts = [
            "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"plugins\":[{\"type\":\"ptp\",\"mtu\":1.50e3}]}",
            "{\n    \"name\": \"n\",\n    \"plugins\": [\n        {\"type\": \"a\"},\n        {\"type\": \"b\"}\n    ]\n}\n",
            "{\n\t\"name\": \"n\",\n\t\"plugins\": [ {\"type\": \"a\"}, {\"type\": \"b\"} ]\n}",
            "{\"name\":\"n\",\"plugins\":[\n  {\"type\":\"a\"}\n]}",
        ];
        for t in texts {
            let once = insert(t, &entry()).unwrap();
            assert_eq!(insert(&once, &entry()).unwrap(), once, "idempotent: {once}");
            let (back, n) = remove_ours(&once).unwrap();
            assert_eq!((back.as_str(), n), (t, 1), "{once}");
            let (v, _) = parse(&once).unwrap();
            let list = plugins(&v).unwrap();
            assert_eq!(list.last().unwrap(), &entry().to_value());
        }
    }

    #[test]
    fn every_istio_entry_is_replaced_wherever_it_sits() {
        let t = "{\"name\":\"n\",\"plugins\":[{\"type\":\"istio-cni\",\"log_level\":\"debug\"},{\"type\":\"a\"},{\"type\":\"istio-cni\"},{\"type\":\"istio-cni\"}]}";
        let (without, n) = remove_ours(t).unwrap();
        assert_eq!(n, 3);
        assert_eq!(without, "{\"name\":\"n\",\"plugins\":[{\"type\":\"a\"}]}");
        let only = "{\"name\":\"n\",\"plugins\": [ {\"type\":\"istio-cni\"} ]}";
        assert_eq!(remove_ours(only).unwrap().0, "{\"name\":\"n\",\"plugins\": []}");
        let refilled = insert(only, &entry()).unwrap();
        assert!(
            refilled.starts_with("{\"name\":\"n\",\"plugins\": [{\"name\":\"istio-cni\""),
            "{refilled}"
        );
    }

    #[test]
    fn single_conf_is_wrapped_verbatim() {
        let t = "{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"mynet\",\n  \"type\": \"bridge\",\n  \"mtu\": 1e3\n}\n";
        let out = insert(t, &entry()).unwrap();
        assert!(out.contains(t.trim_end()), "{out}");
        assert!(out.starts_with("{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"mynet\",\n  \"plugins\": [\n{"));
        assert!(out.ends_with("\n  ]\n}\n"), "{out}");
        let (v, shape) = parse(&out).unwrap();
        assert_eq!(shape, Shape::List);
        assert_eq!(plugins(&v).unwrap().len(), 2);
        for (conf, want) in [
            (
                "{\"cniVersion\":\"0.2.0\",\"name\":\"my net\",\"type\":\"bridge\"}",
                "{\"cniVersion\":\"0.3.1\",\"name\":\"k8s-pod-network\",",
            ),
            (
                "{\"cniVersion\":\"1.1.0\",\"name\":\"a_b\",\"type\":\"bridge\"}",
                "{\"cniVersion\":\"1.1.0\",\"name\":\"a_b\",",
            ),
            (
                "{\"cniVersion\":\"\\u0030.4.0\",\"name\":\"n\",\"type\":\"bridge\"}",
                "{\"cniVersion\":\"\\u0030.4.0\",\"name\":\"n\",",
            ),
        ] {
            let out = insert(conf, &entry()).unwrap();
            assert!(out.starts_with(want), "{out}");
        }
        let bare = "{\"type\":\"bridge\"}";
        let out = insert(bare, &entry()).unwrap();
        assert!(
            out.starts_with(
                "{\"cniVersion\":\"0.3.1\",\"name\":\"k8s-pod-network\",\"plugins\":[{\"type\":\"bridge\"},{"
            ),
            "{out}"
        );
    }

    #[test]
    fn bad_input_is_refused() {
        for (t, want) in [
            ("[]", "not a JSON object"),
            ("{\"name\":\"x\"}", "no \"plugins\" key"),
            ("{\"plugins\":{}}", "not an array"),
            ("{\"plugins\":[1]}", "plugin 0 is not an object"),
            ("{\"plugins\":[],}", "not valid JSON"),
            ("{\"type\":\"istio-cni\"}", "istio-cni config itself"),
        ] {
            let err = insert(t, &entry()).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
    }
}
