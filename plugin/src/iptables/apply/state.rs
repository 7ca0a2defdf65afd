//! State verification (docs/plugin.md#state-verification): is the netns already programmed?
//!
//! Pure: parses `iptables-save` output and restore payloads into
//! table → chain → rules, and decides residue/delta. The only I/O, the
//! `iptables -C` check of an expected rule, is injected as a closure.

use std::collections::BTreeMap;

/// Tables that take part in verification.
const TABLES: [&str; 4] = ["filter", "nat", "mangle", "raw"];
/// Chains we own; only these are compared rule-for-rule.
const OWN_PREFIX: &str = "ISTIO";

/// One `-A`/`-I` rule line of a restore payload or save dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The table the rule belongs to.
    pub table: String,
    /// The chain it is added to.
    pub chain: String,
    /// The tokens of the line, starting with `-A`/`-I`.
    pub args: Vec<String>,
}

impl Rule {
    /// The arguments of the equivalent `iptables -t <table> …` check:
    /// `-A C x…` and `-I C [n] x…` both become `-C C x…`.
    pub fn check_args(&self) -> Vec<String> {
        to_check_args(&self.args).unwrap_or_default()
    }
}

/// Rewrites `-A`/`-I` rule tokens to `-C` tokens (`None` for other lines).
pub fn to_check_args(args: &[String]) -> Option<Vec<String>> {
    let (op, chain, rest) = match args {
        [op, chain, rest @ ..] => (op.as_str(), chain, rest),
        _ => return None,
    };
    let rest = match op {
        "-A" | "--append" => rest,
        "-I" | "--insert" => match rest {
            [n, tail @ ..] if n.parse::<u32>().is_ok() => tail,
            _ => rest,
        },
        _ => return None,
    };
    let mut out = vec!["-C".to_owned(), chain.clone()];
    out.extend(rest.iter().cloned());
    Some(out)
}

/// Parsed rules of one family: table → chain → rules (in file order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    tables: BTreeMap<String, BTreeMap<String, Vec<Rule>>>,
}

impl RuleSet {
    /// Parses `iptables-save` output or an `iptables-restore` payload.
    ///
    /// Only filter/nat/mangle/raw are read. `:ISTIO…` declarations and
    /// `-N ISTIO…` create (empty) chains; `-A`/`-I` lines are recorded under
    /// their chain. Built-in chain declarations without rules are ignored, so
    /// an instantiated-but-empty table parses as empty.
    pub fn parse(text: &str) -> Self {
        let mut set = Self::default();
        let mut table: Option<&str> = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                table = TABLES.iter().copied().find(|t| *t == name.trim());
                continue;
            }
            let Some(table) = table else { continue };
            if line == "COMMIT" || line.starts_with('#') {
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                set.declare_own(table, name);
                continue;
            }
            let args = tokenize(line);
            match args.first().map(String::as_str) {
                Some("-N" | "--new-chain") => {
                    if let Some(name) = args.get(1) {
                        set.declare_own(table, name);
                    }
                }
                Some("-A" | "--append" | "-I" | "--insert") if args.len() >= 2 => {
                    let chain = args[1].clone();
                    set.chain_mut(table, &chain).push(Rule {
                        table: table.to_owned(),
                        chain,
                        args,
                    });
                }
                _ => {}
            }
        }
        set
    }

    /// True when no chain was recorded.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(BTreeMap::is_empty)
    }

    /// All rules, table by table in name order, then chain, then file order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.tables.values().flat_map(|chains| chains.values().flatten())
    }

    fn declare_own(&mut self, table: &str, chain: &str) {
        if chain.starts_with(OWN_PREFIX) {
            self.chain_mut(table, chain);
        }
    }

    fn chain_mut(&mut self, table: &str, chain: &str) -> &mut Vec<Rule> {
        self.tables
            .entry(table.to_owned())
            .or_default()
            .entry(chain.to_owned())
            .or_default()
    }

    fn chain(&self, table: &str, chain: &str) -> Option<&Vec<Rule>> {
        self.tables.get(table).and_then(|t| t.get(chain))
    }
}

