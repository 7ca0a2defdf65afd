//! IPv4 prefixes and the cluster's address plan: which address each node and
//! each node's pods get (IPv4 always; IPv6 too when the plan has a
//! [`Ipv6Plan`]).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An invalid prefix or an address plan that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddrError(pub String);

/// An IPv4 address with a prefix length, e.g. `10.250.0.1/24`. The address
/// may have host bits set (an interface address); [`Ipv4Cidr::network`]
/// clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// A prefix; `prefix` must be at most 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, AddrError> {
        if prefix > 32 {
            return Err(AddrError(format!("prefix length {prefix} is larger than 32")));
        }
        Ok(Self { addr, prefix })
    }

    /// The address as given.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The same prefix with host bits cleared (`10.0.0.5/24` → `10.0.0.0/24`).
    pub fn trunc(&self) -> Self {
        Self {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// The number of addresses in the prefix.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The `n`-th address of the prefix (0 = the network address), if it is
    /// neither the network nor the broadcast address.
    pub fn host(&self, n: u64) -> Option<Ipv4Addr> {
        if n == 0 || n + 1 >= self.size() {
            return None;
        }
        let base = u64::from(u32::from(self.network()));
        u32::try_from(base + n).ok().map(Ipv4Addr::from)
    }

    /// The `index`-th sub-prefix of length `prefix` inside this one.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        if index >= count {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let base = u64::from(u32::from(self.network())) + index * step;
        let addr = Ipv4Addr::from(u32::try_from(base).ok()?);
        Some(Ipv4Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| AddrError(format!("{s:?} is not an IPv4 prefix (expected a.b.c.d/len)")))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|e| AddrError(format!("{s:?}: bad IPv4 address {addr:?}: {e}")))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| AddrError(format!("{s:?}: bad prefix length {prefix:?}: {e}")))?;
        Self::new(addr, prefix).map_err(|e| AddrError(format!("{s:?}: {e}")))
    }
}

/// Where nodes and pods get their addresses.
///
/// Node `N` (0-based) gets host address `first_node_host + N` of
/// `node_subnet` on its `eth0`; its pods get the `N`-th `/pod_prefix` of
/// `pod_supernet`. The defaults (`10.250.0.0/24`, gateway `10.250.0.1`,
/// nodes from `.10`, pods `10.251.N.0/24`) avoid the ranges kind, Docker and
/// common home networks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPlan {
    /// The cluster network the nodes share.
    pub node_subnet: Ipv4Cidr,
    /// The harness side of the cluster network (the bridge's address).
    pub gateway: Ipv4Addr,
    /// Host number of node 0 inside `node_subnet`.
    pub first_node_host: u64,
    /// The range pod CIDRs are cut from.
    pub pod_supernet: Ipv4Cidr,
    /// The prefix length of each node's pod CIDR.
    pub pod_prefix: u8,
    /// The cluster network's IPv6 side, for clusters whose pods have IPv6
    /// addresses (they reach the harness, e.g. the API server, over it).
    /// `None` (the default): the network is IPv4 only.
    pub v6: Option<Ipv6Plan>,
}

/// The IPv6 side of an [`AddressPlan`]: the bridge gets `<network>::1/64`,
/// node `N` gets `<network>::<first_node_host + N>/64` on its `eth0`, and
/// node `N`'s pods get `<pods>:<N>::/64` (`N` in hex, as the 3rd group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Plan {
    /// The cluster network's /64 (the low 64 bits must be zero).
    pub network: Ipv6Addr,
    /// The /32 the nodes' pod ranges are cut from (the low 96 bits must be zero).
    pub pods: Ipv6Addr,
}

impl Ipv6Plan {
    /// Checks that both prefixes are clean and the network is not inside
    /// the pod range.
    pub fn validate(&self) -> Result<(), AddrError> {
        let (network, pods) = (u128::from(self.network), u128::from(self.pods));
        if network & u128::from(u64::MAX) != 0 {
            return Err(AddrError(format!(
                "IPv6 cluster network {} has host bits set (it is a /64)",
                self.network
            )));
        }
        if pods & ((1u128 << 96) - 1) != 0 {
            return Err(AddrError(format!(
                "IPv6 pod range {} has bits set below its /32",
                self.pods
            )));
        }
        if network >> 96 == pods >> 96 {
            return Err(AddrError(format!(
                "IPv6 cluster network {}/64 is inside the pod range {}/32",
                self.network, self.pods
            )));
        }
        Ok(())
    }

