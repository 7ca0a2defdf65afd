//! CNI spec versions: what the plugin supports and what each version allows.

use super::error::{CniError, Code};

/// Every spec version the plugin speaks, oldest first.
pub const SUPPORTED: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version, reported by VERSION.
pub const CURRENT: &str = "1.1.0";

/// The three result formats of the spec's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 0.1.0 and 0.2.0: `ip4`/`ip6` objects.
    V020,
    /// 0.3.0, 0.3.1 and 0.4.0: `interfaces`, `ips` with `version`, `routes`.
    V040,
    /// 1.0.0 and 1.1.0: like 0.4.0 without `ips[].version`.
    V100,
}

impl Family {
    pub fn of(version: &str) -> Option<Family> {
        match version {
            "0.1.0" | "0.2.0" => Some(Family::V020),
            "0.3.0" | "0.3.1" | "0.4.0" => Some(Family::V040),
            "1.0.0" | "1.1.0" => Some(Family::V100),
            _ => None,
        }
    }

    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Family::V020 => &SUPPORTED[0..2],
            Family::V040 => &SUPPORTED[2..5],
            Family::V100 => &SUPPORTED[5..7],
        }
    }
}

/// Parses `major.minor.patch`.
fn triple(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next()??, parts.next()??, parts.next()??, parts.next()) {
        (a, b, c, None) => Some((a, b, c)),
        _ => None,
    }
}

/// Whether `version` is at least `min` (both supported versions).
pub fn at_least(version: &str, min: &str) -> bool {
    matches!((triple(version), triple(min)), (Some(v), Some(m)) if v >= m)
}

/// The config's version must be one the plugin supports (exact match, as
/// libcni's skel does); a missing `cniVersion` means 0.1.0.
pub fn check_supported(version: &str) -> Result<(), CniError> {
    if SUPPORTED.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            Code::IncompatibleVersion,
            format!("incompatible CNI versions; config is {version:?}, plugin supports {SUPPORTED:?}"),
        ))
    }
}

/// The VERSION reply.
pub fn version_reply() -> String {
    let versions: Vec<String> = SUPPORTED.iter().map(|v| format!("{v:?}")).collect();
    format!(
        "{{\"cniVersion\":\"{CURRENT}\",\"supportedVersions\":[{}]}}\n",
        versions.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_ordering() {
        assert_eq!(Family::of("0.3.1"), Some(Family::V040));
        assert_eq!(Family::of("1.1.0"), Some(Family::V100));
        assert_eq!(Family::of("0.5.0"), None);
        assert!(at_least("0.4.0", "0.4.0") && at_least("1.0.0", "0.4.0") && !at_least("0.3.1", "0.4.0"));
        assert!(at_least("1.1.0", "1.1.0") && !at_least("1.0.0", "1.1.0"));
        for f in [Family::V020, Family::V040, Family::V100] {
            assert!(f.versions().iter().all(|v| Family::of(v) == Some(f)));
        }
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        assert!(check_supported("1.0.0").is_ok());
        let e = check_supported("1.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("\"1.2.0\""));
    }

    #[test]
    fn version_reply_is_one_json_line() {
        let reply = version_reply();
        assert!(reply.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["cniVersion"], CURRENT);
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    }
}
