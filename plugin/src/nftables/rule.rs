//! Compiles one rule's statements (the text after `add rule inet T C`) to
//! nf_tables expressions, exactly as `nft` 1.0.x linearizes them: implicit
//! protocol dependencies (`meta nfproto`, `meta l4proto`) are added right
//! before the first match that needs them, prefixes on byte boundaries load
//! only the prefix bytes, other prefixes are masked, integers of `meta`/`ct`
//! keys are host order and packet fields network order.
//!
//! Only the grammar the renderer emits is accepted; anything else is an
//! error naming the token, never a guess that could differ from `nft`.

use std::net::IpAddr;

use super::expr::{Base, CtKey, Expr, MetaKey, Verdict};
use super::names::Names;

/// An anonymous set a rule needs: `inet_service` keys (network order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonSet {
    /// The set's id inside the rule (0-based); the batch numbers them.
    pub index: usize,
    /// The payload it matches: (protocol, field) for the set's type info.
    pub field: PortField,
    pub ports: Vec<u16>,
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    pub exprs: Vec<Expr>,
    pub sets: Vec<AnonSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4,
    V6,
}

/// A transport protocol the rules match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    Other(u8),
}

impl L4 {
    fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
            L4::Other(n) => n,
        }
    }
}

/// `tcp|udp sport|dport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortField {
    pub proto: L4,
    pub dport: bool,
}

/// Token stream with the protocol context of the rule so far.
struct Compiler<'a, 'n> {
    tokens: Vec<&'a str>,
    pos: usize,
    names: &'n mut Names,
    net: Option<Net>,
    l4: Option<L4>,
    out: Vec<Expr>,
    sets: Vec<AnonSet>,
}

/// Compiles the statements of one rule.
pub fn compile(text: &str, names: &mut Names) -> Result<CompiledRule, String> {
    let mut c = Compiler {
        tokens: tokenize(text),
        pos: 0,
        names,
        net: None,
        l4: None,
        out: Vec::new(),
        sets: Vec::new(),
    };
    if c.tokens.is_empty() {
        return Err("empty rule".into());
    }
    while let Some(tok) = c.next() {
        c.statement(tok)?;
    }
    Ok(CompiledRule {
        exprs: c.out,
        sets: c.sets,
    })
}

/// Whitespace-separated tokens; inside a `{ … }` set literal the braces and
/// commas are tokens of their own, so `{53,15008}` and `{ 53, 15008 }` read
/// the same, while a flag list (`related,established`) stays one token.
fn tokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_set = false;
    for word in text.split_ascii_whitespace() {
        let mut rest = word;
        while !rest.is_empty() {
            let split = if in_set {
                rest.find(['{', '}', ','])
            } else {
                rest.find('{')
            };
            match split {
                Some(0) => {
                    let t = &rest[..1];
                    in_set = t == "{" || (in_set && t != "}");
                    out.push(t);
                    rest = &rest[1..];
                }
                Some(i) => {
                    out.push(&rest[..i]);
                    rest = &rest[i..];
                }
                None => {
                    out.push(rest);
                    rest = "";
                }
            }
        }
    }
    out
}