    /// The harness side of the network (the bridge's address).
    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) | 1)
    }

    /// Host `n` of the network.
    fn host(&self, n: u64) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network) | u128::from(n))
    }

    /// Node `index`'s pod range: `<pods>:<index>::/64`.
    pub fn pod_cidr(&self, index: u32) -> Result<String, AddrError> {
        let index = u16::try_from(index).map_err(|_| {
            AddrError(format!(
                "node {index} has no /64 left in the pod range {}/32",
                self.pods
            ))
        })?;
        let base = u128::from(self.pods) | (u128::from(index) << 80);
        Ok(format!("{}/64", Ipv6Addr::from(base)))
    }
}

impl Default for AddressPlan {
    fn default() -> Self {
        Self {
            node_subnet: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 250, 0, 0),
                prefix: 24,
            },
            gateway: Ipv4Addr::new(10, 250, 0, 1),
            first_node_host: 10,
            pod_supernet: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 251, 0, 0),
                prefix: 16,
            },
            pod_prefix: 24,
            v6: None,
        }
    }
}

impl AddressPlan {
    /// Checks that the plan is coherent: gateway inside the node subnet and
    /// not a node address, pod range disjoint from the node subnet, pod
    /// prefix inside the pod range.
    pub fn validate(&self) -> Result<(), AddrError> {
        let subnet = self.node_subnet.trunc();
        if !subnet.contains(self.gateway) || self.gateway == subnet.network() {
            return Err(AddrError(format!(
                "gateway {} is not a host address of the node subnet {subnet}",
                self.gateway
            )));
        }
        let first = self.node_ip(0)?;
        if u32::from(self.gateway) >= u32::from(first) {
            return Err(AddrError(format!(
                "gateway {} must come before the first node address {first}",
                self.gateway
            )));
        }
        if self.pod_supernet.overlaps(&subnet) {
            return Err(AddrError(format!(
                "pod range {} overlaps the node subnet {subnet}",
                self.pod_supernet.trunc()
            )));
        }
        if self.pod_prefix < self.pod_supernet.prefix() || self.pod_prefix > 30 {
            return Err(AddrError(format!(
                "pod prefix /{} does not fit in the pod range {} (and must be at most /30)",
                self.pod_prefix,
                self.pod_supernet.trunc()
            )));
        }
        // The IPv6 nodes take the IPv4 host numbers, which the checks above
        // keep past the gateway's (at least 1), so never the IPv6 gateway's ::1.
        if let Some(v6) = &self.v6 {
            v6.validate()?;
        }
        Ok(())
    }

    /// Node `index`'s IPv6 address on the cluster network, when the plan has an IPv6 side.
    pub fn node_ip_v6(&self, index: u32) -> Option<Ipv6Addr> {
        let v6 = self.v6.as_ref()?;
        Some(v6.host(self.first_node_host + u64::from(index)))
    }

    /// The address of node `index` on the cluster network.
    pub fn node_ip(&self, index: u32) -> Result<Ipv4Addr, AddrError> {
        self.node_subnet
            .host(self.first_node_host + u64::from(index))
            .ok_or_else(|| {
                AddrError(format!(
                    "node {index} does not fit in the node subnet {} (first node host .{})",
                    self.node_subnet.trunc(),
                    self.first_node_host
                ))
            })
    }

    /// The pod CIDR of node `index`.
    pub fn pod_cidr(&self, index: u32) -> Result<Ipv4Cidr, AddrError> {
        self.pod_supernet
            .subnet(self.pod_prefix, u64::from(index))
            .ok_or_else(|| {
                AddrError(format!(
                    "node {index} has no /{} left in the pod range {}",
                    self.pod_prefix,
                    self.pod_supernet.trunc()
                ))
            })
    }

