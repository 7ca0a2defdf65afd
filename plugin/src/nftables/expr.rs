//! nf_tables expressions (the kernel's rule bytecode) and their attribute
//! encoding, in the attribute order `nft` 1.0.x sends them.

use super::wire::Attrs;

/// Register 0 holds the verdict; nft uses the 16-byte register 1 for data.
const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;

/// Where a payload load reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// `meta` keys used by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Mark = 3,
    Iifname = 6,
    Oifname = 7,
    Skuid = 10,
    Skgid = 11,
    Nfproto = 15,
    L4proto = 16,
}

/// `ct` keys used by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State = 0,
    Mark = 3,
    Zone = 17,
}

/// A rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    MetaLoad(MetaKey),
    MetaSet(MetaKey),
    CtLoad(CtKey),
    CtSet(CtKey),
    Payload {
        base: Base,
        offset: u32,
        len: u32,
    },
    /// `reg1 = (reg1 & mask) ^ 0`.
    Bitwise {
        mask: Vec<u8>,
    },
    Cmp {
        neq: bool,
        data: Vec<u8>,
    },
    /// Lookup of reg1 in the anonymous set with transaction id `set_id`.
    Lookup {
        set_id: u32,
        inverted: bool,
    },
    Counter,
    Immediate(Vec<u8>),
    Verdict(Verdict),
    /// `redirect to :port` with the port already in reg1.
    Redirect,
    /// `tproxy ip|ip6 to :port` with the port in reg1; `family` is NFPROTO_*.
    Tproxy {
        family: u32,
    },
}

/// The name the kernel numbers when an anonymous set is created.
pub const ANON_SET_NAME: &str = "__set%d";

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::MetaLoad(_) | Expr::MetaSet(_) => "meta",
            Expr::CtLoad(_) | Expr::CtSet(_) => "ct",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Lookup { .. } => "lookup",
            Expr::Counter => "counter",
            Expr::Immediate(_) | Expr::Verdict(_) => "immediate",
            Expr::Redirect => "redir",
            Expr::Tproxy { .. } => "tproxy",
        }
    }

    /// Writes `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { … } }`.
    pub fn encode(&self, list: &mut Attrs) {
        list.nest(1, |elem| {
            elem.str(1, self.name());
            elem.nest(2, |d| self.data(d));
        });
    }

    fn data(&self, d: &mut Attrs) {
        let value = |a: &mut Attrs, kind: u16, bytes: &[u8]| {
            a.nest(kind, |v| {
                v.bytes(1, bytes);
            });
        };
        match self {
            Expr::MetaLoad(key) => {
                d.be32(2, *key as u32).be32(1, REG_1);
            }
            Expr::MetaSet(key) => {
                d.be32(2, *key as u32).be32(3, REG_1);
            }
            Expr::CtLoad(key) => {
                d.be32(2, *key as u32).be32(1, REG_1);
            }
            Expr::CtSet(key) => {
                d.be32(2, *key as u32).be32(4, REG_1);
            }
            Expr::Payload { base, offset, len } => {
                d.be32(1, REG_1).be32(2, *base as u32).be32(3, *offset).be32(4, *len);
            }
            Expr::Bitwise { mask } => {
                d.be32(1, REG_1).be32(2, REG_1).be32(3, mask.len() as u32);
                value(d, 4, mask);
                value(d, 5, &vec![0; mask.len()]);
            }
            Expr::Cmp { neq, data } => {
                d.be32(1, REG_1).be32(2, u32::from(*neq));
                value(d, 3, data);
            }
            Expr::Lookup { set_id, inverted } => {
                d.be32(2, REG_1).str(1, ANON_SET_NAME).be32(4, *set_id);
                if *inverted {
                    d.be32(5, 1);
                }
            }
            Expr::Counter => {}
            Expr::Immediate(bytes) => {
                d.be32(1, REG_1);
                value(d, 2, bytes);
            }
            Expr::Verdict(v) => {
                d.be32(1, REG_VERDICT);
                d.nest(2, |data| {
                    data.nest(2, |verdict| {
                        verdict.be32(1, v.code() as u32);
                        if let Verdict::Jump(chain) | Verdict::Goto(chain) = v {
                            verdict.str(2, chain);
                        }
                    });
                });
            }
            Expr::Redirect => {
                // NF_NAT_RANGE_PROTO_SPECIFIED
                d.be32(1, REG_1).be32(3, 0x2);
            }
            Expr::Tproxy { family } => {
                d.be32(1, *family).be32(3, REG_1);
            }
        }
    }
}
