//! A tiny stderr logger for the probe.
//!
//! The probe is a short-lived program that runs before anything else in the
//! pod, so it writes straight to stderr instead of installing a `tracing`
//! subscriber. Lines look like Istio's text format
//! (`<RFC 3339 UTC time>\t<level>\t<message>`), or one JSON object per line with
//! `--log_as_json`.

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of a log line, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Per-attempt detail, such as each refused connection.
    Debug,
    /// Progress and the final verdict.
    Info,
    /// Something was skipped but the probe goes on (for example a port that
    /// could not be bound).
    Warn,
    /// The probe failed.
    Error,
    /// Nothing is logged.
    None,
}

impl LogLevel {
    /// Parses an Istio level name (`debug`, `info`, `warn`, `error`, `fatal`,
    /// `none`), ignoring ASCII case. `fatal` is treated as `error`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" | "warning" => Some(Self::Warn),
            "error" | "fatal" => Some(Self::Error),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The name printed in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::None => "none",
        }
    }

    /// Picks the level for the `default` scope out of an Istio
    /// `--log_output_level` value such as `default:info` or
    /// `all:debug,ads:warn`, or a bare level such as `debug`.
    ///
    /// Returns `None` when the value names no level for `default` (or `all`).
    pub fn from_output_level(spec: &str) -> Option<Self> {
        let mut found = None;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once(':') {
                Some((scope, level)) => {
                    let scope = scope.trim();
                    if scope == "default" || scope == "all" {
                        if let Some(level) = Self::parse(level) {
                            found = Some(level);
                        }
                    }
                }
                None => {
                    if let Some(level) = Self::parse(item) {
                        found = Some(level);
                    }
                }
            }
        }
        found
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how the probe logs. Always writes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logger {
    /// Lines below this level are dropped.
    pub level: LogLevel,
    /// One JSON object per line instead of tab-separated text.
    pub json: bool,
}

impl Default for Logger {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            json: false,
        }
    }
}

impl Logger {
    /// A logger that drops everything (useful in tests).
    pub fn silent() -> Self {
        Self {
            level: LogLevel::None,
            json: false,
        }
    }

    /// Whether a line at `level` would be written.
    pub fn enabled(&self, level: LogLevel) -> bool {
        level != LogLevel::None && level >= self.level
    }

    /// Writes one log line (or block, for multi-line messages) at `level`.
    pub fn log(&self, level: LogLevel, msg: impl fmt::Display) {
        if !self.enabled(level) {
            return;
        }
        let time = rfc3339_utc(SystemTime::now());
        let msg = msg.to_string();
        let line = if self.json {
            serde_json::json!({ "time": time, "level": level.as_str(), "msg": msg }).to_string()
        } else {
            format!("{time}\t{level}\t{msg}")
        };
        // Logging must never abort the probe: ignore a closed stderr.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// Logs at [`LogLevel::Debug`].
    pub fn debug(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Debug, msg);
    }

    /// Logs at [`LogLevel::Info`].
    pub fn info(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Info, msg);
    }

    /// Logs at [`LogLevel::Warn`].
    pub fn warn(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Warn, msg);
    }

    /// Logs at [`LogLevel::Error`].
    pub fn error(&self, msg: impl fmt::Display) {
        self.log(LogLevel::Error, msg);
    }
}

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds).
fn rfc3339_utc(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Converts days since 1970-01-01 into a proleptic Gregorian (year, month,
/// day), using the era-based method (eras of 400 years = 146 097 days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, March-based
    let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are small and positive by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamp_format() {
        let t = UNIX_EPOCH + Duration::new(1_704_067_200 + 3661, 123_456_789);
        assert_eq!(rfc3339_utc(t), "2024-01-01T01:01:01.123456Z");
    }

    #[test]
    fn output_level() {
        assert_eq!(LogLevel::from_output_level("default:info"), Some(LogLevel::Info));
        assert_eq!(
            LogLevel::from_output_level("ads:warn,default:debug"),
            Some(LogLevel::Debug)
        );
        assert_eq!(LogLevel::from_output_level("debug"), Some(LogLevel::Debug));
        assert_eq!(LogLevel::from_output_level("all:error"), Some(LogLevel::Error));
        assert_eq!(LogLevel::from_output_level("ads:debug"), None);
        assert_eq!(LogLevel::from_output_level(""), None);
        assert_eq!(LogLevel::from_output_level("default:loud"), None);
    }

    #[test]
    fn levels_filter() {
        let l = Logger::default();
        assert!(!l.enabled(LogLevel::Debug));
        assert!(l.enabled(LogLevel::Info));
        assert!(l.enabled(LogLevel::Error));
        assert!(!l.enabled(LogLevel::None));
        assert!(!Logger::silent().enabled(LogLevel::Error));
    }
}
