//! An address with its prefix length, host bits kept (`10.0.0.2/24`): the
//! form of every address and destination in a CNI result, and of the CIDRs
//! in Istio's annotations.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `addr/len`, as Go's `net.ParseCIDR` and `netip.ParsePrefix` read it,
/// keeping the host bits; no zone, no bare address. An IPv4-mapped IPv6
/// prefix is IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub len: u8,
}

impl IpNet {
    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (missing /prefix-length)"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // Plain decimal digits only (no sign, no spaces), as Go's parser.
        let len = Some(len)
            .filter(|l| !l.is_empty() && l.len() <= 9 && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<u32>().ok())
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("prefix length {len:?} must be a number from 0 to {max}"))?;
        Ok(IpNet { addr, len: len as u8 })
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_with_host_bits() {
        let n: IpNet = "10.1.0.5/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.1.0.5/16");
        assert!(n.is_v4());
        let n: IpNet = "fd00::2/64".parse().unwrap();
        assert_eq!((n.is_v4(), n.len), (false, 64));
    }

    #[test]
    fn bad_cidrs_say_why() {
        for (input, want) in [
            ("10.0.0.1", "missing /prefix-length"),
            ("10.0.0/8", "not an IP address"),
            ("10.0.0.1/33", "from 0 to 32"),
            ("::1/129", "from 0 to 128"),
            ("10.0.0.1/+8", "from 0 to 32"),
            ("10.0.0.1/", "from 0 to 32"),
        ] {
            let e = input.parse::<IpNet>().unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
