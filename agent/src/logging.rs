//! The agent's log output in Istio's format and with Istio's scope semantics
//! (docs/istio-contract.md), so log pipelines built for Istio's install-cni parse
//! ours unchanged.
//!
//! Scopes: `cni-agent` (the agent's own records, and anything from this
//! workspace's crates), `cni-plugin` (the plugin's records re-emitted from
//! `log.sock`) and `default` (everything else: libraries). Each has its own
//! level, `info` unless `--log_output_level` names it; a bare level sets
//! `default` only and `all:<level>` sets every scope.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::config::LogSettings;

/// Istio's levels, least verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "none" => Level::None,
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    fn of(level: &tracing::Level) -> Level {
        match *level {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            _ => Level::Debug,
        }
    }

    fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            Level::None => LevelFilter::OFF,
            Level::Error => LevelFilter::ERROR,
            Level::Warn => LevelFilter::WARN,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::DEBUG,
        }
    }
}

/// The scope a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Default,
    Agent,
    Plugin,
}

impl Scope {
    /// The scope of a tracing target.
    pub fn of(target: &str) -> Scope {
        match target {
            "cni-agent" => Scope::Agent,
            "cni-plugin" => Scope::Plugin,
            t if t.starts_with("istio_cni") => Scope::Agent,
            _ => Scope::Default,
        }
    }

    /// The name written with the record; none for `default`, as Istio does.
    pub fn emitted(self) -> Option<&'static str> {
        match self {
            Scope::Default => None,
            Scope::Agent => Some("cni-agent"),
            Scope::Plugin => Some("cni-plugin"),
        }
    }
}

/// Each scope's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeLevels {
    pub default: Level,
    pub agent: Level,
    pub plugin: Level,
}

impl ScopeLevels {
    /// Parses `<scope>:<level>,...`. A bare level is `default`'s; `all` sets
    /// every scope and ends the list; a scope this agent does not have
    /// (Istio's other binaries have many) is ignored, as Istio does.
    pub fn parse(spec: &str) -> Result<ScopeLevels, String> {
        Self::parse_over(spec, Level::Info)
    }

    /// [`ScopeLevels::parse`] with every scope starting at `base`.
    pub fn parse_over(spec: &str, base: Level) -> Result<ScopeLevels, String> {
        let mut levels = ScopeLevels {
            default: base,
            agent: base,
            plugin: base,
        };
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (scope, level) = match item.split(':').collect::<Vec<_>>()[..] {
                [level] => ("default", level),
                [scope, level] => (scope, level),
                _ => return Err(format!("{item:?} is not <scope>:<level>")),
            };
            let level = Level::parse(level).ok_or_else(|| {
                let context = if item == level {
                    String::new()
                } else {
                    format!("{item:?}: ")
                };
                format!("{context}{level:?} is not a level (debug, info, warn, error or none)")
            })?;
            match scope {
                "all" => {
                    levels = ScopeLevels {
                        default: level,
                        agent: level,
                        plugin: level,
                    };
                    break;
                }
                "default" => levels.default = level,
                "cni-agent" => levels.agent = level,
                "cni-plugin" => levels.plugin = level,
                _ => {}
            }
        }
        Ok(levels)
    }

    pub fn of(&self, scope: Scope) -> Level {
        match scope {
            Scope::Default => self.default,
            Scope::Agent => self.agent,
            Scope::Plugin => self.plugin,
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        Level::of(meta.level()) <= self.of(Scope::of(meta.target()))
    }
}

/// The scopes named by `--log_caller` (`all` for every one).
fn caller_scopes(spec: &str) -> Vec<Scope> {
    let mut scopes = Vec::new();
    for name in spec.split(',').map(str::trim) {
        match name {
            "all" => return vec![Scope::Default, Scope::Agent, Scope::Plugin],
            "default" => scopes.push(Scope::Default),
            "cni-agent" => scopes.push(Scope::Agent),
            "cni-plugin" => scopes.push(Scope::Plugin),
            _ => {}
        }
    }
    scopes
}

/// How records are written.
#[derive(Debug, Clone)]
pub struct Format {
    pub levels: ScopeLevels,
    pub json: bool,
    pub callers: Vec<Scope>,
}

impl Format {
    pub fn from_settings(s: &LogSettings) -> Result<Format, String> {
        Ok(Format {
            levels: ScopeLevels::parse(&s.output_level).map_err(|e| format!("--log_output_level: {e}"))?,
            json: s.as_json,
            callers: caller_scopes(&s.caller),
        })
    }

