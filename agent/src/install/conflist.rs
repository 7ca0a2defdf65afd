//! Span-exact edits of a CNI config's text, without Istio's
//! re-serialization. The file is validated as strict JSON (serde_json, as
//! strict as Go's `encoding/json`), then edited by byte ranges from a syntax
//! tree: every byte we do not insert or remove stays as it was — key order,
//! whitespace, number spelling, escapes, the primary's cniVersion. Istio
//! instead re-sorts keys and re-prints numbers through f64.
//!
//! Appending and removing are inverse operations on the plugin array:
//! - append inserts `<separator><entry>` right after the last plugin, the
//!   separator copied from between the last two plugins (`,` and the gap
//!   after `[` for a lone plugin); into an empty array the entry alone goes
//!   after the first line break and its indentation, else right after `[`;
//! - remove cuts an entry with the separator before it (after it, for the
//!   first plugin), or the entry alone when it is the only plugin.
//!
//! The layout of the entry (one line or pretty, margin, indent unit, line
//! ending) is decided from the text without our entry, so removal undoes
//! insertion byte for byte and installing twice equals installing once.
//! Tree lookups decode escaped keys and take the last of duplicate keys,
//! as serde_json and Go do, so both views agree on what the file means.

use jsonc_parser::ast::{self, Array, Object, StringLit};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};
use serde_json::Value;

use super::entry::{Entry, PLUGIN_TYPE};

/// The list name Istio gives a converted `.conf` that has none.
pub const DEFAULT_LIST_NAME: &str = "k8s-pod-network";
/// The list version when the `.conf` has none: the first with chaining (prevResult).
pub const DEFAULT_LIST_VERSION: &str = "0.3.1";
/// The nesting unit when a pretty file has no indented line to copy.
const FALLBACK_UNIT: &str = "  ";

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
            wrap(text, entry)
        }
        Shape::List => {
            plugins(&value)?;
            let (without, _) = cut_ours(text)?;
            append(&without, entry)
        }
    }
}

/// Removes every istio-cni plugin (any Istio version's format) by span.
/// Returns the text and how many were removed; a single plugin (`.conf`
/// form) has no list to remove from and is returned as it is. Text that is
/// not a valid conflist is refused, never edited.
pub fn remove_ours(text: &str) -> Result<(String, usize), String> {
    let (value, shape) = parse(text)?;
    if shape == Shape::Single {
        return Ok((text.to_string(), 0));
    }
    plugins(&value)?;
    cut_ours(text)
}

