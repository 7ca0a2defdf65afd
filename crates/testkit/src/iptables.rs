//! Reading `iptables-save` text in tests.

/// The `-A` rules of `table` in an `iptables-save` text, chain by chain
/// (chains sorted by name), each chain's rules in order and without the
/// chain name.
pub fn rules_by_chain(text: &str, table: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            in_table = t.trim() == table;
        } else if in_table && let Some(rule) = line.strip_prefix("-A ") {
            let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
            match out.iter_mut().find(|(c, _)| c == chain) {
                Some((_, rules)) => rules.push(rest.to_string()),
                None => out.push((chain.to_string(), vec![rest.to_string()])),
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_group_by_chain_within_a_table() {
        let save = "*mangle\n-A OUTPUT -j M\nCOMMIT\n*nat\n-A OUTPUT -j ISTIO_OUTPUT\n-A ISTIO_OUTPUT -j X\n-A OUTPUT -j Y\nCOMMIT\n";
        assert_eq!(
            rules_by_chain(save, "nat"),
            [
                ("ISTIO_OUTPUT".to_string(), vec!["-j X".to_string()]),
                (
                    "OUTPUT".to_string(),
                    vec!["-j ISTIO_OUTPUT".to_string(), "-j Y".to_string()]
                )
            ]
        );
        assert!(rules_by_chain(save, "filter").is_empty());
    }
}
