//! The rendered `nft -f` transaction text, compiled to one nf_tables batch.
//!
//! Commands: `add table inet T`, `flush table inet T`, `add chain inet T C
//! [{ type X hook H priority P ; }]`, `add rule inet T C …` and `insert rule
//! inet T C [index N] …`. Inserts are resolved here: each chain's rules are
//! kept in their final order and sent as appends, which leaves the kernel
//! with the rule order `nft` would produce (handles, never listed, differ).
//! That needs the chain's contents to be known, so an insert is accepted
//! only into a table flushed earlier in the same transaction.
//!
//! Batch order: tables, flushes and chains in text order, then every
//! chain's rules (each preceded by its anonymous sets). The renderer writes
//! all chains and flushes before the rules, so this order is the text's.

use super::expr::{ANON_SET_NAME, Expr};
use super::names::Names;
use super::rule::{AnonSet, CompiledRule, L4, check_name, compile};
use super::wire::{Attrs, Batch, MsgType, NLM_F_APPEND, NLM_F_CREATE};

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub kind: String,
    pub hook: u32,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    AddTable(String),
    FlushTable(String),
    AddChain {
        table: String,
        chain: String,
        hook: Option<Hook>,
    },
}

/// One rule with where it came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    pub text: String,
    pub compiled: CompiledRule,
}

/// A chain's rules in final order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainRules {
    table: String,
    chain: String,
    rules: Vec<Rule>,
}

/// A compiled transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    ops: Vec<(usize, String, Op)>,
    chains: Vec<ChainRules>,
}

/// A line of the transaction that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} `{text}`: {reason}")]
pub struct CompileError {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// What a message of the batch does, for naming a failed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub seq: u32,
    /// The transaction line (1-based) and its text.
    pub line: usize,
    pub text: String,
}

