//! Command line of `istio-cni validate`.
//!
//! The accepted syntax is the one Istio's sidecar injector writes into the
//! `istio-validation` init container (the arguments of `istio-iptables`),
//! optionally preceded by the words `pilot-agent` and/or `istio-iptables`.
//! Only four settings change what the probe does: `-p`, `-z`,
//! `--iptables-probe-port` and `--probe-timeout`. Everything else is parsed
//! (so that a real injected pod spec works unchanged) and then ignored.
//!
//! Like Istio's binary, some flags take their default from an environment
//! variable named after the flag (see [`ENV_VARS`]); an explicit flag wins, and
//! an empty variable counts as unset.

use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;

use super::log::{LogLevel, Logger};
use super::probe::{DEFAULT_PROBE_PORT, DEFAULT_PROBE_TIMEOUT, ProbeConfig};

/// Default outbound capture port (`-p`).
pub const DEFAULT_ENVOY_PORT: u16 = 15001;
/// Default inbound capture port (`-z`).
pub const DEFAULT_INBOUND_CAPTURE_PORT: u16 = 15006;

/// Environment variables read by `istio-cni validate`, with the flag each one
/// provides a default for. Names follow Istio's rule (flag name upper-cased,
/// `-` turned into `_`), except `ISTIO_DUAL_STACK`, which is what the injector
/// and proxyMetadata use.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("ENVOY_PORT", "-p/--envoy-port"),
    ("INBOUND_CAPTURE_PORT", "-z/--inbound-capture-port"),
    ("IPTABLES_PROBE_PORT", "--iptables-probe-port"),
    ("PROBE_TIMEOUT", "--probe-timeout"),
    ("ISTIO_DUAL_STACK", "--dual-stack"),
    ("PROXY_UID", "-u/--proxy-uid"),
    ("PROXY_GID", "-g/--proxy-gid"),
];

const ABOUT: &str = "Check that this pod's traffic-redirection rules are in place \
(the probe run by the istio-validation init container)";

const LONG_ABOUT: &str = "\
Check that this pod's traffic-redirection rules are in place (the probe run by
the istio-validation init container).

Listens on 127.0.0.1 (::1 when the pod's first address is IPv6) on the -p and -z
ports, then connects from 127.0.0.1 to 127.0.0.6:<probe port> ([::6] for IPv6)
once a second. If the pod's nat rules redirect that connection to one of the
listeners with the original destination port equal to the probe port, the
rules are in place and the command exits 0. Otherwise it exits 126 after the
timeout. Run it as the proxy's uid/gid: the rules only capture that user's
traffic.

This command never writes iptables or nftables rules. --skip-rule-apply is
implied and --run-validation is always on; both, and every other istio-iptables
flag the sidecar injector emits, are accepted so the init container's argument
list can be passed unchanged (optionally starting with the word
`istio-iptables`). Flags other than -p, -z, --iptables-probe-port,
--probe-timeout and the log flags do not change what the probe does.";

const AFTER_HELP: &str = "\
Environment (an explicit flag wins; empty values are ignored):
  ENVOY_PORT            default for -p (15001)
  INBOUND_CAPTURE_PORT  default for -z (15006)
  IPTABLES_PROBE_PORT   default for --iptables-probe-port (15002)
  PROBE_TIMEOUT         default for --probe-timeout (5s)
  ISTIO_DUAL_STACK      default for --dual-stack (false)
  PROXY_UID, PROXY_GID  defaults for -u/-g (only reported on failure)

Exit status:
  0    rules are in place (\"Validation passed, iptables rules established\")
  126  validation failed: timeout, or no listener could be bound
  1    configuration error (no usable local IP address, bad environment value)
  2    bad command-line arguments";

const IGNORED: &str = "istio-iptables flags (accepted, no effect on the probe)";

/// Parsed command line of `istio-cni validate`.
///
/// Fields are `None` when the flag was not given; [`ValidateArgs::resolve`]
/// fills them from the environment and the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Parser)]
#[command(
    name = "istio-cni validate",
    bin_name = "istio-cni validate",
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    args_override_self = true,
    disable_version_flag = true
)]
pub struct ValidateArgs {
    /// Outbound capture port to listen on [env: ENVOY_PORT] [default: 15001]
    #[arg(short = 'p', long = "envoy-port", value_name = "PORT", value_parser = parse_port)]
    pub envoy_port: Option<u16>,