/// Verification outcome for one family (or combined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Something is already programmed in the netns.
    pub residue: bool,
    /// The netns differs from what we want (so the payload must be applied).
    pub delta: bool,
}

/// Decides residue/delta for one family.
///
/// `current` is `None` when the save failed (treated as no residue).
/// `check` runs `iptables -C` for one expected rule and returns whether it
/// passed; it is only called once all structural comparisons matched.
pub fn verify(current: Option<&RuleSet>, expected: &RuleSet, mut check: impl FnMut(&Rule) -> bool) -> Verdict {
    let Some(current) = current.filter(|c| !c.is_empty()) else {
        return Verdict {
            residue: false,
            delta: !expected.is_empty(),
        };
    };
    let delta = structural_delta(current, expected) || expected.rules().any(|r| !check(r));
    Verdict { residue: true, delta }
}

fn structural_delta(current: &RuleSet, expected: &RuleSet) -> bool {
    let missing_or_different = expected.tables.iter().any(|(table, chains)| {
        chains.iter().any(|(chain, rules)| match current.chain(table, chain) {
            None => true,
            Some(have) => chain.starts_with(OWN_PREFIX) && have.len() != rules.len(),
        })
    });
    let unexpected_own = current.tables.iter().any(|(table, chains)| {
        chains
            .keys()
            .any(|chain| chain.starts_with(OWN_PREFIX) && expected.chain(table, chain).is_none())
    });
    missing_or_different || unexpected_own
}

/// Combines per-family verdicts (docs/plugin.md#state-verification, across families).
///
/// Residue counts only for families that have planned rules; delta is any.
/// Without residue anywhere the answer is "apply" (`delta = true`).
pub fn combine(families: &[(Verdict, bool)]) -> Verdict {
    let residue = families.iter().any(|(v, planned)| v.residue && *planned);
    if !residue {
        return Verdict {
            residue: false,
            delta: true,
        };
    }
    Verdict {
        residue,
        delta: families.iter().any(|(v, _)| v.delta),
    }
}

