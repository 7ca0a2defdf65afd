#![no_main]
//! The node agent's edit of the primary CNI config: `insert` our entry,
//! `remove_ours` on uninstall, on any text.
//!
//! Invariants (the splice's properties): text that is not a valid config
//! (strict JSON object; a list needs `plugins`, an array of objects) is
//! refused with an error. For a valid list, insert gives valid JSON whose
//! plugins are the original non-istio plugins then our entry, with every
//! other key unchanged; inserting again changes nothing; removing gives the
//! original bytes back when the original had no istio-cni entry (else the
//! original without its istio-cni entries, which insert then extends the
//! same way). A single plugin (`.conf`) is wrapped into a list that holds it
//! verbatim, then our entry; inserting again changes nothing.

use std::sync::OnceLock;

use clap::Parser;
use istio_cni_agent::config::InstallSettings;
use istio_cni_agent::install::conflist::{Shape, insert, parse, plugins, remove_ours};
use istio_cni_agent::install::entry::{Entry, is_ours};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: InstallSettings,
}

/// The entry as the agent builds it (chained, kube-system excluded).
fn entry() -> &'static Entry {
    static ENTRY: OnceLock<Entry> = OnceLock::new();
    ENTRY.get_or_init(|| {
        let cli = Cli::try_parse_from(["fuzz", "--exclude-namespaces", "kube-system"])
            .unwrap_or_else(|e| panic!("fixed settings: {e}"));
        Entry::build(&cli.settings, "info", true).unwrap_or_else(|e| panic!("fixed settings: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entry = entry();
    let inserted = insert(text, entry);
    // Uninstall runs on whatever the file holds: an answer, never a panic.
    let removed = remove_ours(text);
    let Ok((value, shape)) = parse(text) else {
        assert!(
            inserted.is_err(),
            "insert accepted text that is not a JSON object: {text:?}"
        );
        return;
    };
    if shape == Shape::Single {
        return check_single(text, &value, inserted);
    }
    let Ok(original) = plugins(&value) else {
        assert!(
            inserted.is_err(),
            "insert accepted a list without a valid plugins array: {text:?}"
        );
        return;
    };
    let once = inserted.unwrap_or_else(|e| panic!("insert refused a valid conflist: {e}\n{text}"));
    check_list(&once, &value, original, true);

    assert_eq!(
        insert(&once, entry).as_ref(),
        Ok(&once),
        "installing twice differs from once:\n{text}"
    );
    let (without, n) = removed.unwrap_or_else(|e| panic!("remove_ours refused a valid conflist: {e}\n{text}"));
    assert_eq!(
        n,
        original.iter().filter(|p| is_ours(p)).count(),
        "entries removed:\n{text}"
    );
    if n == 0 {
        assert_eq!(without, text, "removing nothing changed the text");
    }
    check_list(&without, &value, original, false);
    assert_eq!(
        remove_ours(&without),
        Ok((without.clone(), 0)),
        "a second removal changed:\n{text}"
    );
    assert_eq!(
        remove_ours(&once),
        Ok((without.clone(), 1)),
        "install then uninstall is not the original (less any old istio-cni entry):\n{text}\n---\n{once}"
    );
    assert_eq!(
        insert(&without, entry).as_ref(),
        Ok(&once),
        "insert depends on old istio-cni entries:\n{text}"
    );
});

/// `out` is valid JSON whose plugins are `original`'s non-istio ones (then
/// our entry when `with_entry`), every other key as in `value`.
fn check_list(out: &str, value: &Value, original: &[Value], with_entry: bool) {
    let (v, shape) = parse(out).unwrap_or_else(|e| panic!("the result is not valid ({e}):\n{out}"));
    assert_eq!(shape, Shape::List, "the result is not a list:\n{out}");
    let mut want: Vec<Value> = original.iter().filter(|p| !is_ours(p)).cloned().collect();
    if with_entry {
        want.push(entry().to_value());
    }
    let got = plugins(&v).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!(got, &want, "plugins differ:\n{out}");
    assert_eq!(others(&v), others(value), "keys besides plugins changed:\n{out}");
}

fn others(v: &Value) -> Map<String, Value> {
    let mut obj = v.as_object().cloned().unwrap_or_default();
    obj.remove("plugins");
    obj
}

fn check_single(text: &str, value: &Value, inserted: Result<String, String>) {
    if is_ours(value) {
        assert!(inserted.is_err(), "our own config was chained into:\n{text}");
        return;
    }
    let once = inserted.unwrap_or_else(|e| panic!("insert refused a valid single-plugin config: {e}\n{text}"));
    let (v, shape) = parse(&once).unwrap_or_else(|e| panic!("the wrapped config is not valid ({e}):\n{once}"));
    assert_eq!(shape, Shape::List, "{once}");
    let got = plugins(&v).unwrap_or_else(|e| panic!("{e}:\n{once}"));
    assert_eq!(got, &[value.clone(), entry().to_value()], "wrapped plugins:\n{once}");
    let verbatim = text.trim_matches([' ', '\t', '\n', '\r']);
    assert!(once.contains(verbatim), "the plugin is not kept verbatim:\n{once}");
    assert_eq!(
        insert(&once, entry()).as_ref(),
        Ok(&once),
        "installing twice differs:\n{once}"
    );
}