    /// Inbound capture port to listen on [env: INBOUND_CAPTURE_PORT] [default: 15006]
    #[arg(short = 'z', long = "inbound-capture-port", value_name = "PORT", value_parser = parse_port)]
    pub inbound_capture_port: Option<u16>,

    /// Original destination port that proves the redirect [env: IPTABLES_PROBE_PORT] [default: 15002]
    #[arg(
        long = "iptables-probe-port",
        visible_alias = "nftables-probe-port",
        value_name = "PORT",
        value_parser = parse_port
    )]
    pub probe_port: Option<u16>,

    /// How long to keep trying, as a Go duration (5s, 500ms, 1m30s) [env: PROBE_TIMEOUT] [default: 5s]
    #[arg(long = "probe-timeout", value_name = "DURATION", value_parser = parse_go_duration)]
    pub probe_timeout: Option<Duration>,

    /// Dual-stack pod; the probe still uses the family of the first address [env: ISTIO_DUAL_STACK]
    #[arg(long = "dual-stack", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub dual_stack: Option<bool>,

    /// Proxy uid the rules exempt/capture; reported on failure only [env: PROXY_UID]
    #[arg(short = 'u', long = "proxy-uid", value_name = "UID")]
    pub proxy_uid: Option<String>,

    /// Proxy gid the rules exempt/capture; reported on failure only [env: PROXY_GID]
    #[arg(short = 'g', long = "proxy-gid", value_name = "GID")]
    pub proxy_gid: Option<String>,

    /// Run the probe (always on; accepted for compatibility)
    #[arg(long = "run-validation", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub run_validation: Option<bool>,

    /// Do not write rules (always the case: this command never writes rules)
    #[arg(long = "skip-rule-apply", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub skip_rule_apply: Option<bool>,

    /// Log level, Istio style: `default:debug` shows every connection attempt
    #[arg(long = "log_output_level", value_name = "SCOPE:LEVEL,...")]
    pub log_output_level: Option<String>,

    /// Log one JSON object per line
    #[arg(long = "log_as_json", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub log_as_json: Option<bool>,

    /// Flags accepted for compatibility and ignored.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// One istio-iptables flag that has no effect on the probe.
struct IgnoredFlag {
    long: &'static str,
    short: Option<char>,
    alias: Option<&'static str>,
    /// `BOOL` flags take Go booleans and may stand alone (`--x` = `--x=true`).
    value_name: &'static str,
    help: &'static str,
}

const fn flag(long: &'static str, short: Option<char>, value_name: &'static str, help: &'static str) -> IgnoredFlag {
    IgnoredFlag {
        long,
        short,
        alias: None,
        value_name,
        help,
    }
}

const LOG_FLAG: &str = "Istio log flag";

