//! The `istio-validation` init-container probe (`istio-cni validate`).
//!
//! Istio's injector adds an init container that runs
//! `istio-iptables … --run-validation --skip-rule-apply` as the proxy's
//! uid/gid. It checks that the CNI plugin has programmed the pod's
//! traffic-redirection rules before any application container starts. This
//! module reimplements that probe:
//!
//! 1. The host IP is the first non-loopback, non-link-local interface address;
//!    its family selects IPv4 or IPv6 ([`detect_host_ip`]). No such address →
//!    exit 1.
//! 2. Listeners on `127.0.0.1` (or `::1`) at the `-p` and `-z` ports, with
//!    `SO_REUSEADDR` and `SO_REUSEPORT`. Ports that cannot be bound are skipped;
//!    if none can be bound → exit 126.
//! 3. A client connects from `127.0.0.1:0` to `127.0.0.6:15002` (`[::1]:0` →
//!    `[::6]:15002`) once a second. The pod's rules redirect the proxy user's
//!    loopback traffic to the inbound capture port, so a listener receives
//!    the connection with `SO_ORIGINAL_DST` port 15002 → exit 0 and
//!    "Validation passed, iptables rules established".
//! 4. Nothing after `--probe-timeout` (default 5 s) → exit 126 with an
//!    explanation. The CNI agent's repair controller watches for exactly that
//!    exit code.
//!
//! The command never writes rules.
//!
//! Library entry points: [`main`] for the CLI, and [`run_probe`] with a
//! [`ProbeConfig`] for callers that want the verdict as a value.

pub mod args;
pub mod log;
pub mod probe;

use std::ffi::OsString;

pub use args::{EnvError, ISTIO_INJECTED_ARGS, Settings, ValidateArgs, parse_args, parse_go_duration};
pub use log::{LogLevel, Logger};
pub use probe::{
    DEFAULT_PROBE_PORT, DEFAULT_PROBE_TIMEOUT, HostAddresses, ProbeConfig, ProbeError, ProbeOutcome, detect_host_ip,
    run_probe, select_host_ip,
};

/// Exit status when the rules are in place.
pub const EXIT_PASSED: i32 = 0;
/// Exit status when validation failed (Istio's `ValidationErrorCode`); the
/// repair controller keys on it.
pub const EXIT_VALIDATION_FAILED: i32 = 126;
/// Exit status for configuration errors (no usable local IP, bad environment).
pub const EXIT_CONFIG_ERROR: i32 = 1;
/// Exit status for bad command-line arguments.
pub const EXIT_USAGE: i32 = 2;

/// Logged (at info) when the probe passes. Same text as Istio's.
pub const PASSED_MESSAGE: &str = "Validation passed, iptables rules established";

/// Parses the argument list (everything after `validate`) and runs the probe.
///
/// Returns the process exit code: [`EXIT_PASSED`] (0) pass,
/// [`EXIT_VALIDATION_FAILED`] (126) validation failure (timeout / no
/// listener), [`EXIT_CONFIG_ERROR`] (1) configuration error (e.g. no usable
/// local IP, bad environment value), [`EXIT_USAGE`] (2) bad arguments (clap's
/// message is printed to stderr). `--help` prints to stdout and returns 0.
/// Environment variables provide defaults, see [`args::ENV_VARS`].
pub fn main(args: &[OsString]) -> i32 {
    let parsed = match parse_args(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            // Help goes to stdout, errors to stderr.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let settings = match parsed.resolve(&|var| std::env::var(var).ok()) {
        Ok(s) => s,
        Err(e) => {
            let log = Logger {
                json: parsed.log_as_json.unwrap_or(false),
                ..Logger::default()
            };
            log.error(e);
            return EXIT_CONFIG_ERROR;
        }
    };
    run(&settings)
}