impl Transaction {
    /// Compiles `text`; user and group names resolve through `names`.
    pub fn compile(text: &str, names: &mut Names) -> Result<Self, CompileError> {
        let mut tx = Transaction {
            ops: Vec::new(),
            chains: Vec::new(),
        };
        let mut flushed: Vec<String> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| CompileError {
                line: i + 1,
                text: line.to_string(),
                reason,
            };
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            let (cmd, family, table) = match words.as_slice() {
                [verb, obj, family, table, ..] => (format!("{verb} {obj}"), *family, *table),
                _ => return Err(err("incomplete command".into())),
            };
            if family != "inet" {
                return Err(err(format!("only the inet family is supported, not {family:?}")));
            }
            check_name(table).map_err(err)?;
            let rest = &words[4..];
            match cmd.as_str() {
                "add table" if rest.is_empty() => tx.ops.push((i + 1, line.into(), Op::AddTable(table.into()))),
                "flush table" if rest.is_empty() => {
                    if tx.chains.iter().any(|c| c.table == table) {
                        return Err(err("flush after rules of the same table is not supported".into()));
                    }
                    flushed.push(table.into());
                    tx.ops.push((i + 1, line.into(), Op::FlushTable(table.into())));
                }
                "add chain" => {
                    let (chain, spec) = rest.split_first().ok_or_else(|| err("chain name missing".into()))?;
                    check_name(chain).map_err(err)?;
                    let hook = if spec.is_empty() {
                        None
                    } else {
                        Some(hook(spec).map_err(err)?)
                    };
                    tx.ops.push((
                        i + 1,
                        line.into(),
                        Op::AddChain {
                            table: table.into(),
                            chain: (*chain).into(),
                            hook,
                        },
                    ));
                }
                "add rule" | "insert rule" => {
                    let (chain, mut stmts) = rest.split_first().ok_or_else(|| err("chain name missing".into()))?;
                    check_name(chain).map_err(err)?;
                    let insert_at = if cmd == "insert rule" {
                        if !flushed.iter().any(|t| t == table) {
                            return Err(err("insert into a table not flushed in this transaction".into()));
                        }
                        match stmts {
                            ["index", n, more @ ..] => {
                                stmts = more;
                                Some(
                                    n.parse::<usize>()
                                        .map_err(|_| err(format!("index {n:?} is not a number")))?,
                                )
                            }
                            _ => Some(0),
                        }
                    } else {
                        None
                    };
                    let compiled = compile(&stmts.join(" "), names).map_err(err)?;
                    let rules = tx.chain_rules(table, chain);
                    let rule = Rule {
                        line: i + 1,
                        text: line.into(),
                        compiled,
                    };
                    match insert_at {
                        None => rules.push(rule),
                        Some(n) if n < rules.len() || (n == 0 && rules.is_empty()) => rules.insert(n, rule),
                        Some(n) => {
                            return Err(err(format!("index {n} is beyond the chain's {} rules", rules.len())));
                        }
                    }
                }
                _ => return Err(err(format!("unsupported command {cmd:?}"))),
            }
        }
        Ok(tx)
    }

    fn chain_rules(&mut self, table: &str, chain: &str) -> &mut Vec<Rule> {
        let i = match self.chains.iter().position(|c| c.table == table && c.chain == chain) {
            Some(i) => i,
            None => {
                self.chains.push(ChainRules {
                    table: table.into(),
                    chain: chain.into(),
                    rules: Vec::new(),
                });
                self.chains.len() - 1
            }
        };
        &mut self.chains[i].rules
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    /// Encodes the batch; returns it and the step behind each message.
    pub fn encode(&self, first_seq: u32) -> (Vec<u8>, Vec<Step>) {
        let mut batch = Batch::new(first_seq);
        let mut steps = Vec::new();
        let mut step = |seq: u32, line: usize, text: &str| {
            steps.push(Step {
                seq,
                line,
                text: text.to_string(),
            })
        };
        for (line, text, op) in &self.ops {
            let seq = match op {
                Op::AddTable(table) => {
                    let mut a = Attrs::new();
                    a.str(1, table).be32(2, 0);
                    batch.push(MsgType::NewTable, NLM_F_CREATE, a)
                }
                Op::FlushTable(table) => {
                    let mut a = Attrs::new();
                    a.str(1, table);
                    batch.push(MsgType::DelRule, 0, a)
                }
                Op::AddChain { table, chain, hook } => {
                    let mut a = Attrs::new();
                    a.str(1, table).str(3, chain);
                    if let Some(h) = hook {
                        a.str(7, &h.kind).nest(4, |n| {
                            n.be32(1, h.hook).be32(2, h.priority as u32);
                        });
                    }
                    batch.push(MsgType::NewChain, NLM_F_CREATE, a)
                }
            };
            step(seq, *line, text);
        }
        let mut set_id = 0u32;
        for c in &self.chains {
            for rule in &c.rules {
                let mut ids = Vec::new();
                for set in &rule.compiled.sets {
                    set_id += 1;
                    ids.push(set_id);
                    for (kind, attrs) in set_messages(&c.table, set_id, set) {
                        let seq = batch.push(kind, NLM_F_CREATE, attrs);
                        step(seq, rule.line, &rule.text);
                    }
                }
                let mut a = Attrs::new();
                a.str(1, &c.table).str(2, &c.chain).nest(4, |list| {
                    for e in &rule.compiled.exprs {
                        match e {
                            Expr::Lookup { set_id, inverted } => Expr::Lookup {
                                set_id: ids[*set_id as usize],
                                inverted: *inverted,
                            }
                            .encode(list),
                            e => e.encode(list),
                        }
                    }
                });
                let seq = batch.push(MsgType::NewRule, NLM_F_CREATE | NLM_F_APPEND, a);
                step(seq, rule.line, &rule.text);
            }
        }
        let (bytes, _) = batch.finish();
        (bytes, steps)
    }
}