/// Every flag [`IgnoredArgs`] accepts, in help order.
const IGNORED_FLAGS: &[IgnoredFlag] = &[
    flag(
        "istio-inbound-interception-mode",
        Some('m'),
        "MODE",
        "Inbound interception mode (REDIRECT or TPROXY)",
    ),
    flag("istio-inbound-tproxy-mark", Some('t'), "MARK", "TPROXY mark"),
    flag(
        "istio-inbound-tproxy-route-table",
        Some('r'),
        "TABLE",
        "TPROXY route table",
    ),
    flag("istio-inbound-ports", Some('b'), "PORTS", "Inbound ports to capture"),
    flag(
        "istio-local-exclude-ports",
        Some('d'),
        "PORTS",
        "Inbound ports to exclude",
    ),
    flag("istio-exclude-interfaces", Some('c'), "IFACES", "Interfaces to exclude"),
    flag("istio-service-cidr", Some('i'), "CIDRS", "Outbound CIDRs to capture"),
    flag(
        "istio-service-exclude-cidr",
        Some('x'),
        "CIDRS",
        "Outbound CIDRs to exclude",
    ),
    flag("istio-outbound-ports", Some('q'), "PORTS", "Outbound ports to capture"),
    flag(
        "istio-local-outbound-ports-exclude",
        Some('o'),
        "PORTS",
        "Outbound ports to exclude",
    ),
    flag("inbound-tunnel-port", Some('e'), "PORT", "Inbound tunnel port"),
    IgnoredFlag {
        alias: Some("reroute-virtual-interfaces"),
        ..flag(
            "kube-virt-interfaces",
            Some('k'),
            "IFACES",
            "Virtual interfaces whose inbound traffic is treated as outbound",
        )
    },
    flag("network-namespace", None, "PATH", "Network namespace to program"),
    flag("dry-run", Some('n'), "BOOL", "Print the rules instead of applying them"),
    flag("restore-format", Some('f'), "BOOL", "Use iptables-restore format"),
    flag("iptables-trace-logging", None, "BOOL", "Add iptables trace rules"),
    flag("redirect-dns", None, "BOOL", "Capture DNS"),
    flag("drop-invalid", None, "BOOL", "Drop invalid packets"),
    flag("capture-all-dns", None, "BOOL", "Capture all DNS"),
    flag("cni-mode", None, "BOOL", "CNI mode"),
    flag("reconcile", None, "BOOL", "Reconcile existing rules"),
    flag("cleanup-only", None, "BOOL", "Only remove rules"),
    flag("force-apply", None, "BOOL", "Apply even if rules exist"),
    flag("native-nftables", None, "BOOL", "Use native nftables"),
    flag(
        "force-legacy-iptables",
        None,
        "BOOL",
        "Force the legacy iptables backend",
    ),
    flag("log_stacktrace_level", None, "SCOPE:LEVEL,...", LOG_FLAG),
    flag("log_caller", None, "SCOPES", LOG_FLAG),
    flag("log_target", None, "PATHS", LOG_FLAG),
    flag("log_rotate", None, "PATH", LOG_FLAG),
    flag("log_rotate_max_age", None, "DAYS", LOG_FLAG),
    flag("log_rotate_max_size", None, "MB", LOG_FLAG),
    flag("log_rotate_max_backups", None, "N", LOG_FLAG),
];

/// istio-iptables flags that have no effect on the probe ([`IGNORED_FLAGS`]).
/// They are parsed so the injected argument list is accepted as is (a Go
/// boolean must still be one); values are kept only for inspection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredArgs {
    given: std::collections::BTreeMap<&'static str, String>,
}

impl IgnoredArgs {
    /// The value of `--<long>` as given; `None` when absent.
    pub fn value(&self, long: &str) -> Option<&str> {
        self.given.get(long).map(String::as_str)
    }

    /// The value of the Go-boolean flag `--<long>`; `None` when absent.
    pub fn bool(&self, long: &str) -> Option<bool> {
        self.value(long).and_then(|v| parse_go_bool(v).ok())
    }
}

impl clap::FromArgMatches for IgnoredArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = IgnoredArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for f in IGNORED_FLAGS {
            let value = if f.value_name == "BOOL" {
                matches.get_one::<bool>(f.long).map(bool::to_string)
            } else {
                matches.get_one::<String>(f.long).cloned()
            };
            if let Some(value) = value {
                self.given.insert(f.long, value);
            }
        }
        Ok(())
    }
}

impl clap::Args for IgnoredArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.next_help_heading(IGNORED).args(IGNORED_FLAGS.iter().map(|f| {
            let mut arg = clap::Arg::new(f.long)
                .long(f.long)
                .value_name(f.value_name)
                .help(f.help)
                .action(clap::ArgAction::Set);
            if let Some(short) = f.short {
                arg = arg.short(short);
            }
            if let Some(alias) = f.alias {
                arg = arg.visible_alias(alias);
            }
            if f.value_name == "BOOL" {
                arg = arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_parser(parse_go_bool);
            }
            arg
        }))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// A bad environment value, reported with exit status 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} in environment variable {var}: {reason}")]