impl<'a> Compiler<'a, '_> {
    fn next(&mut self) -> Option<&'a str> {
        let t = self.tokens.get(self.pos).copied();
        self.pos += usize::from(t.is_some());
        t
    }

    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.pos).copied()
    }

    fn expect_value(&mut self, what: &str) -> Result<&'a str, String> {
        self.next().ok_or_else(|| format!("{what}: value missing"))
    }

    /// `!=` or `==` before a value; returns whether it negates.
    fn op(&mut self) -> bool {
        match self.peek() {
            Some("!=") => {
                self.pos += 1;
                true
            }
            Some("==") => {
                self.pos += 1;
                false
            }
            _ => false,
        }
    }

    fn statement(&mut self, tok: &'a str) -> Result<(), String> {
        match tok {
            "meta" => {
                let key = self.expect_value("meta")?;
                self.meta(key)
            }
            "iifname" | "oifname" | "skuid" | "skgid" | "mark" | "l4proto" | "nfproto" => self.meta(tok),
            "ct" => self.ct(),
            "ip" | "ip6" => self.addr(if tok == "ip" { Net::V4 } else { Net::V6 }),
            "tcp" | "udp" => self.port(if tok == "tcp" { L4::Tcp } else { L4::Udp }),
            "counter" => {
                self.out.push(Expr::Counter);
                Ok(())
            }
            "accept" => self.verdict(Verdict::Accept),
            "drop" => self.verdict(Verdict::Drop),
            "return" => self.verdict(Verdict::Return),
            "jump" | "goto" => {
                let chain = self.expect_value(tok)?;
                check_name(chain)?;
                let v = if tok == "jump" {
                    Verdict::Jump(chain.into())
                } else {
                    Verdict::Goto(chain.into())
                };
                self.verdict(v)
            }
            "redirect" => self.redirect(),
            "tproxy" => self.tproxy(),
            other => Err(format!("unsupported statement {other:?}")),
        }
    }

    fn verdict(&mut self, v: Verdict) -> Result<(), String> {
        self.out.push(Expr::Verdict(v));
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("{t:?} after the verdict")),
        }
    }

    fn meta(&mut self, key: &'a str) -> Result<(), String> {
        let k = match key {
            "iifname" => MetaKey::Iifname,
            "oifname" => MetaKey::Oifname,
            "skuid" => MetaKey::Skuid,
            "skgid" => MetaKey::Skgid,
            "mark" => MetaKey::Mark,
            "l4proto" => MetaKey::L4proto,
            "nfproto" => MetaKey::Nfproto,
            other => return Err(format!("unsupported meta key {other:?}")),
        };
        if self.peek() == Some("set") {
            self.pos += 1;
            if k != MetaKey::Mark {
                return Err(format!("meta {key} set is not supported"));
            }
            let src = self.expect_value("meta mark set")?;
            if src == "ct" {
                match self.next() {
                    Some("mark") => self.out.push(Expr::CtLoad(CtKey::Mark)),
                    other => return Err(format!("meta mark set ct {other:?} is not supported")),
                }
            } else {
                self.out.push(Expr::Immediate(integer(src)?.to_ne_bytes().to_vec()));
            }
            self.out.push(Expr::MetaSet(MetaKey::Mark));
            return Ok(());
        }
        let neq = self.op();
        let value = self.expect_value(key)?;
        let data = match k {
            MetaKey::Iifname | MetaKey::Oifname => ifname(value)?,
            MetaKey::Skuid => self.names.uid(value)?.to_ne_bytes().to_vec(),
            MetaKey::Skgid => self.names.gid(value)?.to_ne_bytes().to_vec(),
            MetaKey::Mark => integer(value)?.to_ne_bytes().to_vec(),
            MetaKey::L4proto => {
                let p = l4proto(value)?;
                if !neq {
                    self.l4 = Some(p);
                }
                vec![p.number()]
            }
            MetaKey::Nfproto => {
                let (n, num) = match value {
                    "ipv4" => (Net::V4, 2),
                    "ipv6" => (Net::V6, 10),
                    other => return Err(format!("unsupported nfproto {other:?}")),
                };
                if !neq {
                    self.net = Some(n);
                }
                vec![num]
            }
        };
        self.out.push(Expr::MetaLoad(k));
        self.out.push(Expr::Cmp { neq, data });
        Ok(())
    }

    fn ct(&mut self) -> Result<(), String> {
        let key = self.expect_value("ct")?;
        match key {
            "state" => {
                let neq = self.op();
                let mut mask = 0u32;
                for s in self.expect_value("ct state")?.split(',') {
                    mask |= match s {
                        "invalid" => 1,
                        "established" => 2,
                        "related" => 4,
                        "new" => 8,
                        "untracked" => 64,
                        other => return Err(format!("unknown ct state {other:?}")),
                    };
                }
                self.out.push(Expr::CtLoad(CtKey::State));
                self.out.push(Expr::Bitwise {
                    mask: mask.to_ne_bytes().to_vec(),
                });
                // A flag set matches when any flag is set: `!= 0`.
                self.out.push(Expr::Cmp {
                    neq: !neq,
                    data: vec![0; 4],
                });
                Ok(())
            }
            "mark" if self.peek() == Some("set") => {
                self.pos += 1;
                match self.expect_value("ct mark set")? {
                    "mark" => self.out.push(Expr::MetaLoad(MetaKey::Mark)),
                    "meta" if self.peek() == Some("mark") => {
                        self.pos += 1;
                        self.out.push(Expr::MetaLoad(MetaKey::Mark));
                    }
                    v => self.out.push(Expr::Immediate(integer(v)?.to_ne_bytes().to_vec())),
                }
                self.out.push(Expr::CtSet(CtKey::Mark));
                Ok(())
            }
            "mark" => {
                let neq = self.op();
                let v = integer(self.expect_value("ct mark")?)?;
                self.out.push(Expr::CtLoad(CtKey::Mark));
                self.out.push(Expr::Cmp {
                    neq,
                    data: v.to_ne_bytes().to_vec(),
                });
                Ok(())
            }
            "zone" if self.peek() == Some("set") => {
                self.pos += 1;
                let v = integer(self.expect_value("ct zone set")?)?;
                let zone = u16::try_from(v).map_err(|_| format!("ct zone {v} is out of range (0-65535)"))?;
                self.out.push(Expr::Immediate(zone.to_ne_bytes().to_vec()));
                self.out.push(Expr::CtSet(CtKey::Zone));
                Ok(())
            }
            other => Err(format!("unsupported ct expression {other:?}")),
        }
    }

    /// The `meta nfproto` dependency of an `ip`/`ip6` match, once per rule.
    fn need_net(&mut self, net: Net) -> Result<(), String> {
        match self.net {
            Some(n) if n == net => Ok(()),
            Some(_) => Err("conflicting network protocols (ip and ip6) in one rule".into()),
            None => {
                self.out.push(Expr::MetaLoad(MetaKey::Nfproto));
                self.out.push(Expr::Cmp {
                    neq: false,
                    data: vec![if net == Net::V4 { 2 } else { 10 }],
                });
                self.net = Some(net);
                Ok(())
            }
        }
    }

    fn addr(&mut self, net: Net) -> Result<(), String> {
        let field = self.expect_value("ip")?;
        let (width, offset) = match (net, field) {
            (Net::V4, "saddr") => (4, 12),
            (Net::V4, "daddr") => (4, 16),
            (Net::V6, "saddr") => (16, 8),
            (Net::V6, "daddr") => (16, 24),
            (_, other) => return Err(format!("unsupported address field {other:?}")),
        };
        let neq = self.op();
        let text = self.expect_value(field)?;
        let (addr, len) = prefix(text, net)?;
        self.need_net(net)?;
        let bits = width * 8;
        let mut masked = addr.clone();
        for (i, b) in masked.iter_mut().enumerate() {
            let keep = len.saturating_sub(i as u32 * 8).min(8);
            *b &= !(0xffu16 >> keep) as u8;
        }
        if len == bits {
            self.out.push(Expr::Payload {
                base: Base::Network,
                offset,
                len: width,
            });
            self.out.push(Expr::Cmp { neq, data: addr });
        } else if len > 0 && len % 8 == 0 {
            let n = len / 8;
            self.out.push(Expr::Payload {
                base: Base::Network,
                offset,
                len: n,
            });
            self.out.push(Expr::Cmp {
                neq,
                data: masked[..n as usize].to_vec(),
            });
        } else {
            let mask: Vec<u8> = (0..width)
                .map(|i| !(0xffu16 >> len.saturating_sub(i * 8).min(8)) as u8)
                .collect();
            self.out.push(Expr::Payload {
                base: Base::Network,
                offset,
                len: width,
            });
            self.out.push(Expr::Bitwise { mask });
            self.out.push(Expr::Cmp { neq, data: masked });
        }
        Ok(())
    }

    fn port(&mut self, proto: L4) -> Result<(), String> {
        let field = self.expect_value("port")?;
        let dport = match field {
            "dport" => true,
            "sport" => false,
            other => return Err(format!("unsupported transport field {other:?}")),
        };
        let neq = self.op();
        let first = self.expect_value(field)?;
        let ports = if first == "{" {
            let mut ports = Vec::new();
            loop {
                match self.next() {
                    Some("}") => break,
                    Some(",") => continue,
                    Some(p) => ports.push(port(p)?),
                    None => return Err("unterminated set: `}` missing".into()),
                }
            }
            if ports.is_empty() {
                return Err("empty set".into());
            }
            Some(ports)
        } else {
            None
        };
        match self.l4 {
            Some(p) if p == proto => {}
            Some(_) => return Err("conflicting transport protocols in one rule".into()),
            None => {
                self.out.push(Expr::MetaLoad(MetaKey::L4proto));
                self.out.push(Expr::Cmp {
                    neq: false,
                    data: vec![proto.number()],
                });
                self.l4 = Some(proto);
            }
        }
        self.out.push(Expr::Payload {
            base: Base::Transport,
            offset: if dport { 2 } else { 0 },
            len: 2,
        });
        match ports {
            Some(ports) => {
                if proto != L4::Tcp {
                    return Err("port sets are supported for tcp only".into());
                }
                let index = self.sets.len();
                self.sets.push(AnonSet {
                    index,
                    field: PortField { proto, dport },
                    ports,
                });
                // The batch replaces the index with the set's transaction id.
                self.out.push(Expr::Lookup {
                    set_id: index as u32,
                    inverted: neq,
                });
            }
            None => self.out.push(Expr::Cmp {
                neq,
                data: port(first)?.to_be_bytes().to_vec(),
            }),
        }
        Ok(())
    }

    /// `:PORT` after `to`.
    fn target_port(&mut self, what: &str) -> Result<u16, String> {
        if self.next() != Some("to") {
            return Err(format!("{what}: `to :PORT` expected"));
        }
        let target = self.expect_value(what)?;
        let p = target
            .strip_prefix(':')
            .ok_or_else(|| format!("{what}: only `to :PORT` is supported, got {target:?}"))?;
        port(p)
    }

    fn redirect(&mut self) -> Result<(), String> {
        let p = self.target_port("redirect")?;
        if self.l4.is_none() {
            return Err("redirect to a port needs a transport protocol match before it".into());
        }
        self.out.push(Expr::Immediate(p.to_be_bytes().to_vec()));
        self.out.push(Expr::Redirect);
        Ok(())
    }

    fn tproxy(&mut self) -> Result<(), String> {
        let net = match self.next() {
            Some("ip") => Net::V4,
            Some("ip6") => Net::V6,
            other => return Err(format!("tproxy: `ip` or `ip6` expected, got {other:?}")),
        };
        let p = self.target_port("tproxy")?;
        if self.net != Some(net) || self.l4.is_none() {
            return Err("tproxy needs a matching address and transport protocol match before it".into());
        }
        self.out.push(Expr::Immediate(p.to_be_bytes().to_vec()));
        self.out.push(Expr::Tproxy {
            family: if net == Net::V4 { 2 } else { 10 },
        });
        Ok(())
    }
}