/// `NEWSET` and `NEWSETELEM` for an anonymous constant `inet_service` set,
/// with the user data `nft` attaches (key byte order, and the `typeof`
/// expression `tcp dport|sport` it was written with).
fn set_messages(table: &str, id: u32, set: &AnonSet) -> [(MsgType, Attrs); 2] {
    const NFT_SET_ANONYMOUS: u32 = 0x1;
    const NFT_SET_CONSTANT: u32 = 0x2;
    const TYPE_INET_SERVICE: u32 = 13;
    const BYTEORDER_BIG_ENDIAN: u32 = 2;
    // nft's protocol description id of tcp, and its field index.
    debug_assert_eq!(set.field.proto, L4::Tcp);
    let (proto_desc, field) = (8u32, if set.field.dport { 2u32 } else { 1 });
    let mut udata = Vec::new();
    let tlv = |buf: &mut Vec<u8>, kind: u8, value: &[u8]| {
        buf.push(kind);
        buf.push(value.len() as u8);
        buf.extend_from_slice(value);
    };
    tlv(&mut udata, 0, &BYTEORDER_BIG_ENDIAN.to_ne_bytes());
    let mut typeof_data = Vec::new();
    tlv(&mut typeof_data, 0, &proto_desc.to_ne_bytes());
    tlv(&mut typeof_data, 1, &field.to_ne_bytes());
    let mut typeof_expr = Vec::new();
    tlv(&mut typeof_expr, 0, &7u32.to_ne_bytes());
    tlv(&mut typeof_expr, 1, &typeof_data);
    tlv(&mut udata, 3, &typeof_expr);

    let mut s = Attrs::new();
    s.str(1, table)
        .str(2, ANON_SET_NAME)
        .be32(3, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT)
        .be32(4, TYPE_INET_SERVICE)
        .be32(5, 2)
        .be32(10, id)
        .nest(9, |d| {
            d.be32(1, set.ports.len() as u32);
        })
        .bytes(13, &udata);
    let mut e = Attrs::new();
    e.str(1, table).str(2, ANON_SET_NAME).be32(4, id).nest(3, |list| {
        for p in &set.ports {
            list.nest(1, |elem| {
                elem.nest(1, |key| {
                    key.bytes(1, &p.to_be_bytes());
                });
            });
        }
    });
    [(MsgType::NewSet, s), (MsgType::NewSetElem, e)]
}

/// `{ type X hook H priority P ; }`.
fn hook(spec: &[&str]) -> Result<Hook, String> {
    let spec: Vec<&str> = spec.iter().copied().filter(|w| *w != ";").collect();
    match spec.as_slice() {
        ["{", "type", kind, "hook", hook, "priority", prio, "}"] => {
            if !["filter", "nat", "route"].contains(kind) {
                return Err(format!("unsupported chain type {kind:?}"));
            }
            let hook = match *hook {
                "prerouting" => 0,
                "input" => 1,
                "forward" => 2,
                "output" => 3,
                "postrouting" => 4,
                other => return Err(format!("unsupported hook {other:?}")),
            };
            let priority = prio
                .trim_end_matches(';')
                .parse()
                .map_err(|_| format!("priority {prio:?} is not a number"))?;
            Ok(Hook {
                kind: (*kind).into(),
                hook,
                priority,
            })
        }
        _ => Err(format!("unsupported chain spec {:?}", spec.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(text: &str) -> Result<Transaction, CompileError> {
        Transaction::compile(text, &mut Names::numeric_only())
    }

    #[test]
    fn inserts_land_at_their_index_and_are_sent_as_appends() {
        let t = tx("add table inet t\nflush table inet t\nadd chain inet t c\n\
                    add rule inet t c counter return\nadd rule inet t c counter accept\n\
                    insert rule inet t c index 1 counter drop\ninsert rule inet t c index 0 counter jump c")
        .unwrap();
        let texts: Vec<usize> = t.chains[0].rules.iter().map(|r| r.line).collect();
        assert_eq!(texts, [7, 4, 6, 5]);
        let (_, steps) = t.encode(0);
        assert_eq!(steps.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 2, 3, 7, 4, 6, 5]);
        assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = tx("add table inet t\nadd rule inet t c tcp dport x counter return").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(
            e.to_string(),
            "line 2 `add rule inet t c tcp dport x counter return`: \"x\" is not a port number"
        );
        assert!(tx("add table ip t").unwrap_err().reason.contains("inet family"));
        assert!(
            tx("add table inet t\ninsert rule inet t c counter")
                .unwrap_err()
                .reason
                .contains("not flushed")
        );
        let e = tx(
            "add table inet t\nflush table inet t\nadd chain inet t c\nadd rule inet t c counter return\n\
                    insert rule inet t c index 3 counter return",
        )
        .unwrap_err();
        assert!(e.reason.contains("index 3 is beyond the chain's 1 rules"), "{e}");
        let e = tx("add chain inet t c { type nat hook ingress priority 0 ; }").unwrap_err();
        assert!(e.reason.contains("unsupported hook"), "{e}");
    }

    #[test]
    fn hook_spec() {
        let h = hook(&["{", "type", "nat", "hook", "output", "priority", "-100", ";", "}"]).unwrap();
        assert_eq!(
            h,
            Hook {
                kind: "nat".into(),
                hook: 3,
                priority: -100
            }
        );
    }
}