pub struct EnvError {
    /// Variable name.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// The effective settings after flags, environment and defaults are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `-p` port.
    pub envoy_port: u16,
    /// `-z` port.
    pub inbound_capture_port: u16,
    /// Expected original destination port.
    pub probe_port: u16,
    /// Overall deadline.
    pub timeout: Duration,
    /// `--dual-stack` (informational: the family follows the host IP).
    pub dual_stack: bool,
    /// `-u`, if known (reported on failure).
    pub proxy_uid: Option<String>,
    /// `-g`, if known (reported on failure).
    pub proxy_gid: Option<String>,
    /// Logging settings from the `--log_*` flags.
    pub log: Logger,
    /// `--skip-rule-apply=false` was given explicitly (rules are never written
    /// anyway; the caller may say so).
    pub rule_apply_requested: bool,
}

impl Settings {
    /// Builds the probe configuration for the given address family.
    pub fn probe_config(&self, ipv6: bool) -> ProbeConfig {
        let mut config = ProbeConfig::new(ipv6);
        config.listen_ports = vec![self.envoy_port, self.inbound_capture_port];
        config.probe_port = self.probe_port;
        config.timeout = self.timeout;
        config.log = self.log;
        config
    }
}

/// Parses the arguments that follow `validate`.
///
/// Leading `pilot-agent` and `istio-iptables` words (as found in the init
/// container's command and args) are skipped. The error is clap's: use
/// [`clap::Error::print`] and [`clap::Error::exit_code`] (0 for `--help`,
/// 2 for bad arguments).
pub fn parse_args(args: &[OsString]) -> Result<ValidateArgs, clap::Error> {
    let mut rest = args;
    if rest.first().is_some_and(|a| a == "pilot-agent") {
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|a| a == "istio-iptables") {
        rest = &rest[1..];
    }
    let argv = std::iter::once(OsString::from("istio-cni validate")).chain(rest.iter().cloned());
    ValidateArgs::try_parse_from(argv)
}

impl ValidateArgs {
    /// Merges flags with environment defaults (looked up through `env`, so
    /// tests need not touch the process environment) and built-in defaults.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, EnvError> {
        let envoy_port = or_env(self.envoy_port, env, "ENVOY_PORT", parse_port)?.unwrap_or(DEFAULT_ENVOY_PORT);
        let inbound_capture_port = or_env(self.inbound_capture_port, env, "INBOUND_CAPTURE_PORT", parse_port)?
            .unwrap_or(DEFAULT_INBOUND_CAPTURE_PORT);
        let probe_port = or_env(self.probe_port, env, "IPTABLES_PROBE_PORT", parse_port)?.unwrap_or(DEFAULT_PROBE_PORT);
        let timeout =
            or_env(self.probe_timeout, env, "PROBE_TIMEOUT", parse_go_duration)?.unwrap_or(DEFAULT_PROBE_TIMEOUT);
        let dual_stack = or_env(self.dual_stack, env, "ISTIO_DUAL_STACK", parse_go_bool)?.unwrap_or(false);
        let as_string = |s: &str| Ok::<_, String>(s.to_string());
        let proxy_uid = or_env(self.proxy_uid.clone(), env, "PROXY_UID", as_string)?;
        // As in istio-iptables, the gid defaults to the uid.
        let proxy_gid = or_env(self.proxy_gid.clone(), env, "PROXY_GID", as_string)?.or(proxy_uid.clone());

        let level = self
            .log_output_level
            .as_deref()
            .and_then(LogLevel::from_output_level)
            .unwrap_or(LogLevel::Info);
        let log = Logger {
            level,
            json: self.log_as_json.unwrap_or(false),
        };

