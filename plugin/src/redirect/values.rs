//! Value types and parsers for the annotation grammar: CIDR prefixes, port
//! lists and interface lists, with Istio's exact acceptance rules.

/// An IP prefix as Istio's Go code parses it (`netip.ParsePrefix`): host bits
/// may be set and are kept in the rule text; zones and bare addresses are
/// rejected. An IPv4-mapped IPv6 prefix counts as IPv6. The same type as a
/// CNI result's addresses.
pub use cni_spec::IpNet as Prefix;

/// Parses plain ASCII decimal digits (no sign, no spaces), as Go's ParseUint.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a comma-separated CIDR list exactly like Istio's validator: no
/// trimming, every element must be a prefix; "" is the empty list.
pub fn parse_cidr_list(value: &str) -> Result<Vec<Prefix>, String> {
    parse_list(value, |c| {
        if c.is_empty() {
            Err("empty element in the CIDR list".to_string())
        } else {
            c.parse::<Prefix>()
        }
    })
}

/// A comma-separated list, each element through `item`; "" is the empty
/// list (not one empty element).
fn parse_list<T>(value: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value.split(',').map(item).collect()
}

/// Parses a comma-separated port list: the whole value and every element are
/// trimmed; "" is the empty list; each element is a base-10 port 0–65535.
pub fn parse_port_list(value: &str) -> Result<Vec<u16>, String> {
    parse_list(value.trim(), |p| {
        let p = p.trim();
        parse_decimal(p).and_then(|n| u16::try_from(n).ok()).ok_or_else(|| {
            if p.is_empty() {
                "empty element in the port list".to_string()
            } else {
                format!("{p:?} is not a port number (0-65535)")
            }
        })
    })
}

/// Parses a comma-separated interface-name list with Linux's name rules.
pub fn parse_interface_list(value: &str) -> Result<Vec<String>, String> {
    parse_list(value, |name| {
        let name = name.trim();
        let mut chars = name.chars();
        match chars.next() {
            None => Err("empty interface name".to_string()),
            Some(_) if name.len() > 15 => Err(format!("interface name {name:?} is too long (max 15 chars)")),
            Some(first)
                if first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
            {
                Ok(name.to_string())
            }
            Some(_) => Err(format!(
                "interface name {name:?} contains invalid characters (allowed: a letter, then letters, digits, '_', '.', '-')"
            )),
        }
    })
}

/// Go's `strconv.ParseBool`, which Istio uses for every boolean input.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_keep_host_bits_and_canonical_form() {
        assert_eq!("10.1.2.3/8".parse::<Prefix>().unwrap().to_string(), "10.1.2.3/8");
        assert_eq!(
            "2001:DB8:0:0::1/32".parse::<Prefix>().unwrap().to_string(),
            "2001:db8::1/32"
        );
        let mapped: Prefix = "::ffff:1.2.3.4/120".parse().unwrap();
        assert!(!mapped.is_v4(), "IPv4-mapped prefixes count as IPv6");
    }

    #[test]
    fn prefixes_reject_what_go_rejects() {
        for bad in [
            "10.0.0.1",
            "10.0.0.0/33",
            "fe80::1%eth0/64",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            " 10.0.0.0/8",
            "*",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn cidr_lists_are_not_trimmed() {
        assert!(parse_cidr_list("").unwrap().is_empty());
        assert_eq!(parse_cidr_list("10.0.0.0/8,::1/128").unwrap().len(), 2);
        assert!(parse_cidr_list("10.0.0.0/8, 11.0.0.0/8").is_err());
        assert!(parse_cidr_list("10.0.0.0/8,").is_err());
        assert!(parse_cidr_list("10.0.0.0/8,,11.0.0.0/8").is_err());
    }

    #[test]
    fn port_lists_trim_and_accept_zero() {
        assert_eq!(parse_port_list(" 80, 443 ,0").unwrap(), vec![80, 443, 0]);
        assert_eq!(parse_port_list("  ").unwrap(), Vec::<u16>::new());
        assert_eq!(parse_port_list("080").unwrap(), vec![80]);
        for bad in ["80,,90", "80,", "65536", "-1", "+80", "*", "http"] {
            assert!(parse_port_list(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn interface_lists_follow_linux_names() {
        assert_eq!(parse_interface_list("eth0, net1.2").unwrap(), vec!["eth0", "net1.2"]);
        assert!(parse_interface_list("eth0,").is_err());
        assert!(parse_interface_list("0eth").is_err());
        assert!(parse_interface_list("averyveryverylong0").is_err());
        assert!(parse_interface_list("eth0;rm").is_err());
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("F"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool(""), None);
    }
}
