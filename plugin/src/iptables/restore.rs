//! Formats a rule plan as `iptables-restore` input, exactly as Istio's
//! builder does (docs/plugin.md#restore-format): per table, the `-N`
//! lines for chains in order of first use, then for jump targets, then the
//! rules; tables sorted by name, each closed by `COMMIT`.

use std::collections::{BTreeMap, HashSet};

use crate::rules::{Family, Position, Rule};

const BUILT_IN: [&str; 8] = [
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "RETURN",
    "DROP",
];

/// The restore text for one family (`V4` or `V6`) of a plan.
pub fn restore_text(rules: &[Rule], family: Family) -> String {
    let rules: Vec<(&Rule, &str)> = rules
        .iter()
        .filter(|r| r.family == Family::Both || r.family == family)
        .filter_map(|r| r.iptables.as_deref().map(|p| (r, p)))
        .collect();

    let mut tables: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut declared: HashSet<(&'static str, String)> = HashSet::new();
    let mut declare = |tables: &mut BTreeMap<&'static str, Vec<String>>, table: &'static str, chain: &str| {
        let lines = tables.entry(table).or_default();
        if !BUILT_IN.contains(&chain) && declared.insert((table, chain.to_string())) {
            lines.push(format!("-N {chain}"));
        }
    };
    for (rule, _) in &rules {
        declare(&mut tables, rule.table.iptables(), rule.chain.iptables());
    }
    for (rule, params) in &rules {
        let words: Vec<&str> = params.split(' ').collect();
        if let [.., "-j", target] = words.as_slice() {
            declare(&mut tables, rule.table.iptables(), target);
        }
    }
    for (rule, params) in &rules {
        let chain = rule.chain.iptables();
        let line = match rule.position {
            Position::Append => format!("-A {chain} {params}"),
            Position::Insert(n) => format!("-I {chain} {n} {params}"),
        };
        tables.entry(rule.table.iptables()).or_default().push(line);
    }

    let mut out = String::new();
    for (table, lines) in tables {
        out.push_str("* ");
        out.push_str(table);
        out.push('\n');
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}
