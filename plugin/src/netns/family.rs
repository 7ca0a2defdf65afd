//! IPv6 detection from the pod's interface addresses.
//!
//! Pure decision logic; [`super::netlink::Netlink::addresses`] supplies the
//! addresses, in kernel dump order (all IPv4 addresses come before IPv6 ones
//! in an `AF_UNSPEC` dump, which is what makes the DualStack variant matter).

use std::net::IpAddr;

/// No address in the netns can decide the family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no valid local IP address found")]
pub struct NoValidAddress;

/// Decides `EnableIPv6` from the netns addresses.
///
/// Loopback, link-local unicast and link-local multicast addresses are
/// skipped; IPv4-mapped IPv6 addresses count as IPv4. Without `dual_stack`
/// the first usable address decides. With `dual_stack` the scan stops at the
/// first IPv6 address and the answer is whether the last address examined was
/// IPv6 (so a pod with any IPv6 address gets IPv6 rules).
pub fn detect_ipv6(addrs: impl IntoIterator<Item = IpAddr>, dual_stack: bool) -> Result<bool, NoValidAddress> {
    let mut last_was_v6 = None;
    for addr in addrs.into_iter().map(unmap).filter(is_usable) {
        let v6 = addr.is_ipv6();
        last_was_v6 = Some(v6);
        if !dual_stack || v6 {
            break;
        }
    }
    last_was_v6.ok_or(NoValidAddress)
}

fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn is_usable(addr: &IpAddr) -> bool {
    !(addr.is_loopback() || is_link_local_unicast(addr) || is_link_local_multicast(addr))
}

fn is_link_local_unicast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        // fe80::/10
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn is_link_local_multicast(addr: &IpAddr) -> bool {
    match addr {
        // 224.0.0.0/24
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        // ff02::/16 and any multicast with link-local scope (ffx2::)
        IpAddr::V6(v6) => v6.octets()[0] == 0xff && v6.octets()[1] & 0x0f == 0x02,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn first_usable_address_decides_without_dual_stack() {
        assert_eq!(detect_ipv6(ips(&["10.0.0.2", "fd00::2"]), false), Ok(false));
        assert_eq!(detect_ipv6(ips(&["fd00::2", "10.0.0.2"]), false), Ok(true));
    }

    #[test]
    fn skips_loopback_and_link_local() {
        let list = ips(&[
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.5",
            "ff02::1",
            "fd00::2",
        ]);
        assert_eq!(detect_ipv6(list, false), Ok(true));
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        assert_eq!(detect_ipv6(ips(&["::ffff:10.0.0.2", "fd00::2"]), false), Ok(false));
        // A mapped loopback is still loopback.
        assert_eq!(detect_ipv6(ips(&["::ffff:127.0.0.1", "fd00::2"]), false), Ok(true));
    }

    #[test]
    fn dual_stack_stops_at_the_first_v6() {
        assert_eq!(detect_ipv6(ips(&["10.0.0.2", "10.0.0.3", "fd00::2"]), true), Ok(true));
        assert_eq!(detect_ipv6(ips(&["10.0.0.2", "10.0.0.3"]), true), Ok(false));
        assert_eq!(detect_ipv6(ips(&["10.0.0.2", "fe80::1"]), true), Ok(false));
    }

    #[test]
    fn no_usable_address_is_an_error() {
        let err = detect_ipv6(ips(&["127.0.0.1", "::1", "fe80::1"]), false).unwrap_err();
        assert_eq!(err.to_string(), "no valid local IP address found");
        assert_eq!(detect_ipv6(Vec::new(), true), Err(NoValidAddress));
    }

    #[test]
    fn global_multicast_is_usable() {
        // Only link-local multicast is skipped.
        assert_eq!(detect_ipv6(ips(&["ff05::2"]), false), Ok(true));
    }
}