/// Splits a rule line into arguments the way `iptables-restore` does:
/// whitespace-separated, with `"…"` grouping and `\"` escapes inside quotes.
pub fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            '\\' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_token {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: &str = "\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 on Tue Nov 24 20:25:37 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
# Completed on Tue Nov 24 20:25:37 2026
";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn parses_restore_payload_with_spaced_table_header() {
        let set = RuleSet::parse(EXPECTED);
        assert_eq!(set.rules().count(), 5);
        assert_eq!(set.chain("nat", "ISTIO_INBOUND").map(Vec::len), Some(1));
        assert_eq!(set.chain("nat", "PREROUTING").map(Vec::len), Some(1));
        assert!(set.chain("nat", "INPUT").is_none());
    }

    #[test]
    fn parses_save_output_ignoring_builtin_declarations_and_comments() {
        let set = RuleSet::parse(SAVED);
        assert_eq!(set.rules().count(), 5);
        assert!(set.chain("nat", "POSTROUTING").is_none());
        let empty = RuleSet::parse("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
        assert!(empty.is_empty());
    }

    #[test]
    fn ignores_other_tables() {
        let set = RuleSet::parse("*security\n:ISTIO_X - [0:0]\n-A OUTPUT -j ISTIO_X\nCOMMIT\n");
        assert!(set.is_empty());
    }

    #[test]
    fn empty_netns_means_apply() {
        let v = verify(Some(&RuleSet::default()), &RuleSet::parse(EXPECTED), |_| {
            panic!("no -C")
        });
        assert_eq!(
            v,
            Verdict {
                residue: false,
                delta: true
            }
        );
        let v = verify(None, &RuleSet::parse(EXPECTED), |_| panic!("no -C"));
        assert_eq!(
            v,
            Verdict {
                residue: false,
                delta: true
            }
        );
        let v = verify(None, &RuleSet::default(), |_| panic!("no -C"));
        assert_eq!(
            v,
            Verdict {
                residue: false,
                delta: false
            }
        );
    }

    #[test]
    fn already_programmed_is_residue_without_delta() {
        let mut checks = 0;
        let v = verify(Some(&RuleSet::parse(SAVED)), &RuleSet::parse(EXPECTED), |_| {
            checks += 1;
            true
        });
        assert_eq!(
            v,
            Verdict {
                residue: true,
                delta: false
            }
        );
        assert_eq!(checks, 5);
    }

    #[test]
    fn failing_check_is_delta() {
        let v = verify(Some(&RuleSet::parse(SAVED)), &RuleSet::parse(EXPECTED), |r| {
            r.chain != "OUTPUT"
        });
        assert_eq!(
            v,
            Verdict {
                residue: true,
                delta: true
            }
        );
    }

    #[test]
    fn structural_differences_are_delta_without_running_checks() {
        let expected = RuleSet::parse(EXPECTED);
        let no_checks = |_: &Rule| -> bool { panic!("structural delta must short-circuit") };
        // A partial ISTIO chain (rule count differs).
        let partial = SAVED.replace("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n", "");
        assert!(verify(Some(&RuleSet::parse(&partial)), &expected, no_checks).delta);
        // An expected chain missing entirely.
        let missing = "*nat\n:ISTIO_INBOUND - [0:0]\nCOMMIT\n";
        assert!(verify(Some(&RuleSet::parse(missing)), &expected, no_checks).delta);
        // An ISTIO chain that is not expected.
        let extra = SAVED.replace(
            ":ISTIO_REDIRECT - [0:0]\n",
            ":ISTIO_REDIRECT - [0:0]\n:ISTIO_DROP - [0:0]\n",
        );
        assert!(verify(Some(&RuleSet::parse(&extra)), &expected, no_checks).delta);
        // Foreign rules elsewhere are residue but every expected chain is missing.
        let foreign = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n";
        let v = verify(Some(&RuleSet::parse(foreign)), &expected, no_checks);
        assert_eq!(
            v,
            Verdict {
                residue: true,
                delta: true
            }
        );
    }

    #[test]
    fn combine_counts_residue_only_where_rules_are_planned() {
        let verdict = |residue, delta| Verdict { residue, delta };
        let clean = verdict(true, false);
        let stale_v6 = verdict(true, true);
        let none = verdict(false, true);
        assert_eq!(combine(&[(clean, true), (none, false)]), verdict(true, true));
        assert_eq!(combine(&[(clean, true), (clean, false)]), clean);
        assert_eq!(combine(&[(none, true), (stale_v6, false)]), verdict(false, true));
        assert_eq!(combine(&[(clean, true), (stale_v6, true)]), stale_v6);
    }

    #[test]
    fn rewrites_append_and_insert_to_check() {
        assert_eq!(
            to_check_args(&s(&["-A", "ISTIO_OUTPUT", "-o", "lo", "-j", "RETURN"])),
            Some(s(&["-C", "ISTIO_OUTPUT", "-o", "lo", "-j", "RETURN"]))
        );
        assert_eq!(
            to_check_args(&s(&["-I", "ISTIO_INBOUND", "2", "-p", "tcp", "-j", "RETURN"])),
            Some(s(&["-C", "ISTIO_INBOUND", "-p", "tcp", "-j", "RETURN"]))
        );
        assert_eq!(
            to_check_args(&s(&["-I", "PREROUTING", "-i", "eth1", "-j", "RETURN"])),
            Some(s(&["-C", "PREROUTING", "-i", "eth1", "-j", "RETURN"]))
        );
        assert_eq!(to_check_args(&s(&["-N", "ISTIO_X"])), None);
        assert_eq!(to_check_args(&s(&["-A"])), None);
    }

    #[test]
    fn tokenizes_quotes_like_restore() {
        assert_eq!(
            tokenize(r#"-A X -m comment --comment "a \"b\" c" -j RETURN"#),
            s(&["-A", "X", "-m", "comment", "--comment", r#"a "b" c"#, "-j", "RETURN"])
        );
        assert_eq!(tokenize("  -A   X  "), s(&["-A", "X"]));
        assert_eq!(tokenize(r#"--comment """#), s(&["--comment", ""]));
    }
}