        Ok(Settings {
            envoy_port,
            inbound_capture_port,
            probe_port,
            timeout,
            dual_stack,
            proxy_uid: proxy_uid.filter(|s| !s.is_empty()),
            proxy_gid: proxy_gid.filter(|s| !s.is_empty()),
            log,
            rule_apply_requested: self.skip_rule_apply == Some(false),
        })
    }
}

/// Returns the flag value if given, else the parsed environment variable
/// (empty counts as unset, like Istio's viper setup), else `None`.
fn or_env<T>(
    flag: Option<T>,
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, EnvError> {
    if flag.is_some() {
        return Ok(flag);
    }
    match env(var).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(value) => match parse(&value) {
            Ok(v) => Ok(Some(v)),
            Err(reason) => Err(EnvError { var, value, reason }),
        },
    }
}

/// Parses a TCP port, 1..=65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    let t = s.trim();
    match t.parse::<u16>() {
        Ok(0) => Err("port must be between 1 and 65535, got 0".to_string()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{s:?} is not a port number (1-65535)")),
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does: `1 t T TRUE true
/// True` and `0 f F FALSE false False`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (use true or false)")),
    }
}

/// Parses a Go duration string (`time.ParseDuration` syntax): a sequence of
/// decimal numbers, each with an optional fraction and a unit (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), such as `5s`, `500ms`, `1m30s` or `1.5h`. A bare
/// `0` is allowed. Negative durations are rejected (a timeout cannot be
/// negative).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {s:?}: {why} (examples: 5s, 500ms, 1m30s)");
    let mut rest = s;
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if let Some(r) = rest.strip_prefix('-') {
        if r == "0" {
            return Ok(Duration::ZERO);
        }
        return Err(invalid("must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid("empty"));
    }

    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        rest = after_int;
        // Optional fraction.
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number"));
        }
        // Unit.
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let (unit, after_unit) = rest.split_at(unit_len);
        rest = after_unit;
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(invalid("missing unit")),
            other => return Err(invalid(&format!("unknown unit {other:?}"))),
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid("number too large"))?
        };
        let mut value = int_value.checked_mul(unit_ns).ok_or_else(|| invalid("too large"))?;
        // Fraction: sum digit * unit / 10^k, truncating below a nanosecond
        // like Go does.
        let mut scale = unit_ns;
        for d in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            // An integer part near u128::MAX leaves no room for the fraction.
            value = value
                .checked_add(u128::from(d - b'0') * scale)
                .ok_or_else(|| invalid("too large"))?;
        }
        total_ns = total_ns.checked_add(value).ok_or_else(|| invalid("too large"))?;
    }
    // Go durations are int64 nanoseconds.
    if total_ns > i64::MAX as u128 {
        return Err(invalid("too large"));
    }
    let secs = (total_ns / 1_000_000_000) as u64;
    let nanos = (total_ns % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way Go prints it (`5s`, `500ms`, `1m30s`), for
/// messages.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let total_ns = d.as_nanos();
    if total_ns < 1_000 {
        return format!("{total_ns}ns");
    }
    if total_ns < 1_000_000 {
        return trim_fraction(total_ns, 1_000, "µs");
    }
    if total_ns < 1_000_000_000 {
        return trim_fraction(total_ns, 1_000_000, "ms");
    }
    let secs_ns = total_ns % 60_000_000_000;
    let mins = total_ns / 60_000_000_000;
    let h = mins / 60;
    let m = mins % 60;
    let s = trim_fraction(secs_ns, 1_000_000_000, "s");
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

fn trim_fraction(value: u128, unit: u128, suffix: &str) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return format!("{whole}{suffix}");
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}{suffix}", digits.trim_end_matches('0'))
}