/// A chain or table name as the renderer writes them.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok =
        !name.is_empty() && name.len() < 256 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}"))
    }
}

/// Interface names are compared as IFNAMSIZ (16) zero-padded bytes.
fn ifname(value: &str) -> Result<Vec<u8>, String> {
    let name = value.trim_matches('"');
    if name.is_empty() || name.len() > 15 || name.contains(['*', '\\']) || name.bytes().any(|b| b <= b' ') {
        return Err(format!("invalid interface name {value:?}"));
    }
    let mut v = name.as_bytes().to_vec();
    v.resize(16, 0);
    Ok(v)
}

fn integer(v: &str) -> Result<u32, String> {
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None if v.bytes().all(|b| b.is_ascii_digit()) => v.parse().ok(),
        None => None,
    };
    parsed.ok_or_else(|| format!("{v:?} is not a 32-bit number"))
}

fn port(v: &str) -> Result<u16, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not a port number"));
    }
    v.parse().map_err(|_| format!("port {v} is out of range (0-65535)"))
}

fn l4proto(v: &str) -> Result<L4, String> {
    match v {
        "tcp" => Ok(L4::Tcp),
        "udp" => Ok(L4::Udp),
        n => n
            .parse::<u8>()
            .map(|n| match n {
                6 => L4::Tcp,
                17 => L4::Udp,
                n => L4::Other(n),
            })
            .map_err(|_| format!("unknown l4proto {v:?}")),
    }
}