/// Runs the probe with already-resolved settings, logging progress and the
/// verdict to stderr, and returns the exit code (see [`main`]).
pub fn run(settings: &Settings) -> i32 {
    let log = settings.log;
    if settings.rule_apply_requested {
        log.info("--skip-rule-apply=false ignored: this command never writes rules");
    }
    let host = match detect_host_ip() {
        Ok(h) => h,
        Err(e) => {
            log.error(format_args!("Validation cannot run: {e}"));
            return e.exit_code();
        }
    };
    let ipv6 = host.host_ip.is_ipv6();
    if settings.dual_stack && host.has_ipv4 && host.has_ipv6 {
        log.info(format_args!(
            "Dual-stack pod: probing over {} only (the family of the first address)",
            if ipv6 { "IPv6" } else { "IPv4" }
        ));
    }
    let config = settings.probe_config(ipv6);
    log.info(format_args!(
        "Starting iptables validation: host IP {}, listening on {} ports {} and {}, \
         expecting connections to {} to be redirected (timeout {})",
        host.host_ip,
        config.listen_ip(),
        settings.envoy_port,
        settings.inbound_capture_port,
        config.target(),
        args::format_go_duration(config.timeout),
    ));

    match run_probe(&config) {
        Ok(ProbeOutcome::Passed { .. }) => {
            log.info(PASSED_MESSAGE);
            EXIT_PASSED
        }
        Ok(ProbeOutcome::TimedOut {
            attempts, last_error, ..
        }) => {
            log.error(timeout_message(settings, &config, attempts, last_error.as_deref()));
            EXIT_VALIDATION_FAILED
        }
        Err(e) => {
            let code = e.exit_code();
            if code == EXIT_VALIDATION_FAILED {
                log.error(format_args!(
                    "iptables validation failed; workload is not ready for Istio.\n\
                     {e}\n\
                     The probe could not listen on any of the sidecar's capture ports on {}; \
                     another process in the pod may already be using them.",
                    config.listen_ip()
                ));
            } else {
                log.error(format_args!("Validation cannot run: {e}"));
            }
            code
        }
    }
}

/// The multi-line explanation logged when the probe times out.
fn timeout_message(settings: &Settings, config: &ProbeConfig, attempts: u32, last_error: Option<&str>) -> String {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let last = last_error.map_or_else(String::new, |e| format!("; last error: {e}"));
    let proxy = match (&settings.proxy_uid, &settings.proxy_gid) {
        (Some(u), Some(g)) => format!(" (the rules capture uid {u} / gid {g})"),
        (Some(u), None) => format!(" (the rules capture uid {u})"),
        _ => String::new(),
    };
    format!(
        "iptables validation failed; workload is not ready for Istio.\n\
         validation timeout: no connection from {src} to {target} was redirected to the \
         sidecar's ports {p}/{z} within {timeout} ({attempts} attempts{last}).\n\
         The rules that redirect this pod's traffic through the Istio sidecar are missing from \
         its network namespace. The probe ran as uid {uid}, gid {gid}{proxy}.\n\
         When using Istio CNI, this happens when the pod was started on a node before the \
         node's istio-cni agent was ready (for example right after the node joined the \
         cluster, or while the agent was restarting or being upgraded).\n\
         If the istio-cni repair controller is enabled, it handles the pod: with \
         cni.repair.deletePods=true the pod is deleted and recreated with the rules in place \
         (labelPods only marks it; repairPods fixes it in place).\n\
         Otherwise, delete the pod once the istio-cni pod on its node is ready; its replacement \
         gets the rules.",
        src = config.listen_ip(),
        target = config.target(),
        p = settings.envoy_port,
        z = settings.inbound_capture_port,
        timeout = args::format_go_duration(config.timeout),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(main(&os(&["--bogus"])), EXIT_USAGE);
        assert_eq!(main(&os(&["-p", "not-a-port"])), EXIT_USAGE);
    }

    #[test]
    fn timeout_message_is_actionable() {
        let settings = parse_args(&os(&["-u", "1337"])).unwrap().resolve(&|_| None).unwrap();
        let config = settings.probe_config(false);
        let msg = timeout_message(&settings, &config, 5, Some("Connection refused"));
        assert!(msg.lines().count() >= 4, "{msg}");
        for needle in [
            "not ready for Istio",
            "127.0.0.6:15002",
            "Connection refused",
            "istio-cni",
            "repair",
            "delete the pod",
            "uid 1337",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
    }
}
