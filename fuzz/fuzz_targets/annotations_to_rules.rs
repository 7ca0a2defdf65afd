#![no_main]
//! A pod manifest (YAML or JSON, as `istio-cni render -f` reads it) through
//! the plugin's pipeline: pod → decision → redirect → capture config →
//! iptables-restore text (IPv4, IPv6) and the nftables transaction, on two
//! node environments (Istio's defaults, and an owner-group exclusion).
//!
//! Invariants: no panic; a pod is either refused with an error naming the
//! annotation, or gets rules that are well-formed line by line: only table
//! headers, chain declarations, rules and COMMIT (iptables) or add/flush/
//! insert statements (nft), in a small character set, every option value
//! where it belongs. So nothing in an annotation, env value or uid can add a
//! line, a word or a character to the rules. `render_manifest` agrees.

use istio_cni::capture::{CaptureConfig, NodeEnv};
use istio_cni::cli::{Backend, RenderOptions, render_manifest};
use istio_cni::pod::{Decision, decide, load_pods};
use istio_cni::redirect::{Prefix, Redirect};
use istio_cni::{iptables, nftables};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pods) = load_pods(manifest) else {
        return;
    };
    for node in nodes() {
        let mut all_ok = true;
        for wp in &pods {
            if decide(&wp.pod) != Decision::Redirect {
                continue;
            }
            let redirect = match Redirect::from_pod(&wp.pod) {
                Ok(r) => r,
                Err(e) => {
                    assert!(e.to_string().contains(e.key), "the error names the annotation: {e}");
                    all_ok = false;
                    continue;
                }
            };
            for ipv6 in [false, true] {
                let cfg = CaptureConfig::new(&redirect, &node, ipv6)
                    .unwrap_or_else(|e| panic!("a fixed node environment was refused: {e}"));
                let payload = iptables::render(&cfg);
                check_iptables(&payload.v4, Family::V4);
                assert_eq!(payload.v6.is_some(), ipv6, "IPv6 rules iff the netns has IPv6");
                if let Some(v6) = &payload.v6 {
                    check_iptables(v6, Family::V6);
                }
                check_nft(&nftables::render(&cfg));
            }
        }
        // The CLI renders the same pods: refused iff one of them was.
        for backend in [Backend::Iptables, Backend::Nftables] {
            let opts = RenderOptions {
                ipv6: true,
                backend,
                node: node.clone(),
            };
            match render_manifest(manifest, &opts) {
                Ok(out) => {
                    assert!(all_ok, "render accepted a pod the pipeline refused");
                    check_render_output(&out, backend);
                }
                Err(e) => assert!(!all_ok, "render refused what the pipeline accepted: {e}"),
            }
        }
    }
});

fn nodes() -> [NodeEnv; 2] {
    let lookup = |k: &str| (k == "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE").then(|| "java,202".to_string());
    [NodeEnv::default(), NodeEnv::from_lookup(lookup)]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Characters a rule line may hold: names, numbers, addresses, options.
fn rule_chars(line: &str, extra: &str) {
    if let Some(c) = line
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || " _./:,!=-".contains(c) || extra.contains(c)))
    {
        panic!("character {c:?} in a rule line: {line:?}");
    }
    assert!(!line.contains("  ") && !line.ends_with(' '), "empty word in {line:?}");
}

fn chain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
}

fn check_iptables(text: &str, family: Family) {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated payload: {text:?}"
    );
    let mut table: Option<&str> = None;
    for line in text.lines() {
        rule_chars(line, "*");
        if let Some(name) = line.strip_prefix("* ") {
            assert!(table.is_none(), "table {name} opened inside {table:?}");
            assert!(["nat", "mangle", "raw", "filter"].contains(&name), "table {name:?}");
            table = Some(name);
            continue;
        }
        assert!(table.is_some(), "line outside a table: {line:?}");
        if line == "COMMIT" {
            table = None;
            continue;
        }
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["-N", chain] => assert!(chain_name(chain), "{line:?}"),
            ["-A", chain, params @ ..] => {
                assert!(chain_name(chain), "{line:?}");
                check_params(params, family, line);
            }
            ["-I", chain, index, params @ ..] => {
                assert!(
                    chain_name(chain) && index.parse::<u32>().is_ok_and(|i| i > 0),
                    "{line:?}"
                );
                check_params(params, family, line);
            }
            _ => panic!("not a chain declaration, rule or COMMIT: {line:?}"),
        }
    }
    assert!(table.is_none(), "table {table:?} not committed: {text}");
}