    /// One record as one line (with its `\n`).
    pub fn line(&self, record: &Record) -> String {
        let mut out = String::new();
        if self.json {
            let mut pairs: Vec<(&str, Value)> = vec![
                ("level", Value::from(record.level.as_str())),
                ("time", Value::from(record.time.as_str())),
            ];
            if let Some(scope) = record.scope.emitted() {
                pairs.push(("scope", Value::from(scope)));
            }
            if let Some(caller) = &record.caller {
                pairs.push(("caller", Value::from(caller.as_str())));
            }
            pairs.push(("msg", Value::from(record.msg.as_str())));
            pairs.extend(record.fields.iter().map(|(k, v)| (k.as_str(), v.clone())));
            push_object(&mut out, &pairs);
        } else {
            let _ = write!(out, "{}\t{}", record.time, record.level.as_str());
            if let Some(scope) = record.scope.emitted() {
                let _ = write!(out, "\t{scope}");
            }
            if let Some(caller) = &record.caller {
                let _ = write!(out, "\t{caller}");
            }
            let _ = write!(out, "\t{}", record.msg);
            if !record.fields.is_empty() {
                out.push('\t');
                let pairs: Vec<(&str, Value)> = record.fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                push_object(&mut out, &pairs);
            }
        }
        out.push('\n');
        out
    }
}

/// A JSON object with the keys in the given order.
fn push_object(out: &mut String, pairs: &[(&str, Value)]) {
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
}

/// One record, ready to format.
#[derive(Debug, Clone)]
pub struct Record {
    pub time: String,
    pub level: Level,
    pub scope: Scope,
    pub caller: Option<String>,
    pub msg: String,
    pub fields: Vec<(String, Value)>,
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    msg: String,
    time: Option<String>,
    fields: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::String(s)) => self.msg = s,
            // The plugin's own timestamp, kept as Istio keeps it.
            ("time", Value::String(s)) if !s.is_empty() => self.time = Some(s),
            (name, v) => self.fields.push((name.to_string(), v)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

/// Where lines go.
pub enum Target {
    Stdout,
    Stderr,
    File(File),
}

impl Target {
    /// `stdout`, `stderr`, or a file opened for appending.
    pub fn open(spec: &str) -> Result<Target, String> {
        match spec {
            "stdout" => Ok(Target::Stdout),
            "stderr" => Ok(Target::Stderr),
            path => OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Target::File)
                .map_err(|e| format!("--log_target {path}: {e}")),
        }
    }

    fn write_line(&mut self, line: &str) {
        // A log write that fails has nowhere better to be reported.
        let _ = match self {
            Target::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Target::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Target::File(f) => f.write_all(line.as_bytes()),
        };
    }
}

/// The tracing layer: filters by scope level and writes Istio's lines.
pub struct IstioLayer {
    format: Format,
    targets: Mutex<Vec<Target>>,
}

impl IstioLayer {
    pub fn new(format: Format, targets: Vec<Target>) -> IstioLayer {
        IstioLayer {
            format,
            targets: Mutex::new(targets),
        }
    }
}

impl<S: Subscriber> Layer<S> for IstioLayer {
    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.format.levels.enabled(meta)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        let l = &self.format.levels;
        Some(l.default.max(l.agent).max(l.plugin).filter())
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let scope = Scope::of(meta.target());
        let caller = self
            .format
            .callers
            .contains(&scope)
            .then(|| format!("{}:{}", meta.file().unwrap_or("?"), meta.line().unwrap_or(0)));
        let record = Record {
            time: fields.time.unwrap_or_else(|| timestamp(SystemTime::now())),
            level: Level::of(meta.level()),
            scope,
            caller,
            msg: fields.msg,
            fields: fields.fields,
        };
        let line = self.format.line(&record);
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        for t in targets.iter_mut() {
            t.write_line(&line);
        }
    }
}

