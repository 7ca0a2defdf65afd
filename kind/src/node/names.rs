//! Unique names for the kernel objects a cluster creates (bridge, veths,
//! namespace files), and validation of user-supplied names.
//!
//! Interface names are limited to 15 bytes, so names are built from a short
//! per-cluster tag: `k<pid in hex>x<counter in hex>` (at most 11 bytes), which
//! is unique among the live clusters of all processes on the host.

use std::sync::atomic::{AtomicU32, Ordering};

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

static CLUSTER_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh tag for a new cluster in this process.
pub fn next_cluster_tag() -> String {
    let n = CLUSTER_COUNTER.fetch_add(1, Ordering::SeqCst);
    cluster_tag(std::process::id(), n)
}

/// The tag for cluster number `counter` of process `pid`. The counter wraps
/// at 4096 so the tag stays within 11 bytes.
pub fn cluster_tag(pid: u32, counter: u32) -> String {
    format!("k{pid:x}x{:x}", counter % 0x1000)
}

/// The cluster bridge in the harness namespace.
pub fn bridge_name(tag: &str) -> String {
    format!("{tag}b")
}

/// The harness-side end of node `index`'s veth.
pub fn host_veth_name(tag: &str, index: u32) -> String {
    format!("{tag}v{index}")
}

/// The file name of a node's namespace pin.
pub fn node_netns_name(tag: &str, node: &str) -> String {
    format!("{tag}-{node}")
}

/// The file name of a pod sandbox's namespace pin.
pub fn pod_netns_name(tag: &str, node: &str, pod_id: &str) -> String {
    format!("{tag}-{node}-{pod_id}")
}

/// Checks an interface name the way the kernel and libcni do.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".to_owned());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!("interface name {name:?} is longer than {MAX_IFNAME_LEN} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is . or .."));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("interface name {name:?} contains /, : or whitespace"));
    }
    Ok(())
}

/// A node name or sandbox id the harness refuses (it names files and links).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a short DNS label.
    #[error("invalid node name {0:?}: use 1-40 lowercase letters, digits or '-', not starting or ending with '-'")]
    Node(String),
    /// Not a short id.
    #[error("invalid pod sandbox id {0:?}: use 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")]
    PodId(String),
}

/// Checks a node name: a DNS label (lowercase letters, digits, `-`; starts
/// and ends with a letter or digit; at most 40 bytes so paths stay short).
pub fn validate_node_name(name: &str) -> Result<(), NameError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name
        .bytes()
        .next()
        .zip(name.bytes().last())
        .is_some_and(|(a, z)| a != b'-' && z != b'-');
    if name.is_empty() || name.len() > 40 || !ok_chars || !ok_ends {
        return Err(NameError::Node(name.to_string()));
    }
    Ok(())
}

/// Checks a pod sandbox id (used in file names and as the CNI container id):
/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 bytes.
pub fn validate_pod_id(id: &str) -> Result<(), NameError> {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !first_ok || !rest_ok || id.len() > 64 {
        return Err(NameError::PodId(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_ifnamsiz_for_the_largest_pid() {
        // pid_max is at most 2^22.
        let tag = cluster_tag(4_194_304, 0xfff);
        assert_eq!(tag, "k400000xfff");
        validate_ifname(&bridge_name(&tag)).unwrap();
        validate_ifname(&host_veth_name(&tag, 244)).unwrap();
        assert_eq!(cluster_tag(4_194_304, 0x1000), "k400000x0");
    }

    #[test]
    fn tags_differ_per_call() {
        assert_ne!(next_cluster_tag(), next_cluster_tag());
    }

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a23456789012345").is_ok());
        assert!(validate_ifname("a234567890123456").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_ifname("a:b").is_err());
        assert!(validate_ifname("a b").is_err());
    }

    #[test]
    fn node_and_pod_names() {
        assert!(validate_node_name("worker-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(41)] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
        assert!(validate_pod_id("pod-1.a_b").is_ok());
        for bad in ["", "_x", "a/b", "a b", &"a".repeat(65)] {
            assert!(validate_pod_id(bad).is_err(), "{bad}");
        }
        assert_eq!(pod_netns_name("k1x0", "n1", "p"), "k1x0-n1-p");
        assert_eq!(node_netns_name("k1x0", "n1"), "k1x0-n1");
    }
}