/// The argument list Istio's injector writes into the `istio-validation`
/// init container of a default pod (docs/repair.md#arguments),
/// unchanged from 1.20 to today.
pub const ISTIO_INJECTED_ARGS: &[&str] = &[
    "istio-iptables",
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
    "--run-validation",
    "--skip-rule-apply",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn parse(args: &[&str]) -> Result<ValidateArgs, clap::Error> {
        parse_args(&os(args))
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn resolve_with(args: &ValidateArgs, env: &[(&str, &str)]) -> Result<Settings, EnvError> {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        args.resolve(&move |k: &str| map.get(k).cloned())
    }

    const ISTIO_ARGS: &[&str] = ISTIO_INJECTED_ARGS;

    #[test]
    fn full_istio_argument_list() {
        let a = parse(ISTIO_ARGS).expect("istio args must parse");
        assert_eq!(a.envoy_port, Some(15001));
        assert_eq!(a.inbound_capture_port, Some(15006));
        assert_eq!(a.proxy_uid.as_deref(), Some("1337"));
        assert_eq!(a.ignored.value("istio-inbound-interception-mode"), Some("REDIRECT"));
        assert_eq!(a.ignored.value("istio-service-cidr"), Some("*"));
        assert_eq!(a.ignored.value("istio-service-exclude-cidr"), Some(""));
        assert_eq!(a.ignored.value("istio-inbound-ports"), Some("*"));
        assert_eq!(a.ignored.value("istio-local-exclude-ports"), Some("15090,15021,15020"));
        assert_eq!(a.log_output_level.as_deref(), Some("default:info"));
        assert_eq!(a.run_validation, Some(true));
        assert_eq!(a.skip_rule_apply, Some(true));

        let s = a.resolve(&no_env).expect("resolve");
        assert_eq!(s.envoy_port, 15001);
        assert_eq!(s.inbound_capture_port, 15006);
        assert_eq!(s.probe_port, 15002);
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert!(!s.dual_stack);
        assert_eq!(s.proxy_uid.as_deref(), Some("1337"));
        assert_eq!(s.proxy_gid.as_deref(), Some("1337"));
        assert_eq!(s.log.level, LogLevel::Info);
        assert!(!s.rule_apply_requested);

        let c = s.probe_config(false);
        assert_eq!(c.listen_ports, vec![15001, 15006]);
        assert_eq!(c.probe_port, 15002);
        assert!(!c.ipv6);
    }

    #[test]
    fn pilot_agent_prefix_and_no_prefix() {
        let with = parse(&["pilot-agent", "istio-iptables", "-p", "15001"]).unwrap();
        let without = parse(&["-p", "15001"]).unwrap();
        assert_eq!(with, without);
        assert_eq!(with.envoy_port, Some(15001));
        // Only a leading word is stripped.
        assert!(parse(&["-p", "15001", "istio-iptables"]).is_err());
    }

    #[test]
    fn every_conditional_injector_flag() {
        // The default pod's command and ports (`istio-iptables -p 15001 -z
        // 15006 -u 1337`), then every flag the injector adds on a condition.
        let conditional = [
            "-g",
            "1338",
            "-m",
            "TPROXY",
            "-t",
            "1337",
            "-r",
            "133",
            "-i",
            "10.0.0.0/8,fd00::/8",
            "-x",
            "",
            "-b",
            "",
            "-d",
            "15090,15021,15020",
            "-q",
            "80,443",
            "-o",
            "3306",
            "-k",
            "eth1,eth2",
            "-c",
            "eth9",
            "-e",
            "15008",
            "--log_as_json",
            "--native-nftables",
            "--dual-stack",
            "--redirect-dns",
            "--capture-all-dns=false",
            "--drop-invalid",
            "--cni-mode",
            "--reconcile",
            "--cleanup-only=false",
            "--force-apply=false",
            "--force-legacy-iptables",
            "-n=false",
            "-f",
            "--network-namespace",
            "/var/run/netns/x",
            "--iptables-probe-port",
            "15003",
            "--probe-timeout",
            "500ms",
            "--log_output_level=default:debug",
            "--log_stacktrace_level=default:none",
            "--log_caller=",
            "--log_target=stderr",
            "--run-validation",
            "--skip-rule-apply",
        ];
        let a = parse(&[&ISTIO_INJECTED_ARGS[..7], &conditional].concat()).expect("must parse");
        assert_eq!(a.probe_port, Some(15003));
        assert_eq!(a.probe_timeout, Some(Duration::from_millis(500)));
        assert_eq!(a.dual_stack, Some(true));
        assert_eq!(a.log_as_json, Some(true));
        assert_eq!(a.ignored.bool("native-nftables"), Some(true));
        assert_eq!(a.ignored.bool("capture-all-dns"), Some(false));
        assert_eq!(a.ignored.bool("dry-run"), Some(false));
        assert_eq!(a.ignored.bool("restore-format"), Some(true));
        assert_eq!(a.ignored.value("istio-inbound-ports"), Some(""));
        assert_eq!(a.ignored.value("kube-virt-interfaces"), Some("eth1,eth2"));
        assert_eq!(a.ignored.value("log_caller"), Some(""));
        let s = a.resolve(&no_env).unwrap();
        assert_eq!(s.proxy_gid.as_deref(), Some("1338"));
        assert!(s.dual_stack);
        assert_eq!(s.log.level, LogLevel::Debug);
        assert!(s.log.json);
        assert_eq!(s.probe_port, 15003);
        assert_eq!(s.timeout, Duration::from_millis(500));
    }

    #[test]
    fn long_forms_and_equals_syntax() {
        let a = parse(&[
            "--envoy-port=15101",
            "--inbound-capture-port",
            "15106",
            "--proxy-uid=1000",
            "--istio-service-exclude-cidr=",
            "--reroute-virtual-interfaces=eth1",
            "--nftables-probe-port=15999",
            "--probe-timeout=1m30s",
            "-p15201",
        ])
        .unwrap();
        // Last occurrence wins, like pflag.
        assert_eq!(a.envoy_port, Some(15201));
        assert_eq!(a.inbound_capture_port, Some(15106));
        assert_eq!(a.ignored.value("istio-service-exclude-cidr"), Some(""));
        assert_eq!(a.ignored.value("kube-virt-interfaces"), Some("eth1"));
        assert_eq!(a.probe_port, Some(15999));
        assert_eq!(a.probe_timeout, Some(Duration::from_secs(90)));
    }

    #[test]
    fn plain_flags_and_defaults() {
        let a = parse(&["-p", "15001", "-z", "15006"]).unwrap();
        let s = a.resolve(&no_env).unwrap();
        assert_eq!((s.envoy_port, s.inbound_capture_port), (15001, 15006));
        assert_eq!(s.proxy_uid, None);
        assert_eq!(s.proxy_gid, None);

        let empty = parse(&[]).unwrap();
        let s = empty.resolve(&no_env).unwrap();
        assert_eq!(s.envoy_port, DEFAULT_ENVOY_PORT);
        assert_eq!(s.inbound_capture_port, DEFAULT_INBOUND_CAPTURE_PORT);
        assert_eq!(s.probe_port, DEFAULT_PROBE_PORT);
        assert_eq!(s.timeout, DEFAULT_PROBE_TIMEOUT);
    }

    #[test]
    fn environment_defaults() {
        let a = parse(&[]).unwrap();
        let s = resolve_with(
            &a,
            &[
                ("ENVOY_PORT", "16001"),
                ("INBOUND_CAPTURE_PORT", "16006"),
                ("IPTABLES_PROBE_PORT", "16002"),
                ("PROBE_TIMEOUT", "2s"),
                ("ISTIO_DUAL_STACK", "true"),
                ("PROXY_UID", "1000"),
            ],
        )
        .unwrap();
        assert_eq!(s.envoy_port, 16001);
        assert_eq!(s.inbound_capture_port, 16006);
        assert_eq!(s.probe_port, 16002);
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert!(s.dual_stack);
        assert_eq!(s.proxy_uid.as_deref(), Some("1000"));
        assert_eq!(s.proxy_gid.as_deref(), Some("1000"));

        // Flags win over the environment.
        let a = parse(&["-p", "15001", "--probe-timeout", "1s", "--dual-stack=false"]).unwrap();
        let s = resolve_with(
            &a,
            &[
                ("ENVOY_PORT", "16001"),
                ("PROBE_TIMEOUT", "2s"),
                ("ISTIO_DUAL_STACK", "true"),
            ],
        )
        .unwrap();
        assert_eq!(s.envoy_port, 15001);
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert!(!s.dual_stack);

        // Empty variables are unset.
        let s = resolve_with(&parse(&[]).unwrap(), &[("PROBE_TIMEOUT", ""), ("ENVOY_PORT", "")]).unwrap();
        assert_eq!(s.timeout, DEFAULT_PROBE_TIMEOUT);
        assert_eq!(s.envoy_port, DEFAULT_ENVOY_PORT);
    }

    #[test]
    fn bad_environment_values() {
        let a = parse(&[]).unwrap();
        let e = resolve_with(&a, &[("PROBE_TIMEOUT", "5")]).unwrap_err();
        assert_eq!(e.var, "PROBE_TIMEOUT");
        assert!(e.to_string().contains("missing unit"), "{e}");
        let e = resolve_with(&a, &[("ENVOY_PORT", "70000")]).unwrap_err();
        assert_eq!(e.var, "ENVOY_PORT");
        let e = resolve_with(&a, &[("ISTIO_DUAL_STACK", "yes")]).unwrap_err();
        assert_eq!(e.var, "ISTIO_DUAL_STACK");
        // A bad variable is irrelevant when the flag is given.
        let a = parse(&["--probe-timeout", "1s"]).unwrap();
        assert!(resolve_with(&a, &[("PROBE_TIMEOUT", "garbage")]).is_ok());
    }

    #[test]
    fn unknown_flag_is_a_usage_error() {
        let e = parse(&["-p", "15001", "--no-such-flag"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
        let e = parse(&["-Y"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["stray-positional"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["-p", "abc"][..],
            &["-p", ""],
            &["-z", "0"],
            &["-z", "65536"],
            &["--probe-timeout", "5"],
            &["--probe-timeout", "soon"],
            &["--probe-timeout", "-1s"],
            &["--run-validation=maybe"],
            &["-p"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn bool_flags_do_not_swallow_the_next_argument() {
        let a = parse(&["--run-validation", "--skip-rule-apply", "-p", "15001"]).unwrap();
        assert_eq!(a.run_validation, Some(true));
        assert_eq!(a.envoy_port, Some(15001));
        let a = parse(&["--skip-rule-apply=false"]).unwrap();
        let s = a.resolve(&no_env).unwrap();
        assert!(s.rule_apply_requested);
        // `--run-validation true` is a stray positional, as in pflag.
        assert!(parse(&["--run-validation", "true"]).is_err());
    }

    #[test]
    fn help_is_not_an_error_exit() {
        let e = parse(&["--help"]).unwrap_err();
        assert_eq!(e.exit_code(), 0);
        let text = e.to_string();
        assert!(text.contains("never writes"), "{text}");
        assert!(text.contains("PROBE_TIMEOUT"), "{text}");
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("1m", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("2h", Duration::from_secs(7200)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("10µs", Duration::from_micros(10)),
            ("10μs", Duration::from_micros(10)),
            ("0", Duration::ZERO),
            ("+3s", Duration::from_secs(3)),
            ("0s", Duration::ZERO),
            ("1.0000000001s", Duration::from_secs(1)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_duration(s), Ok(want), "{s}");
        }
        for s in [
            "",
            "5",
            "s",
            "5x",
            "1.s.",
            "-5s",
            "5s ",
            " 5s",
            "1e3s",
            "9999999999999h",
            // The fraction's add overflowed u128 (a panic with overflow checks).
            "340282366920938463463374607431768211.999us",
        ] {
            assert!(parse_go_duration(s).is_err(), "{s:?} should fail");
        }
    }

    #[test]
    fn go_duration_formatting() {
        assert_eq!(format_go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false));
        }
        assert!(parse_go_bool("yes").is_err());
        assert!(parse_go_bool("").is_err());
    }
}
