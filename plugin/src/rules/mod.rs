//! The rule plan shared by both backends: one ordered list of rules, each
//! carrying its iptables and nftables spelling, so the emission order lives
//! in exactly one place ([`plan`]) and the renderers only format.

mod plan;

pub use plan::plan;

/// Tables the plan writes to (iptables name / nftables `inet` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Mangle,
    Raw,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Nat, Table::Mangle, Table::Raw];

    pub fn iptables(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Mangle => "mangle",
            Table::Raw => "raw",
        }
    }

    pub fn nft(self) -> &'static str {
        match self {
            Table::Nat => "istio-proxy-nat",
            Table::Mangle => "istio-proxy-mangle",
            Table::Raw => "istio-proxy-raw",
        }
    }
}

/// Chains the plan writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chain {
    Prerouting,
    Output,
    IstioInbound,
    IstioRedirect,
    IstioInRedirect,
    IstioOutput,
    IstioOutputDns,
    IstioDivert,
    IstioTproxy,
    IstioDrop,
}

impl Chain {
    pub fn iptables(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::IstioInbound => "ISTIO_INBOUND",
            Chain::IstioRedirect => "ISTIO_REDIRECT",
            Chain::IstioInRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
            Chain::IstioOutputDns => "ISTIO_OUTPUT_DNS",
            Chain::IstioDivert => "ISTIO_DIVERT",
            Chain::IstioTproxy => "ISTIO_TPROXY",
            Chain::IstioDrop => "ISTIO_DROP",
        }
    }

    pub fn nft(self) -> &'static str {
        match self {
            Chain::Prerouting => "prerouting",
            Chain::Output => "output",
            Chain::IstioInbound => "istio-inbound",
            Chain::IstioRedirect => "istio-redirect",
            Chain::IstioInRedirect => "istio-in-redirect",
            Chain::IstioOutput => "istio-output",
            Chain::IstioOutputDns => "istio-output-dns",
            Chain::IstioDivert => "istio-divert",
            Chain::IstioTproxy => "istio-tproxy",
            Chain::IstioDrop => "istio-drop",
        }
    }
}

/// Which address family's rule set a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Both iptables families; a single rule in the nftables `inet` tables.
    Both,
    V4,
    V6,
}

/// Where a rule goes in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Append,
    /// iptables' 1-based insert position.
    Insert(u32),
}

/// One rule of the plan, spelled for each backend. A backend whose spelling
/// is `None` does not emit the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: Chain,
    pub position: Position,
    pub family: Family,
    /// iptables parameters after `-A CHAIN` / `-I CHAIN n`.
    pub iptables: Option<String>,
    /// nftables rule expression after `add rule inet TABLE CHAIN`.
    pub nft: Option<String>,
}
