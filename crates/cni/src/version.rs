//! CNI spec versions: the supported list, parsing and comparison the way
//! libcni does it, the result families, and the VERSION report.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{CniError, Code};

/// Every spec version, oldest first.
pub const SUPPORTED: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version (libcni's `Current()`), reported by VERSION.
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
    /// The family of a supported version (exact string match).
    pub fn of(version: &str) -> Option<Family> {
        match version {
            "0.1.0" | "0.2.0" => Some(Family::V020),
            "0.3.0" | "0.3.1" | "0.4.0" => Some(Family::V040),
            "1.0.0" | "1.1.0" => Some(Family::V100),
            _ => None,
        }
    }

    /// The family's versions, oldest first.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Family::V020 => &SUPPORTED[0..2],
            Family::V040 => &SUPPORTED[2..5],
            Family::V100 => &SUPPORTED[5..7],
        }
    }

    /// The family's newest version.
    pub fn newest(self) -> &'static str {
        self.versions()[self.versions().len() - 1]
    }
}

/// A version string libcni cannot parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {version:?}: {reason}")]
pub struct VersionError {
    /// The version as given.
    pub version: String,
    /// What is wrong with it.
    pub reason: String,
}

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
    pub fn parse(v: &str) -> Result<Self, VersionError> {
        if v.is_empty() {
            return Ok(Self {
                major: 0,
                minor: 1,
                patch: 0,
            });
        }
        let invalid = |reason: String| VersionError {
            version: v.to_owned(),
            reason,
        };
        let parts: Vec<&str> = v.split('.').collect();
        if parts.len() > 3 {
            return Err(invalid("too many parts".to_owned()));
        }
        let num = |i: usize, what: &str| -> Result<u32, VersionError> {
            parts.get(i).map_or(Ok(0), |p| {
                p.parse::<u32>()
                    .map_err(|_| invalid(format!("{what} {p:?} is not a number")))
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
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(SpecVersion::parse(a)?.cmp(&SpecVersion::parse(b)?))
}

/// `v >= min`.
pub fn at_least(v: &str, min: &str) -> Result<bool, VersionError> {
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
/// drop entries newer than [`CURRENT`], add `cniVersion` (if set and not
/// newer), take the highest. `None` when nothing is left.
pub fn negotiate(cni_version: &str, cni_versions: &[String]) -> Result<Option<String>, VersionError> {
    let mut candidates: Vec<(SpecVersion, String)> = Vec::new();
    for v in cni_versions
        .iter()
        .map(String::as_str)
        .chain((!cni_version.is_empty()).then_some(cni_version))
    {
        let parsed = SpecVersion::parse(v)?;
        if compare(v, CURRENT)? != Ordering::Greater {
            candidates.push((parsed, v.to_owned()));
        }
    }
    Ok(candidates.into_iter().max_by(|a, b| a.0.cmp(&b.0)).map(|(_, v)| v))
}

/// A plugin's config version must be one it supports (exact match, as
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

/// A plugin's answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// `cniVersion` of the answer.
    #[serde(default)]
    pub cni_version: String,
    /// `supportedVersions`.
    #[serde(default)]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// What a plugin speaking every [`SUPPORTED`] version answers.
    pub fn all() -> VersionInfo {
        VersionInfo {
            cni_version: CURRENT.to_owned(),
            supported_versions: SUPPORTED.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    /// Parses a VERSION answer; an empty answer is a pre-0.3.0 plugin
    /// supporting 0.1.0 and 0.2.0 (as libcni assumes).
    pub fn parse(stdout: &[u8]) -> Result<Self, String> {
        if stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                cni_version: "0.1.0".to_owned(),
                supported_versions: vec!["0.1.0".to_owned(), "0.2.0".to_owned()],
            });
        }
        let info: VersionInfo =
            serde_json::from_slice(stdout).map_err(|e| format!("VERSION output is not a version report: {e}"))?;
        if info.supported_versions.is_empty() {
            // A 0.1.0-era answer carrying only cniVersion.
            return Ok(Self {
                supported_versions: vec![info.cni_version.clone()],
                ..info
            });
        }
        Ok(info)
    }

    /// Whether `version` is supported (exact string match, as skel does).
    pub fn supports(&self, version: &str) -> bool {
        self.supported_versions.iter().any(|v| v == version)
    }

    /// The answer as a plugin prints it: one compact JSON line.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// The VERSION reply of a plugin speaking every supported version.
pub fn version_reply() -> String {
    VersionInfo::all().to_line()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_ordering() {
        assert_eq!(Family::of("0.3.1"), Some(Family::V040));
        assert_eq!(Family::of("1.1.0"), Some(Family::V100));
        assert_eq!(Family::of("0.5.0"), None);
        assert_eq!(Family::V040.newest(), "0.4.0");
        let yes = |v, m| at_least(v, m).unwrap();
        assert!(yes("0.4.0", "0.4.0") && yes("1.0.0", "0.4.0") && !yes("0.3.1", "0.4.0"));
        assert!(yes("1.1.0", "1.1.0") && !yes("1.0.0", "1.1.0"));
        for f in [Family::V020, Family::V040, Family::V100] {
            assert!(f.versions().iter().all(|v| Family::of(v) == Some(f)));
        }
    }

    #[test]
    fn parse_like_libcni() {
        assert_eq!(SpecVersion::parse("").unwrap(), SpecVersion::parse("0.1.0").unwrap());
        assert_eq!(SpecVersion::parse("1").unwrap(), SpecVersion::parse("1.0.0").unwrap());
        let e = SpecVersion::parse("1.0.0.0").unwrap_err();
        assert_eq!(e.to_string(), "invalid version \"1.0.0.0\": too many parts");
        assert!(SpecVersion::parse("1.x").unwrap_err().reason.contains("minor"));
        assert!(at_least("garbage", "0.4.0").is_err());
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

    #[test]
    fn unsupported_versions_are_code_1() {
        assert!(check_supported("1.0.0").is_ok());
        let e = check_supported("1.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("\"1.2.0\""));
    }

    #[test]
    fn version_reply_is_one_json_line_that_reads_back() {
        let reply = version_reply();
        assert_eq!(
            reply,
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
        let info = VersionInfo::parse(reply.as_bytes()).unwrap();
        assert_eq!(info, VersionInfo::all());
        assert!(SUPPORTED.iter().all(|v| info.supports(v)));
    }

    #[test]
    fn version_reports() {
        let v = VersionInfo::parse(br#"{"cniVersion":"1.0.0","supportedVersions":["0.3.1","1.0.0"]}"#).unwrap();
        assert!(v.supports("1.0.0"));
        assert!(!v.supports("1.1.0"));
        assert_eq!(VersionInfo::parse(b"").unwrap().supported_versions, ["0.1.0", "0.2.0"]);
        assert_eq!(
            VersionInfo::parse(br#"{"cniVersion":"0.1.0"}"#)
                .unwrap()
                .supported_versions,
            ["0.1.0"]
        );
        assert!(VersionInfo::parse(b"nope").is_err());
    }
}