/// `ADDR[/LEN]` of the given family: the address bytes and the prefix length.
fn prefix(text: &str, net: Net) -> Result<(Vec<u8>, u32), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    let bytes = match (ip, net) {
        (IpAddr::V4(v4), Net::V4) => v4.octets().to_vec(),
        (IpAddr::V6(v6), Net::V6) => v6.octets().to_vec(),
        _ => return Err(format!("{addr:?} is not of the rule's address family")),
    };
    let bits = bytes.len() as u32 * 8;
    let len = match len {
        None => bits,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|&l| l <= bits && !l.to_string().is_empty())
            .ok_or_else(|| format!("prefix length {l:?} must be a number from 0 to {bits}"))?,
    };
    Ok((bytes, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exprs(text: &str) -> Vec<Expr> {
        compile(text, &mut Names::numeric_only()).unwrap().exprs
    }

    #[test]
    fn tokens_split_set_literals_but_not_flag_lists() {
        assert_eq!(
            tokenize("tcp dport != {53,15008} ct state related,established"),
            [
                "tcp",
                "dport",
                "!=",
                "{",
                "53",
                ",",
                "15008",
                "}",
                "ct",
                "state",
                "related,established"
            ]
        );
        assert_eq!(tokenize("{ 53, 15008 }"), ["{", "53", ",", "15008", "}"]);
    }

    #[test]
    fn transport_match_gets_its_l4proto_dependency_once() {
        let e = exprs("meta l4proto tcp tcp dport 15008 counter return");
        assert_eq!(e.iter().filter(|x| **x == Expr::MetaLoad(MetaKey::L4proto)).count(), 1);
        let e = exprs("udp dport 53 counter return");
        assert_eq!(e[0], Expr::MetaLoad(MetaKey::L4proto));
        assert_eq!(
            e[1],
            Expr::Cmp {
                neq: false,
                data: vec![17]
            }
        );
        assert_eq!(
            e[3],
            Expr::Cmp {
                neq: false,
                data: vec![0, 53]
            }
        );
    }

    #[test]
    fn prefixes_follow_nfts_linearization() {
        let address = |len| Expr::Payload {
            base: Base::Network,
            offset: 16,
            len,
        };
        let cmp = |neq, data: &[u8]| Expr::Cmp {
            neq,
            data: data.to_vec(),
        };
        let mask = |mask: &[u8]| Expr::Bitwise { mask: mask.to_vec() };
        // (rule, the expressions it must hold at these indexes)
        let cases = [
            // Full length: the whole address.
            (
                "ip daddr 127.0.0.1/32 counter return",
                vec![(2, address(4)), (3, cmp(false, &[127, 0, 0, 1]))],
            ),
            // Byte boundary: only the prefix bytes, host bits dropped.
            (
                "ip daddr != 127.0.0.1/8 counter return",
                vec![(2, address(1)), (3, cmp(true, &[127]))],
            ),
            // Elsewhere (and /0): the whole field, masked.
            (
                "ip daddr 10.1.2.3/12 counter return",
                vec![(3, mask(&[0xff, 0xf0, 0, 0])), (4, cmp(false, &[10, 0, 0, 0]))],
            ),
            (
                "ip6 saddr ::/0 counter return",
                vec![(1, cmp(false, &[10])), (3, mask(&[0; 16]))],
            ),
        ];
        for (rule, want) in cases {
            let e = exprs(rule);
            for (i, expr) in want {
                assert_eq!(e[i], expr, "{rule}: expression {i}");
            }
        }
    }

    #[test]
    fn unsupported_or_bad_input_is_an_error_naming_it() {
        let mut n = Names::numeric_only();
        for (text, want) in [
            (
                "ip daddr 300.0.0.1 counter return",
                "\"300.0.0.1\" is not an IP address",
            ),
            ("ip daddr 10.0.0.0/33 return", "prefix length \"33\""),
            ("tcp dport 70000 return", "port 70000 is out of range"),
            ("iifname eth* return", "invalid interface name"),
            ("iifname averyveryverylongname return", "invalid interface name"),
            ("log prefix x", "unsupported statement \"log\""),
            ("counter return counter", "\"counter\" after the verdict"),
            ("ip daddr 1.1.1.1 ip6 saddr ::1 return", "conflicting network protocols"),
            ("tcp dport != { 53, 1", "unterminated set"),
            ("tcp dport != { 53, 1 return", "\"return\" is not a port number"),
            ("redirect to :15001", "needs a transport protocol match"),
            ("skuid nosuchuser return", "nosuchuser"),
            ("", "empty rule"),
        ] {
            let err = compile(text, &mut n).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
