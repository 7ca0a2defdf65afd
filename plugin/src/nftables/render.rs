//! Formats a rule plan as one `nft -f` transaction in Istio's shape
//! (docs/plugin.md#nftables): per `inet` table, `add table`,
//! `flush table` (which makes a re-run idempotent), the chains that have
//! rules in a fixed order, then the rules in plan order.

use crate::capture::CaptureConfig;
use crate::rules::{Chain, Position, Rule, Table, plan};

/// Chains of each table in declaration order, with the base-chain hook spec.
fn chains(table: Table) -> &'static [(Chain, Option<&'static str>)] {
    use Chain::*;
    match table {
        Table::Nat => &[
            (Prerouting, Some("type nat hook prerouting priority -100")),
            (Output, Some("type nat hook output priority -100")),
            (IstioInbound, None),
            (IstioRedirect, None),
            (IstioInRedirect, None),
            (IstioOutput, None),
            (IstioOutputDns, None),
        ],
        Table::Mangle => &[
            (Prerouting, Some("type filter hook prerouting priority -150")),
            (Output, Some("type route hook output priority -150")),
            (IstioDivert, None),
            (IstioTproxy, None),
            (IstioInbound, None),
            (IstioDrop, None),
        ],
        Table::Raw => &[
            (Prerouting, Some("type filter hook prerouting priority -300")),
            (Output, Some("type filter hook output priority -300")),
            (IstioInbound, None),
            (IstioOutputDns, None),
        ],
    }
}

/// Renders the nftables transaction for a configuration.
pub fn render(cfg: &CaptureConfig) -> String {
    transaction_text(&plan(cfg))
}

/// The transaction text for a plan (IPv6 rules are already in or out of it).
pub fn transaction_text(rules: &[Rule]) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        let rules: Vec<(&Rule, &str)> = rules
            .iter()
            .filter(|r| r.table == table)
            .filter_map(|r| r.nft.as_deref().map(|e| (r, e)))
            .collect();
        if rules.is_empty() {
            continue;
        }
        let t = table.nft();
        out.push_str(&format!("add table inet {t}\nflush table inet {t}\n"));
        for (chain, hook) in chains(table) {
            if !rules.iter().any(|(r, _)| r.chain == *chain) {
                continue;
            }
            match hook {
                Some(spec) => out.push_str(&format!("add chain inet {t} {} {{ {spec} ; }}\n", chain.nft())),
                None => out.push_str(&format!("add chain inet {t} {}\n", chain.nft())),
            }
        }
        let mut counts: Vec<(Chain, u32)> = Vec::new();
        for (rule, expr) in rules {
            let count = match counts.iter_mut().find(|(c, _)| *c == rule.chain) {
                Some((_, n)) => n,
                None => {
                    counts.push((rule.chain, 0));
                    &mut counts.last_mut().expect("just pushed").1
                }
            };
            let c = rule.chain.nft();
            match rule.position {
                // An insert beyond the rules already emitted is an append.
                Position::Insert(n) if n - 1 < *count => {
                    out.push_str(&format!("insert rule inet {t} {c} index {} {expr}\n", n - 1));
                }
                _ => out.push_str(&format!("add rule inet {t} {c} {expr}\n")),
            }
            *count += 1;
        }
    }
    out
}