/// The span removal of [`remove_ours`] on text already checked to be a
/// conflist, in one parse (a file holding thousands of entries must not
/// cost thousands of parses). The cuts are those of removing the entries
/// one at a time, first to last: an entry goes with the text back to the
/// end of the last plugin kept before it; with no plugin kept before it, with
/// the text up to the next plugin; alone when nothing is left around it.
fn cut_ours(text: &str) -> Result<(String, usize), String> {
    let root = syntax(text)?;
    let el = &plugins_array(&root)?.elements;
    let mut cuts: Vec<std::ops::Range<usize>> = Vec::new();
    let mut kept_end = None;
    for (i, node) in el.iter().enumerate() {
        if !is_our_node(node) {
            kept_end = Some(node.end());
            continue;
        }
        let cut = match (kept_end, el.get(i + 1)) {
            (Some(end), _) => end..node.end(),
            (None, Some(next)) => node.start()..next.start(),
            (None, None) => node.start()..node.end(),
        };
        // Cuts only grow rightwards; one reaching back over the previous
        // one (an entry after others already cut) absorbs it.
        while cuts.last().is_some_and(|c| c.start >= cut.start) {
            cuts.pop();
        }
        cuts.push(cut);
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for cut in &cuts {
        out.push_str(&text[from..cut.start.max(from)]);
        from = from.max(cut.end);
    }
    out.push_str(&text[from..]);
    let removed = el.iter().filter(|n| is_our_node(n)).count();
    Ok((out, removed))
}

/// Appends our entry after the last plugin, laid out like its neighbours.
/// `text` holds no istio-cni entry.
fn append(text: &str, entry: &Entry) -> Result<String, String> {
    let root = syntax(text)?;
    let array = plugins_array(&root)?;
    let open = array.range.start + 1;
    let (at, separator, pretty) = match array.elements.as_slice() {
        [] => {
            let inner = &text[open..array.range.end - 1];
            let at = inner
                .find('\n')
                .map_or(0, |nl| nl + 1 + indentation(&inner[nl + 1..]).len());
            (open + at, String::new(), indent_unit(text).is_some())
        }
        [only] => {
            let gap = &text[open..only.start()];
            (only.end(), format!(",{gap}"), gap.contains('\n'))
        }
        [.., prev, last] => {
            let between = &text[prev.end()..last.start()];
            (last.end(), between.to_string(), between.contains('\n'))
        }
    };
    let mut out = String::with_capacity(text.len() + 1024);
    out.push_str(&text[..at]);
    out.push_str(&separator);
    let rendered = if pretty {
        // The margin is the indentation of the line the entry starts on
        // (never the separator's comma); the line ending is the one ending
        // the line before it.
        let margin = line_indent(&out, out.len());
        let eol = line_ending(&out).or_else(|| first_line_ending(text)).unwrap_or("\n");
        let unit = indent_unit(text).unwrap_or(FALLBACK_UNIT);
        entry.render(Some(unit), "").replace('\n', &format!("{eol}{margin}"))
    } else {
        entry.render(None, "")
    };
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
///
/// The wrapper is laid out so that [`insert`] on the result gives the result
/// again: pretty with the file's indent unit and line ending when the file
/// has an indented line, else on the plugin's lines.
pub fn wrap_single(text: &str, entry: &Entry) -> Result<String, String> {
    parse(text)?;
    wrap(text, entry)
}

/// [`wrap_single`] on text already checked to be a JSON object.
fn wrap(text: &str, entry: &Entry) -> Result<String, String> {
    let root = syntax(text)?;
    let obj = root.as_object().ok_or("not a JSON object")?;
    let literal = |s: &StringLit| -> Option<String> {
        (!s.value.is_empty()).then(|| text[s.range.start..s.range.end].to_string())
    };
    // Chaining (prevResult) starts at 0.3.0: an older or unreadable version
    // would leave our plugin without the primary's result.
    let version = string_prop(obj, "cniVersion")
        .filter(|v| chains(&v.value))
        .and_then(literal)
        .unwrap_or_else(|| quote(DEFAULT_LIST_VERSION));
    // The list's name reaches every plugin, ours included, which rejects
    // names a container ID could not have.
    let name = string_prop(obj, "name")
        .filter(|n| istio_cni::cni::config::valid_name(&n.value))
        .and_then(literal)
        .unwrap_or_else(|| quote(DEFAULT_LIST_NAME));
    let (start, end) = (obj.range.start, obj.range.end);
    let (lead, plugin, trail) = (&text[..start], &text[start..end], &text[end..]);
    let body = match indent_unit(text) {
        Some(u) => {
            let nl = first_line_ending(text).unwrap_or("\n");
            let ours = entry.render(Some(u), "").replace('\n', nl);
            format!(
                "{{{nl}{u}\"cniVersion\": {version},{nl}{u}\"name\": {name},{nl}{u}\"plugins\": [{nl}{plugin},{nl}{ours}{nl}{u}]{nl}}}"
            )
        }
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

/// The strict syntax tree. Callers have run [`parse`] first: the tree parser
/// also takes what Go refuses (Unicode whitespace, vertical tabs), so it
/// must never be the only judge of the text.
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

/// The value of the last property named `name` (names compared decoded).
fn prop<'t, 'a>(obj: &'t Object<'a>, name: &str) -> Option<&'t ast::Value<'a>> {
    obj.properties
        .iter()
        .rev()
        .find(|p| p.name.as_str() == name)
        .map(|p| &p.value)
}

fn string_prop<'t, 'a>(obj: &'t Object<'a>, name: &str) -> Option<&'t StringLit<'a>> {
    prop(obj, name).and_then(ast::Value::as_string_lit)
}

fn plugins_array<'t, 'a>(root: &'t ast::Value<'a>) -> Result<&'t Array<'a>, String> {
    let obj: &Object = root.as_object().ok_or("not a JSON object")?;
    prop(obj, "plugins")
        .ok_or("error reading plugin list: no \"plugins\" key")?
        .as_array()
        .ok_or_else(|| "error reading plugin list: \"plugins\" is not an array".to_string())
}

fn is_our_node(v: &ast::Value) -> bool {
    v.as_object()
        .and_then(|o| string_prop(o, "type"))
        .is_some_and(|s| s.value == PLUGIN_TYPE)
}

/// The file's indent unit: the indentation of its first indented line that
/// holds more than whitespace; None for a file without one.
fn indent_unit(text: &str) -> Option<&str> {
    text.split('\n').skip(1).find_map(|line| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let ws = indentation(line);
        (!ws.is_empty() && ws.len() < line.len()).then_some(ws)
    })
}

/// The leading spaces and tabs of `s`.
fn indentation(s: &str) -> &str {
    &s[..s.len() - s.trim_start_matches([' ', '\t']).len()]
}

/// The indentation of the line holding byte `at`.
fn line_indent(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    indentation(&text[start..])
}

/// How the last line of `text` before the end was ended.
fn line_ending(text: &str) -> Option<&'static str> {
    text.rfind('\n').map(|i| ending_at(text, i))
}

/// How the first line of `text` is ended.
fn first_line_ending(text: &str) -> Option<&'static str> {
    text.find('\n').map(|i| ending_at(text, i))
}

fn ending_at(text: &str, newline: usize) -> &'static str {
    if text[..newline].ends_with('\r') { "\r\n" } else { "\n" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InstallSettings;

    fn entry() -> Entry {
        let s = InstallSettings::from_flags(&["--exclude-namespaces", "kube-system"]);
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
        // A lone entry goes alone: the whitespace around it is the list's.
        let only = "{\"name\":\"n\",\"plugins\": [ {\"type\":\"istio-cni\"} ]}";
        assert_eq!(remove_ours(only).unwrap().0, "{\"name\":\"n\",\"plugins\": [  ]}");
        let refilled = insert(only, &entry()).unwrap();
        assert!(
            refilled.starts_with("{\"name\":\"n\",\"plugins\": [{\"name\":\"istio-cni\""),
            "{refilled}"
        );
        assert!(refilled.ends_with("}  ]}"), "{refilled}");
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

    /// Checks the splice's contract on one text with no istio-cni entry.
    fn round_trips(t: &str) -> String {
        let once = insert(t, &entry()).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        let (v, _) = parse(&once).unwrap_or_else(|e| panic!("{once:?}: {e}"));
        assert_eq!(plugins(&v).unwrap().last(), Some(&entry().to_value()), "{once:?}");
        assert_eq!(insert(&once, &entry()).unwrap(), once, "idempotent: {once:?}");
        assert_eq!(remove_ours(&once).unwrap(), (t.to_string(), 1), "{once:?}");
        once
    }

    #[test]
    fn comma_first_lists_stay_valid() {
        // The separator `\n    ,` used to be the margin of every entry line.
        round_trips(
            "{\n    \"name\": \"k8s\",\n    \"plugins\": [\n        {\"type\": \"ptp\"}\n        ,{\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}\n    ]\n}\n",
        );
        round_trips("{\"name\":\"n\",\"plugins\":[ {\"type\":\"a\"}\n,\n\t{\"type\":\"b\"}\n  , {\"type\":\"c\"} ]}");
    }

    #[test]
    fn empty_plugin_lists_round_trip_in_every_spacing() {
        for inner in ["", " ", "\n", "\n  ", "\n    \n  ", "\r\n\t", " \t\r\n \n"] {
            for file in [
                format!("{{\"name\":\"n\",\"plugins\":[{inner}]}}"),
                format!("{{\n  \"name\": \"n\",\n  \"plugins\": [{inner}]\n}}\n"),
                format!("{{\"plugins\": [{inner}],\n\t\"name\": \"n\"}}"),
            ] {
                round_trips(&file);
            }
        }
    }

    #[test]
    fn layout_follows_the_neighbours() {
        // CRLF files get CRLF lines; margins are spaces and tabs only.
        let crlf = "{\r\n  \"name\": \"n\",\r\n  \"plugins\": [\r\n    {\"type\": \"a\"}\r\n  ]\r\n}\r\n";
        let out = round_trips(crlf);
        assert_eq!(out.matches('\n').count(), out.matches("\r\n").count(), "{out:?}");
        assert!(out.contains("\r\n    {\r\n      \"name\": \"istio-cni\""), "{out:?}");
        let odd = "{\"name\":\"n\",\"plugins\":[\n \r {\"type\":\"a\"}]}";
        let out = round_trips(odd);
        let ours = &out[out.find("\"istio-cni\"").unwrap()..];
        assert!(!ours.contains('\r'), "{out:?}");
    }

    #[test]
    fn duplicate_keys_are_read_as_go_reads_them() {
        // Go keeps the last of duplicate keys: the list's version and name
        // must be the ones the primary plugin was running with.
        let conf =
            "{\"cniVersion\":\"0.2.0\",\"name\":\"old\",\"type\":\"bridge\",\"cniVersion\":\"1.0.0\",\"name\":\"new\"}";
        let out = insert(conf, &entry()).unwrap();
        assert!(out.starts_with("{\"cniVersion\":\"1.0.0\",\"name\":\"new\","), "{out}");
        let (v, _) = parse(&out).unwrap();
        assert_eq!(
            (v["cniVersion"].as_str(), v["name"].as_str()),
            (Some("1.0.0"), Some("new"))
        );
        let list = "{\"plugins\":[{\"type\":\"istio-cni\"}],\"name\":\"n\",\"plugins\":[{\"type\":\"a\",\"type\":\"istio-cni\"},{\"type\":\"istio-cni\",\"type\":\"b\"}]}";
        let (without, n) = remove_ours(list).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            without,
            "{\"plugins\":[{\"type\":\"istio-cni\"}],\"name\":\"n\",\"plugins\":[{\"type\":\"istio-cni\",\"type\":\"b\"}]}"
        );
    }

    #[test]
    fn escaped_keys_mean_what_they_decode_to() {
        let t = "{\"pl\\u0075gins\":[{\"\\u0074ype\":\"istio\\u002dcni\"},{\"type\":\"a\"}]}";
        assert_eq!(
            remove_ours(t).unwrap(),
            ("{\"pl\\u0075gins\":[{\"type\":\"a\"}]}".to_string(), 1)
        );
        let single = "{\"\\u0074ype\":\"bridge\",\"cni\\u0056ersion\":\"0.4.0\"}";
        assert_eq!(parse(single).unwrap().1, Shape::Single);
        let out = insert(single, &entry()).unwrap();
        assert!(out.starts_with("{\"cniVersion\":\"0.4.0\","), "{out}");
    }

    #[test]
    fn removal_refuses_what_go_would_refuse() {
        // The tree parser accepts comments and Unicode whitespace; an
        // uninstall must not edit a file that is not strict JSON.
        for t in [
            "{\"plugins\":[{\"type\":\"istio-cni\"}]\u{a0}}",
            "{\"plugins\":[{\"type\":\"istio-cni\"}]\u{c}}",
            "{\"plugins\":[{\"type\":\"istio-cni\"} // ours\n]}",
            "{\"plugins\":[{\"type\":\"istio-cni\"}, {\"type\":\"a\"},]}",
        ] {
            let err = remove_ours(t).unwrap_err();
            assert!(err.contains("not valid JSON"), "{t:?}: {err}");
            assert!(insert(t, &entry()).unwrap_err().contains("not valid JSON"), "{t:?}");
        }
        assert_eq!(remove_ours("{\"type\":\"bridge\"}").unwrap().1, 0);
        assert!(wrap_single("{\"type\":\"bridge\"}\u{a0}", &entry()).is_err());
        // Nor a list whose plugins are not all objects.
        let err = remove_ours("{\"plugins\":[[], {\"type\":\"istio-cni\"}]}").unwrap_err();
        assert!(err.contains("plugin 0 is not an object"), "{err}");
    }

    #[test]
    fn thousands_of_entries_cost_one_parse() {
        // Removing one entry per parse made this quadratic: minutes for a
        // file well under the 4 MiB a config may have.
        let many = vec!["{\"type\":\"istio-cni\"}"; 20_000].join(",\n  ");
        let t = format!("{{\"name\":\"n\",\"plugins\":[\n  {{\"type\":\"a\"}},\n  {many},\n  {{\"type\":\"b\"}}\n]}}");
        let started = std::time::Instant::now();
        let (without, n) = remove_ours(&t).unwrap();
        assert_eq!(n, 20_000);
        assert_eq!(
            without,
            "{\"name\":\"n\",\"plugins\":[\n  {\"type\":\"a\"},\n  {\"type\":\"b\"}\n]}"
        );
        let limit = std::time::Duration::from_secs(20);
        assert!(started.elapsed() < limit, "{:?}", started.elapsed());
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