    /// The gateway with the node subnet's prefix, e.g. `10.250.0.1/24`.
    pub fn gateway_cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: self.gateway,
            prefix: self.node_subnet.prefix(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        assert_eq!(cidr("10.250.0.1/24").to_string(), "10.250.0.1/24");
        assert_eq!(cidr("10.250.0.1/24").network(), Ipv4Addr::new(10, 250, 0, 0));
        assert_eq!(cidr("10.250.0.7/24").trunc().to_string(), "10.250.0.0/24");
        assert_eq!(cidr("0.0.0.0/0").network(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn bad_prefixes_are_explained() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/x"] {
            let err = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(err.0.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn hosts_exclude_network_and_broadcast() {
        let c = cidr("10.1.2.0/24");
        assert_eq!(c.host(0), None);
        assert_eq!(c.host(1), Some(Ipv4Addr::new(10, 1, 2, 1)));
        assert_eq!(c.host(254), Some(Ipv4Addr::new(10, 1, 2, 254)));
        assert_eq!(c.host(255), None);
        assert!(c.contains(Ipv4Addr::new(10, 1, 2, 99)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 3, 1)));
    }

    #[test]
    fn subnets_are_cut_in_order() {
        let c = cidr("10.251.0.0/16");
        assert_eq!(c.subnet(24, 0), Some(cidr("10.251.0.0/24")));
        assert_eq!(c.subnet(24, 3), Some(cidr("10.251.3.0/24")));
        assert_eq!(c.subnet(24, 255), Some(cidr("10.251.255.0/24")));
        assert_eq!(c.subnet(24, 256), None);
        assert_eq!(c.subnet(8, 0), None);
    }

    #[test]
    fn default_plan_addresses() {
        let plan = AddressPlan::default();
        plan.validate().unwrap();
        assert_eq!(plan.node_ip(0).unwrap(), Ipv4Addr::new(10, 250, 0, 10));
        assert_eq!(plan.node_ip(2).unwrap(), Ipv4Addr::new(10, 250, 0, 12));
        assert_eq!(plan.pod_cidr(0).unwrap(), cidr("10.251.0.0/24"));
        assert_eq!(plan.pod_cidr(5).unwrap(), cidr("10.251.5.0/24"));
        assert_eq!(plan.gateway_cidr().to_string(), "10.250.0.1/24");
        assert!(plan.node_ip(244).is_ok());
        assert!(plan.node_ip(245).is_err());
    }

    #[test]
    fn the_ipv6_side_gives_gateway_nodes_and_pod_ranges() {
        let plan = AddressPlan {
            v6: Some(Ipv6Plan {
                network: "fd0b:96::".parse().unwrap(),
                pods: "fd0a:96::".parse().unwrap(),
            }),
            ..AddressPlan::default()
        };
        plan.validate().unwrap();
        let v6 = plan.v6.unwrap();
        assert_eq!(v6.gateway().to_string(), "fd0b:96::1");
        assert_eq!(plan.node_ip_v6(0).unwrap().to_string(), "fd0b:96::a");
        assert_eq!(plan.node_ip_v6(17).unwrap().to_string(), "fd0b:96::1b");
        assert_eq!(v6.pod_cidr(0).unwrap(), "fd0a:96::/64");
        assert_eq!(v6.pod_cidr(26).unwrap(), "fd0a:96:1a::/64");
        assert!(v6.pod_cidr(65_536).is_err());
        assert_eq!(AddressPlan::default().node_ip_v6(0), None);
    }

    #[test]
    fn incoherent_ipv6_sides_are_rejected() {
        let with = |network: &str, pods: &str| AddressPlan {
            v6: Some(Ipv6Plan {
                network: network.parse().unwrap(),
                pods: pods.parse().unwrap(),
            }),
            ..AddressPlan::default()
        };
        let err = |plan: AddressPlan| plan.validate().unwrap_err().0;
        assert!(err(with("fd0b:96::5", "fd0a:96::")).contains("host bits"));
        assert!(err(with("fd0b:96::", "fd0a:96:1::")).contains("below its /32"));
        assert!(err(with("fd0a:96:7::", "fd0a:96::")).contains("inside the pod range"));
    }

    #[test]
    fn incoherent_plans_are_rejected() {
        let mut plan = AddressPlan {
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            ..AddressPlan::default()
        };
        assert!(plan.validate().unwrap_err().0.contains("gateway"));
        plan = AddressPlan {
            pod_supernet: cidr("10.250.0.0/16"),
            ..AddressPlan::default()
        };
        assert!(plan.validate().unwrap_err().0.contains("overlaps"));
        plan = AddressPlan {
            pod_prefix: 8,
            ..AddressPlan::default()
        };
        assert!(plan.validate().unwrap_err().0.contains("does not fit"));
        plan = AddressPlan {
            gateway: Ipv4Addr::new(10, 250, 0, 20),
            ..AddressPlan::default()
        };
        assert!(plan.validate().unwrap_err().0.contains("before the first node"));
    }
}
