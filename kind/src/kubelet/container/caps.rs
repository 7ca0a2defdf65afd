//! A container's capabilities from its securityContext, as containerd
//! grants them: privileged → every capability; otherwise containerd's
//! default set, plus `add`, minus `drop` (`ALL` in either means all).
//! They are applied as the process's bounding and inheritable sets
//! (`setpriv`), so a root process holds exactly these.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::SecurityContext;

/// containerd's default capabilities for a container.
pub const DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux defines (capabilities(7)), in number order.
pub const ALL: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everything (privileged, or `add: [ALL]`): the bounding set is left
    /// as the harness has it.
    All,
    /// Exactly these (canonical names without `CAP_`).
    Only(BTreeSet<&'static str>),
}

/// `NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN` → `NET_ADMIN`.
fn canonical(name: &str) -> Result<&'static str, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL.iter()
        .copied()
        .find(|c| *c == bare)
        .ok_or_else(|| format!("unknown capability {name:?}"))
}

/// The grant of a container, or which capability name is unknown.
pub fn grant(sc: Option<&SecurityContext>) -> Result<Grant, String> {
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Ok(Grant::All);
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let adds = caps.and_then(|c| c.add.as_deref()).unwrap_or_default();
    let drops = caps.and_then(|c| c.drop.as_deref()).unwrap_or_default();
    let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL") || n.trim().eq_ignore_ascii_case("CAP_ALL");
    let mut set: BTreeSet<&'static str> = if drops.iter().any(is_all) {
        BTreeSet::new()
    } else {
        DEFAULT.iter().copied().collect()
    };
    for d in drops.iter().filter(|d| !is_all(d)) {
        set.remove(canonical(d)?);
    }
    if adds.iter().any(is_all) {
        return Ok(Grant::All);
    }
    for a in adds {
        set.insert(canonical(a)?);
    }
    Ok(Grant::Only(set))
}

/// `setpriv` arguments that leave exactly the grant.
pub fn setpriv_args(grant: &Grant) -> Vec<String> {
    match grant {
        Grant::All => Vec::new(),
        Grant::Only(set) => {
            let list: String = std::iter::once("-all".to_string())
                .chain(set.iter().map(|c| format!("+{}", c.to_ascii_lowercase())))
                .collect::<Vec<_>>()
                .join(",");
            vec![format!("--bounding-set={list}"), format!("--inh-caps={list}")]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sc(v: serde_json::Value) -> SecurityContext {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_adds_and_drops() {
        let Grant::Only(set) = grant(None).unwrap() else {
            panic!()
        };
        assert_eq!(set.len(), DEFAULT.len());
        assert!(!set.contains("NET_ADMIN"));
        let g = grant(Some(&sc(
            json!({"capabilities": {"add": ["NET_ADMIN", "cap_sys_admin"], "drop": ["NET_RAW"]}}),
        )));
        let Grant::Only(set) = g.unwrap() else { panic!() };
        assert!(set.contains("NET_ADMIN") && set.contains("SYS_ADMIN") && !set.contains("NET_RAW"));
        let g = grant(Some(&sc(
            json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
        )));
        assert_eq!(g.unwrap(), Grant::Only(["NET_BIND_SERVICE"].into_iter().collect()));
        assert_eq!(grant(Some(&sc(json!({"privileged": true})))).unwrap(), Grant::All);
        let e = grant(Some(&sc(json!({"capabilities": {"add": ["NET_WIZARD"]}})))).unwrap_err();
        assert!(e.contains("NET_WIZARD"), "{e}");
    }

    #[test]
    fn setpriv_gets_the_exact_set() {
        let g = Grant::Only(["KILL", "NET_ADMIN"].into_iter().collect());
        assert_eq!(
            setpriv_args(&g),
            [
                "--bounding-set=-all,+kill,+net_admin",
                "--inh-caps=-all,+kill,+net_admin"
            ]
        );
        assert!(setpriv_args(&Grant::All).is_empty());
    }
}
