#![no_main]
//! `istio-cni validate`'s command line: an argument vector as the
//! istio-validation init container passes it (any bytes, not only UTF-8),
//! and the environment variables that give flags their defaults.
//!
//! Input: one argument per line, then a line `%env`, then `KEY=VALUE` lines.
//!
//! Invariants: no panic; refused arguments get clap's message (`error: ...`,
//! exit 2) and `--help` its text (exit 0); bad environment values get an
//! error naming the variable; accepted settings have non-zero ports, a flag
//! wins over its variable, and the timeout prints as a Go duration that
//! parses back to the same value.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use istio_cni::validate::args::{ENV_VARS, format_go_duration};
use istio_cni::validate::{parse_args, parse_go_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (args, env) = split(data);
    let parsed = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            let text = e.render().to_string();
            match e.exit_code() {
                0 => assert!(text.contains("Usage: istio-cni validate"), "help text: {text}"),
                2 => assert!(text.starts_with("error: "), "not a clap-style error: {text}"),
                other => panic!("exit code {other} for {args:?}: {text}"),
            }
            return;
        }
    };
    let settings = match parsed.resolve(&|k| env.get(k).cloned()) {
        Ok(settings) => settings,
        Err(e) => {
            let message = e.to_string();
            assert!(
                ENV_VARS.iter().any(|(var, _)| *var == e.var),
                "unknown variable {}",
                e.var
            );
            assert!(message.contains(e.var), "the error names the variable: {message}");
            return;
        }
    };
    for port in [settings.envoy_port, settings.inbound_capture_port, settings.probe_port] {
        assert_ne!(port, 0, "port 0 accepted: {args:?} {env:?}");
    }
    if let Some(p) = parsed.envoy_port {
        assert_eq!(settings.envoy_port, p, "the flag wins over ENVOY_PORT");
    }
    if let Some(t) = parsed.probe_timeout {
        assert_eq!(settings.timeout, t, "the flag wins over PROBE_TIMEOUT");
    }
    let printed = format_go_duration(settings.timeout);
    assert_eq!(
        parse_go_duration(&printed),
        Ok(settings.timeout),
        "{:?} prints as {printed:?}",
        settings.timeout
    );
    for ipv6 in [false, true] {
        let config = settings.probe_config(ipv6);
        assert_eq!(
            config.listen_ports,
            [settings.envoy_port, settings.inbound_capture_port]
        );
    }
});

/// Arguments (raw bytes) and the environment (UTF-8 lines with `=`).
fn split(data: &[u8]) -> (Vec<OsString>, HashMap<String, String>) {
    let mut args = Vec::new();
    let mut env = HashMap::new();
    let mut in_env = false;
    // A trailing newline ends the last line; it does not start an empty one.
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    if data.is_empty() {
        return (args, env);
    }
    for line in data.split(|&b| b == b'\n') {
        if in_env {
            if let Some((k, v)) = std::str::from_utf8(line).ok().and_then(|l| l.split_once('=')) {
                env.insert(k.to_string(), v.to_string());
            }
        } else if line == b"%env" {
            in_env = true;
        } else {
            args.push(OsString::from_vec(line.to_vec()));
        }
    }
    (args, env)
}