/// Installs the global subscriber for these settings; returns notes on
/// what was accepted but is not supported, to log once logging is up.
pub fn init(s: &LogSettings) -> Result<Vec<String>, String> {
    let format = Format::from_settings(s)?;
    let targets = if s.target.is_empty() {
        vec![Target::Stderr]
    } else {
        s.target.iter().map(|t| Target::open(t)).collect::<Result<_, _>>()?
    };
    tracing_subscriber::registry()
        .with(IstioLayer::new(format, targets))
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    let mut notes = vec![format!(
        "ControlZ is not supported: --ctrlz_port={} --ctrlz_address={} are ignored",
        s.ctrlz_port, s.ctrlz_address
    )];
    let none = ScopeLevels::parse_over("", Level::None)?;
    let stack = ScopeLevels::parse_over(&s.stacktrace_level, Level::None)?;
    if stack != none {
        notes.push(format!(
            "stack traces are not captured: --log_stacktrace_level={} is ignored",
            s.stacktrace_level
        ));
    }
    if !s.rotate.is_empty() {
        notes.push(format!(
            "log rotation is not supported: --log_rotate={} is ignored",
            s.rotate
        ));
    }
    Ok(notes)
}

/// `2006-01-02T15:04:05.000000Z` in UTC, Istio's timestamp layout.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01, counted in
/// 400-year eras that start on 1 March (so leap days fall at an era's end).
fn civil_date(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn scope_semantics_are_istios() {
        let l = ScopeLevels::parse("info").unwrap();
        assert_eq!((l.default, l.agent, l.plugin), (Level::Info, Level::Info, Level::Info));
        // A bare level and `default:` only touch unnamed scopes.
        let l = ScopeLevels::parse("default:debug").unwrap();
        assert_eq!((l.default, l.agent, l.plugin), (Level::Debug, Level::Info, Level::Info));
        assert_eq!(ScopeLevels::parse("debug").unwrap(), l);
        let l = ScopeLevels::parse("cni-plugin:debug,cni-agent:warn,klog:error").unwrap();
        assert_eq!((l.default, l.agent, l.plugin), (Level::Info, Level::Warn, Level::Debug));
        let l = ScopeLevels::parse("all:none,cni-agent:debug").unwrap();
        assert_eq!((l.default, l.agent, l.plugin), (Level::None, Level::None, Level::None));
        let err = ScopeLevels::parse("cni-agent:verbose").unwrap_err();
        assert!(err.contains("\"verbose\" is not a level"), "{err}");
        assert!(ScopeLevels::parse("a:b:c").is_err());
        assert_eq!(Scope::of("istio_cni_agent::repair::controller"), Scope::Agent);
        assert_eq!(Scope::of("hyper::proto"), Scope::Default);
    }

    fn record(scope: Scope) -> Record {
        Record {
            time: "2026-08-01T10:00:00.000001Z".into(),
            level: Level::Info,
            scope,
            caller: None,
            msg: "installed \"x\"".into(),
            fields: vec![("pod".into(), Value::from("a/b")), ("n".into(), Value::from(3))],
        }
    }

    #[test]
    fn json_lines_have_istios_keys_in_order() {
        let f = Format {
            levels: ScopeLevels::parse("info").unwrap(),
            json: true,
            callers: vec![],
        };
        let line = f.line(&record(Scope::Agent));
        assert_eq!(
            line,
            "{\"level\":\"info\",\"time\":\"2026-08-01T10:00:00.000001Z\",\"scope\":\"cni-agent\",\"msg\":\"installed \\\"x\\\"\",\"pod\":\"a/b\",\"n\":3}\n"
        );
        let v: Value = serde_json::from_str(&f.line(&record(Scope::Default))).unwrap();
        assert!(v.get("scope").is_none(), "{v}");
    }

    #[test]
    fn text_lines_are_tab_separated_without_colour() {
        let f = Format {
            levels: ScopeLevels::parse("info").unwrap(),
            json: false,
            callers: vec![Scope::Plugin],
        };
        let mut r = record(Scope::Plugin);
        r.fields.clear();
        r.caller = Some("src/x.rs:3".into());
        assert_eq!(
            f.line(&r),
            "2026-08-01T10:00:00.000001Z\tinfo\tcni-plugin\tsrc/x.rs:3\tinstalled \"x\"\n"
        );
        let line = f.line(&record(Scope::Default));
        assert_eq!(
            line,
            "2026-08-01T10:00:00.000001Z\tinfo\tinstalled \"x\"\t{\"pod\":\"a/b\",\"n\":3}\n"
        );
        assert!(!line.contains('\u{1b}'));
    }

    #[test]
    fn timestamps_are_utc_microseconds() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(951_827_696_123_456); // leap day 2000
        assert_eq!(timestamp(t), "2000-02-29T12:34:56.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // last second of 2099
        assert_eq!(timestamp(t), "2099-12-31T23:59:59.000000Z");
    }
}
