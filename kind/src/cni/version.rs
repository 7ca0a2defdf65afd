//! CNI spec versions: parsing and comparison the way libcni does it.

use std::cmp::Ordering;

/// Every spec version, oldest first.
pub const ALL_VERSIONS: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version this runner implements (libcni's `Current()`).
pub const CURRENT_VERSION: &str = "1.1.0";

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl SpecVersion {
    /// Parses like libcni's `version.ParseVersion`: the empty string means
    /// 0.1.0 (a config without `cniVersion`); one to three dot-separated
    /// decimal numbers, missing ones are 0.
    pub fn parse(v: &str) -> Result<Self, String> {
        if v.is_empty() {
            return Ok(Self {
                major: 0,
                minor: 1,
                patch: 0,
            });
        }
        let parts: Vec<&str> = v.split('.').collect();
        if parts.len() > 3 {
            return Err(format!("invalid version {v:?}: too many parts"));
        }
        let num = |i: usize, what: &str| -> Result<u32, String> {
            parts.get(i).map_or(Ok(0), |p| {
                p.parse::<u32>()
                    .map_err(|_| format!("invalid version {v:?}: {what} {p:?} is not a number"))
            })
        };
        Ok(Self {
            major: num(0, "major")?,
            minor: num(1, "minor")?,
            patch: num(2, "patch")?,
        })
    }
}

/// Compares two version strings.
pub fn compare(a: &str, b: &str) -> Result<Ordering, String> {
    Ok(SpecVersion::parse(a)?.cmp(&SpecVersion::parse(b)?))
}

/// `v >= min`.
pub fn at_least(v: &str, min: &str) -> Result<bool, String> {
    Ok(compare(v, min)? != Ordering::Less)
}

/// Whether the version knows chaining and `prevResult` (≥ 0.3.0).
pub fn has_chaining(v: &str) -> bool {
    at_least(v, "0.3.0").unwrap_or(false)
}

/// Whether the version knows CHECK and the cached `prevResult` on DEL (≥ 0.4.0).
pub fn has_check(v: &str) -> bool {
    at_least(v, "0.4.0").unwrap_or(false)
}

/// Whether the version knows STATUS and GC (≥ 1.1.0).
pub fn has_status_and_gc(v: &str) -> bool {
    at_least(v, "1.1.0").unwrap_or(false)
}

/// Picks the list version as libcni does when `cniVersions` is present:
/// drop entries newer than [`CURRENT_VERSION`], add `cniVersion` (if set and
/// not newer), take the highest. `None` when nothing is left.
pub fn negotiate(cni_version: &str, cni_versions: &[String]) -> Result<Option<String>, String> {
    let mut candidates: Vec<(SpecVersion, String)> = Vec::new();
    for v in cni_versions
        .iter()
        .map(String::as_str)
        .chain((!cni_version.is_empty()).then_some(cni_version))
    {
        let parsed = SpecVersion::parse(v)?;
        if compare(v, CURRENT_VERSION)? != Ordering::Greater {
            candidates.push((parsed, v.to_owned()));
        }
    }
    Ok(candidates.into_iter().max_by(|a, b| a.0.cmp(&b.0)).map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_libcni() {
        assert_eq!(SpecVersion::parse("").unwrap(), SpecVersion::parse("0.1.0").unwrap());
        assert_eq!(SpecVersion::parse("1").unwrap(), SpecVersion::parse("1.0.0").unwrap());
        assert!(SpecVersion::parse("1.0.0.0").unwrap_err().contains("too many"));
        assert!(SpecVersion::parse("1.x").unwrap_err().contains("minor"));
    }

    #[test]
    fn feature_gates() {
        assert!(!has_chaining("0.2.0"));
        assert!(has_chaining("0.3.0"));
        assert!(!has_check("0.3.1"));
        assert!(has_check("0.4.0"));
        assert!(has_check("1.0.0"));
        assert!(!has_status_and_gc("1.0.0"));
        assert!(has_status_and_gc("1.1.0"));
        assert!(!has_check("garbage"));
    }

    #[test]
    fn negotiation_takes_the_highest_supported() {
        let vs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate("0.4.0", &vs(&["1.0.0", "0.3.1"])).unwrap().as_deref(),
            Some("1.0.0")
        );
        assert_eq!(
            negotiate("", &vs(&["9.9.9", "1.1.0"])).unwrap().as_deref(),
            Some("1.1.0")
        );
        assert_eq!(negotiate("2.0.0", &vs(&["3.0.0"])).unwrap(), None);
        assert!(negotiate("1.0.0", &vs(&["x"])).is_err());
    }
}