/// The words of one iptables rule: every option that takes a value has one
/// of the right kind (a port, a prefix of the family, an interface, an id).
fn check_params(params: &[&str], family: Family, line: &str) {
    assert!(!params.is_empty(), "rule without parameters: {line:?}");
    let mut words = params.iter();
    while let Some(&word) = words.next() {
        let mut value = || {
            *words
                .next()
                .unwrap_or_else(|| panic!("{word} without a value: {line:?}"))
        };
        match word {
            "-p" => assert!(["tcp", "udp"].contains(&value()), "{line:?}"),
            "--dport" | "--sport" | "--to-ports" | "--to-port" | "--on-port" => {
                let v = value();
                assert!(v.parse::<u16>().is_ok(), "{word} {v:?}: {line:?}");
            }
            "--dports" | "--sports" => {
                let v = value();
                assert!(v.split(',').all(|p| p.parse::<u16>().is_ok()), "{word} {v:?}: {line:?}");
            }
            "--zone" => {
                let v = value();
                assert!(v.parse::<u16>().is_ok(), "{word} {v:?}: {line:?}");
            }
            "-d" | "-s" => {
                let v = value();
                let prefix: Prefix = v.parse().unwrap_or_else(|e| panic!("{word} {v:?}: {e}: {line:?}"));
                assert_eq!(
                    prefix.is_v4(),
                    family == Family::V4,
                    "{word} {v} in the wrong family: {line:?}"
                );
            }
            "-i" | "-o" => {
                let v = value();
                let ok = v.len() <= 15 && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                assert!(ok, "{word} {v:?} is not an interface: {line:?}");
            }
            "--uid-owner" => {
                let v = value();
                assert!(v.parse::<u32>().is_ok(), "--uid-owner {v:?} is not a uid: {line:?}");
            }
            "--gid-owner" => {
                let v = value();
                let group = v.parse::<u32>().is_ok() || ["java", "202"].contains(&v);
                assert!(group, "--gid-owner {v:?} is not a gid: {line:?}");
            }
            "-j" | "-m" | "--state" | "--ctstate" | "--set-xmark" | "--set-mark" | "--mark" | "--tproxy-mark"
            | "--to-destination" => {
                let v = value();
                assert!(!v.starts_with('-'), "{word} {v:?}: {line:?}");
            }
            _ => assert!(word.starts_with('-') || word == "!", "stray word {word:?}: {line:?}"),
        }
    }
}

fn check_nft(text: &str) {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated transaction: {text:?}"
    );
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["add" | "flush", "table", "inet", table] => assert!(chain_name(table), "{line:?}"),
            ["add", "chain", "inet", table, chain, rest @ ..] => {
                assert!(chain_name(table) && chain_name(chain), "{line:?}");
                if !rest.is_empty() {
                    let spec = rest.join(" ");
                    assert!(spec.starts_with("{ type ") && spec.ends_with(" ; }"), "{line:?}");
                    rule_chars(&spec, "{};");
                }
            }
            ["add", "rule", "inet", table, chain, expr @ ..]
            | ["insert", "rule", "inet", table, chain, "index", _, expr @ ..] => {
                assert!(chain_name(table) && chain_name(chain) && !expr.is_empty(), "{line:?}");
                rule_chars(line, "{}");
                check_nft_expr(expr, line);
            }
            _ => panic!("not an nft statement: {line:?}"),
        }
    }
}

fn check_nft_expr(expr: &[&str], line: &str) {
    let mut words = expr.iter().copied().peekable();
    while let Some(key) = words.next() {
        if !["skuid", "skgid", "dport", "sport", "iifname", "oifname"].contains(&key) {
            continue;
        }
        words.next_if_eq(&"!=");
        let first = words
            .next()
            .unwrap_or_else(|| panic!("{key} without a value: {line:?}"));
        // One value, or an anonymous set `{ a, b }`.
        let mut values = vec![first];
        if first == "{" {
            values.clear();
            loop {
                match words.next() {
                    Some("}") => break,
                    Some(v) => values.push(v.strip_suffix(',').unwrap_or(v)),
                    None => panic!("unclosed set: {line:?}"),
                }
            }
            assert!(!values.is_empty(), "empty set: {line:?}");
        }
        for v in values {
            let ok = match key {
                "skuid" => v.parse::<u32>().is_ok(),
                "skgid" => v.parse::<u32>().is_ok() || ["java", "202"].contains(&v),
                "dport" | "sport" => v.parse::<u16>().is_ok(),
                _ => v.len() <= 15 && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
            };
            assert!(ok, "{key} {v:?}: {line:?}");
        }
    }
}

/// `istio-cni render` output: `#` comment lines between the payloads.
fn check_render_output(out: &str, backend: Backend) {
    let mut payload = String::new();
    let mut family = Family::V4;
    let flush = |payload: &mut String, family: Family| {
        match backend {
            Backend::Iptables => check_iptables(payload, family),
            Backend::Nftables => check_nft(payload),
        }
        payload.clear();
    };
    for line in out.lines() {
        if line.starts_with('#') {
            flush(&mut payload, family);
            family = if line == "# ip6tables-restore (IPv6)" {
                Family::V6
            } else {
                Family::V4
            };
            continue;
        }
        payload.push_str(line);
        payload.push('\n');
    }
    flush(&mut payload, family);
}
