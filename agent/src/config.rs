//! The agent's settings: Istio's flags and environment variables with the
//! same names and defaults (docs/agent.md#settings), plus the
//! paths Istio hard-codes, made settable so tests and platforms can move them.
//!
//! Every setting is a `--flag` and an environment variable (flag wins).
//! Unlike Istio, a bad value is rejected at start with a message naming the
//! setting instead of silently becoming `false`/`0`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args};

/// Everything `istio-cni-agent run` reads.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub install: InstallSettings,
    #[command(flatten)]
    pub repair: RepairSettings,
    #[command(flatten)]
    pub node: NodeFeatures,
    /// Port of `/healthz` and `/readyz` (Istio hard-codes 8000).
    #[arg(long, env = "HEALTH_PORT", default_value_t = 8000)]
    pub health_port: u16,
    /// Port of `/metrics`; 0 or below disables the metrics server.
    #[arg(long, env = "MONITORING_PORT", default_value_t = 15014, value_parser = parse_go_int, allow_negative_numbers = true)]
    pub monitoring_port: i64,
    /// Address the health and metrics servers bind; unset: `[::]` for both
    /// families (IPv4-mapped), or `0.0.0.0` where the kernel has no IPv6.
    #[arg(long, env = "LISTEN_ADDRESS")]
    pub listen_address: Option<IpAddr>,
    #[command(flatten)]
    pub log: LogSettings,
    #[command(flatten)]
    pub ignored: IgnoredSettings,
}

/// Istio's logging and introspection flags (its `pkg/log` and ControlZ).
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Per-scope levels, `<scope>:<level>,...`; a bare level is the `default`
    /// scope's; scopes `default`, `cni-agent`, `cni-plugin`, `all`; levels
    /// debug, info, warn, error, none.
    #[arg(long = "log_output_level", env = "LOG_OUTPUT_LEVEL", default_value = "default:info", value_parser = parse_output_level)]
    pub output_level: String,
    /// Log as JSON lines with Istio's keys (`level`, `time`, `scope`, `msg`).
    #[arg(long = "log_as_json", env = "LOG_AS_JSON", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub as_json: bool,
    /// Scopes whose records carry `caller` (source file and line); `all` for every scope.
    #[arg(long = "log_caller", default_value = "")]
    pub caller: String,
    /// Accepted for Istio's chart; stack traces are not captured.
    #[arg(long = "log_stacktrace_level", default_value = "default:none", value_parser = parse_output_level)]
    pub stacktrace_level: String,
    /// Where logs go: `stdout`, `stderr` or a file path (appended); repeatable.
    /// Unset: stderr.
    #[arg(long = "log_target")]
    pub target: Vec<String>,
    /// Accepted for Istio's chart; rotation is not implemented (logged as unsupported).
    #[arg(long = "log_rotate", default_value = "")]
    pub rotate: String,
    #[arg(long = "log_rotate_max_age", default_value_t = 30, hide = true)]
    pub rotate_max_age: i64,
    #[arg(long = "log_rotate_max_size", default_value_t = 104_857_600, hide = true)]
    pub rotate_max_size: i64,
    #[arg(long = "log_rotate_max_backups", default_value_t = 1000, hide = true)]
    pub rotate_max_backups: i64,
    /// Accepted for Istio's chart; ControlZ is not served (logged as unsupported).
    #[arg(long = "ctrlz_port", default_value_t = 9876)]
    pub ctrlz_port: u16,
    /// Accepted for Istio's chart; ControlZ is not served.
    #[arg(long = "ctrlz_address", default_value = "localhost")]
    pub ctrlz_address: String,
}

/// Flags Istio's install-cni registers that this agent accepts and ignores:
/// ambient-only ones (this agent implements the sidecar data plane) and ones
/// Istio itself no longer reads.
#[derive(Debug, Clone, Args)]
pub struct IgnoredSettings {
    /// Ambient only: ignored.
    #[arg(long, env = "ZTUNNEL_UDS_ADDRESS", hide = true)]
    pub ztunnel_uds_address: Option<String>,
    /// Ambient only (Istio acts on it only with ambient on): ignored.
    #[arg(long, env = "ISTIO_OWNED_CNI_CONFIG", hide = true)]
    pub istio_owned_cni_config: Option<String>,
    /// Ambient only: ignored.
    #[arg(long, env = "ISTIO_OWNED_CNI_CONFIG_FILENAME", hide = true)]
    pub istio_owned_cni_config_filename: Option<String>,
    /// Ignored by Istio since 1.23; ignored.
    #[arg(long, env = "CNI_NETWORK_CONFIG", hide = true)]
    pub cni_network_config: Option<String>,
    /// Ignored by Istio since 1.23; ignored.
    #[arg(long, env = "CNI_NETWORK_CONFIG_FILE", hide = true)]
    pub cni_network_config_file: Option<String>,
    /// Legacy, ignored by Istio; ignored.
    #[arg(long = "log-level", env = "LOG_LEVEL", hide = true)]
    pub legacy_log_level: Option<String>,
}

/// Environment-only keys of Istio's ConfigMap that only ambient mode reads.
pub const AMBIENT_ONLY_ENV: [&str; 5] = [
    "AMBIENT_DNS_CAPTURE",
    "AMBIENT_IPV6",
    "AMBIENT_RECONCILE_POD_RULES_ON_STARTUP",
    "AMBIENT_DISABLE_SAFE_UPGRADE",
    // The chart's spelling of ISTIO_OWNED_CNI_CONFIG_FILENAME.
    "ISTIO_OWNED_CNI_CONF_FILENAME",
];

impl Settings {
    /// The ambient-only settings that were given (flags or environment), by
    /// their environment names: accepted and ignored, and said so once.
    pub fn ambient_only_given(&self) -> Vec<&'static str> {
        let i = &self.ignored;
        let mut given: Vec<&'static str> = [
            ("ZTUNNEL_UDS_ADDRESS", i.ztunnel_uds_address.is_some()),
            ("ISTIO_OWNED_CNI_CONFIG", i.istio_owned_cni_config.is_some()),
            (
                "ISTIO_OWNED_CNI_CONFIG_FILENAME",
                i.istio_owned_cni_config_filename.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        given.extend(AMBIENT_ONLY_ENV.into_iter().filter(|k| std::env::var_os(k).is_some()));
        given
    }

    /// The obsolete settings that were given, by their flag names.
    pub fn obsolete_given(&self) -> Vec<&'static str> {
        let i = &self.ignored;
        [
            ("--cni-network-config", i.cni_network_config.is_some()),
            ("--cni-network-config-file", i.cni_network_config_file.is_some()),
            ("--log-level", i.legacy_log_level.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// `--log_output_level` / `--log_stacktrace_level`: checked here so a typo
/// stops the agent naming the flag (Istio only logs it and goes on).
pub fn parse_output_level(s: &str) -> Result<String, String> {
    crate::logging::ScopeLevels::parse(s).map(|_| s.to_string())
}

/// The installer's settings (docs/agent.md#settings, docs/agent.md#node-paths).
#[derive(Debug, Clone, Args)]
pub struct InstallSettings {
    /// Primary CNI config file name (chained) or the standalone file name; empty: the first valid file.
    #[arg(long, env = "CNI_CONF_NAME", default_value = "")]
    pub cni_conf_name: String,
    /// true: insert into the primary's plugin list; false: write a standalone `YYY-istio-cni.conf`.
    #[arg(long, env = "CHAINED_CNI_PLUGIN", default_value = "true", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub chained_cni_plugin: bool,
    /// The node's CNI config dir as the agent sees it.
    #[arg(long, env = "MOUNTED_CNI_NET_DIR", default_value = "/host/etc/cni/net.d")]
    pub mounted_cni_net_dir: PathBuf,
    /// Run dir for the plugin kubeconfig and `log.sock`; must equal the host path.
    #[arg(long, env = "CNI_AGENT_RUN_DIR", default_value = "/var/run/istio-cni")]
    pub cni_agent_run_dir: PathBuf,
    /// Mode of the plugin kubeconfig (Go integer syntax: `0600` is octal).
    #[arg(long, env = "KUBECONFIG_MODE", default_value = "0600", value_parser = parse_file_mode)]
    pub kubeconfig_mode: u32,
    /// Standalone config files get 0640 instead of 0600.
    #[arg(long, env = "CNI_CONF_GROUP_READ", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub cni_conf_group_read: bool,
    /// CA for the kubeconfig (default `<SERVICE_ACCOUNT_DIR>/ca.crt`).
    #[arg(long, env = "KUBE_CA_FILE", default_value = "")]
    pub kube_ca_file: String,
    /// Write `insecure-skip-tls-verify: true` instead of a CA.
    #[arg(long, env = "SKIP_TLS_VERIFY", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub skip_tls_verify: bool,
    /// Comma-separated namespaces the plugin leaves alone.
    #[arg(long, env = "EXCLUDE_NAMESPACES", default_value = "")]
    pub exclude_namespaces: String,
    /// The agent's namespace, written as the plugin's `pod_namespace`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,
    /// The plugin (and repair) program nftables instead of iptables.
    #[arg(long, env = "NATIVE_NFTABLES", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub native_nftables: bool,
    /// Ambient mode: refused at start (this agent is the sidecar data plane's).
    #[arg(long, env = "AMBIENT_ENABLED", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ambient_enabled: bool,
    /// Copied into the plugin entry.
    #[arg(long, env = "ENABLE_AMBIENT_DETECTION_RETRY", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_ambient_detection_retry: bool,
    /// YAML list of `{podSelector, namespaceSelector}` written as `enablement_selectors`.
    #[arg(long, env = "AMBIENT_ENABLEMENT_SELECTOR", default_value = "")]
    pub ambient_enablement_selector: String,
    /// `https` unless set.
    #[arg(long, env = "KUBERNETES_SERVICE_PROTOCOL", default_value = "https")]
    pub kubernetes_service_protocol: String,
    #[arg(long, env = "KUBERNETES_SERVICE_HOST", default_value = "")]
    pub kubernetes_service_host: String,
    #[arg(long, env = "KUBERNETES_SERVICE_PORT", default_value = "")]
    pub kubernetes_service_port: String,
    /// Where the binaries are installed (Istio: `/host/opt/cni/bin`).
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Where the binaries to install come from (Istio: `/opt/cni/bin`).
    #[arg(long, env = "CNI_BIN_SOURCE_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_source_dir: PathBuf,
    /// The projected service-account volume (token, ca.crt), watched for rotation.
    #[arg(
        long,
        env = "SERVICE_ACCOUNT_DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    pub service_account_dir: PathBuf,
    /// Ours: write `status_check: true` so the plugin's STATUS reports not-ready until our kubeconfig exists.
    #[arg(long, env = "CNI_STATUS_CHECK", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub status_check: bool,
}

/// The agent's own pod and node (downward API), and the two opt-in
/// features that act on them (docs/taint-and-safe-upgrade.md). Both are off
/// unless enabled: the agent then makes no call about its node, its pod or
/// its DaemonSet.
#[derive(Debug, Clone, Args)]
pub struct NodeFeatures {
    /// The node this agent runs on (`spec.nodeName`).
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    /// This agent's pod (`metadata.name`); its namespace is POD_NAMESPACE.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// Remove the not-ready taint from this node once the plugin is installed.
    #[arg(long, env = "NOT_READY_TAINT_ENABLED", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub not_ready_taint_enabled: bool,
    /// The taint's key (any effect is removed).
    #[arg(long, env = "NOT_READY_TAINT_NAME", default_value = DEFAULT_NOT_READY_TAINT, value_parser = parse_taint_key)]
    pub not_ready_taint_name: String,
    /// On SIGTERM during a roll of this agent's DaemonSet, leave the plugin installed for the next agent.
    #[arg(long, env = "SAFE_UPGRADE_ENABLED", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub safe_upgrade_enabled: bool,
}

/// The taint nodes register with until their CNI is ready (the key Istio's
/// own untaint controller uses).
pub const DEFAULT_NOT_READY_TAINT: &str = "cni.istio.io/not-ready";

/// A taint key: a label key, `[prefix/]name`, checked here so a typo stops
/// the agent at start instead of making every removal a no-op.
pub fn parse_taint_key(s: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{s:?} is not a taint key: {why}"));
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if name.is_empty() || name.len() > 63 {
        return bad("the name part must be 1 to 63 characters");
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let name_ok = name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return bad(
            "the name part takes letters, digits, '-', '_' and '.', and starts and ends with a letter or digit",
        );
    }
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.starts_with(alnum)
                && l.ends_with(alnum)
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return bad("the prefix must be a lowercase DNS subdomain");
        }
    }
    Ok(s.to_string())
}

/// The repair controller's settings (docs/repair.md#controller-settings).
#[derive(Debug, Clone, Args)]
pub struct RepairSettings {
    #[arg(long, env = "REPAIR_ENABLED", default_value = "true", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub repair_enabled: bool,
    /// In-place repair (the binary's default is false; the chart sets true).
    #[arg(long, env = "REPAIR_REPAIR_PODS", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub repair_repair_pods: bool,
    #[arg(long, env = "REPAIR_DELETE_PODS", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub repair_delete_pods: bool,
    #[arg(long, env = "REPAIR_LABEL_PODS", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub repair_label_pods: bool,
    #[arg(
        long,
        env = "REPAIR_BROKEN_POD_LABEL_KEY",
        default_value = "cni.istio.io/uninitialized"
    )]
    pub repair_broken_pod_label_key: String,
    #[arg(long, env = "REPAIR_BROKEN_POD_LABEL_VALUE", default_value = "true")]
    pub repair_broken_pod_label_value: String,
    /// Appended as `spec.nodeName=<v>` to the field selector (always, as Istio does).
    #[arg(long, env = "REPAIR_NODE_NAME", default_value = "")]
    pub repair_node_name: String,
    #[arg(long, env = "REPAIR_SIDECAR_ANNOTATION", default_value = "sidecar.istio.io/status")]
    pub repair_sidecar_annotation: String,
    #[arg(long, env = "REPAIR_INIT_CONTAINER_NAME", default_value = "istio-validation")]
    pub repair_init_container_name: String,
    /// Empty: any message.
    #[arg(long, env = "REPAIR_INIT_CONTAINER_TERMINATION_MESSAGE", default_value = "")]
    pub repair_init_container_termination_message: String,
    /// 0: any exit code.
    #[arg(long, env = "REPAIR_INIT_CONTAINER_EXIT_CODE", default_value = "126", value_parser = parse_go_int, allow_negative_numbers = true)]
    pub repair_init_container_exit_code: i64,
    #[arg(long, env = "REPAIR_LABEL_SELECTORS", default_value = "")]
    pub repair_label_selectors: String,
    #[arg(long, env = "REPAIR_FIELD_SELECTORS", default_value = "")]
    pub repair_field_selectors: String,
    /// Where other processes' `/proc` is visible (the DaemonSet mounts the host's at `/host/proc`).
    #[arg(long, env = "REPAIR_HOST_PROC", default_value = "/host/proc")]
    pub repair_host_proc: PathBuf,
    /// The netns repair must never program (`/proc/self/ns/net`; `/host/proc/1/ns/net` with ALLOW_SWITCH_TO_HOST_NS).
    #[arg(long, env = "ALLOW_SWITCH_TO_HOST_NS", default_value = "false", value_parser = parse_go_bool, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_switch_to_host_ns: bool,
}

impl RepairSettings {
    /// The active mode in Istio's precedence: repairPods > deletePods > labelPods.
    pub fn mode(&self) -> Option<RepairMode> {
        RepairMode::chosen(
            self.repair_enabled,
            self.repair_repair_pods,
            self.repair_delete_pods,
            self.repair_label_pods,
        )
    }

    /// The pod watch's field selector: the extra selectors, then `spec.nodeName=<node>`.
    pub fn field_selector(&self) -> String {
        let node = format!("spec.nodeName={}", self.repair_node_name);
        if self.repair_field_selectors.is_empty() {
            node
        } else {
            format!("{},{node}", self.repair_field_selectors)
        }
    }

    /// The netns repair must never program.
    pub fn host_netns(&self) -> PathBuf {
        if self.allow_switch_to_host_ns {
            self.repair_host_proc.join("1/ns/net")
        } else {
            PathBuf::from("/proc/self/ns/net")
        }
    }
}

/// What the repair controller does to a broken pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepairMode {
    /// Re-program the pod netns in place.
    Repair,
    /// Delete the pod so its owner recreates it.
    Delete,
    /// Label it `cni.istio.io/uninitialized=true`.
    Label,
}

impl RepairMode {
    /// The mode the flags select, in Istio's precedence: repairPods >
    /// deletePods > labelPods; `None` when repair is off or no mode is set.
    pub fn chosen(enabled: bool, repair_pods: bool, delete_pods: bool, label_pods: bool) -> Option<RepairMode> {
        if !enabled {
            return None;
        }
        [
            (repair_pods, RepairMode::Repair),
            (delete_pods, RepairMode::Delete),
            (label_pods, RepairMode::Label),
        ]
        .into_iter()
        .find_map(|(set, mode)| set.then_some(mode))
    }

    /// The metric's `type` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairMode::Repair => "repair",
            RepairMode::Delete => "delete",
            RepairMode::Label => "label",
        }
    }
}

impl InstallSettings {
    /// `EXCLUDE_NAMESPACES` split on `,`, trimmed, empties dropped.
    pub fn exclude_namespaces(&self) -> Vec<String> {
        split_list(&self.exclude_namespaces)
    }

    /// Mode of standalone config files we own.
    pub fn owned_file_mode(&self) -> u32 {
        if self.cni_conf_group_read { 0o640 } else { 0o600 }
    }

    /// The kubeconfig's CA file: `KUBE_CA_FILE` or `<SA dir>/ca.crt`.
    pub fn ca_file(&self) -> PathBuf {
        if self.kube_ca_file.is_empty() {
            self.service_account_dir.join("ca.crt")
        } else {
            PathBuf::from(&self.kube_ca_file)
        }
    }

    /// The plugin kubeconfig's path.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.cni_agent_run_dir.join(istio_cni::cni::config::KUBECONFIG_FILE)
    }

    /// `<proto>://<host>:<port>` with IPv6 brackets, or the error Istio gives.
    pub fn api_server_url(&self) -> Result<String, String> {
        if self.kubernetes_service_host.is_empty() || self.kubernetes_service_port.is_empty() {
            return Err("KUBERNETES_SERVICE_HOST not set. Is this not running within a pod?".into());
        }
        let host = if self.kubernetes_service_host.contains(':') && !self.kubernetes_service_host.starts_with('[') {
            format!("[{}]", self.kubernetes_service_host)
        } else {
            self.kubernetes_service_host.clone()
        };
        Ok(format!(
            "{}://{host}:{}",
            self.kubernetes_service_protocol, self.kubernetes_service_port
        ))
    }
}

/// Comma-separated list: items trimmed, empties dropped.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Go's `strconv.ParseBool` forms; anything else is an error (Istio: false).
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" | "" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (use true or false)")),
    }
}

/// Go's base-prefixed integers: `0x1f`, `0o17`, `017` (octal), `0b1`, decimal.
pub fn parse_go_int(s: &str) -> Result<i64, String> {
    let t = s.trim().replace('_', "");
    if t.is_empty() {
        return Ok(0);
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let lower = body.to_ascii_lowercase();
    let parsed = if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16)
    } else if let Some(oct) = lower.strip_prefix("0o") {
        i64::from_str_radix(oct, 8)
    } else if let Some(bin) = lower.strip_prefix("0b") {
        i64::from_str_radix(bin, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8)
    } else {
        lower.parse::<i64>()
    };
    parsed
        .map(|v| if neg { -v } else { v })
        .map_err(|_| format!("{s:?} is not an integer"))
}

/// A permission mode: a Go integer in 0..=0o7777.
pub fn parse_file_mode(s: &str) -> Result<u32, String> {
    let v = parse_go_int(s)?;
    u32::try_from(v)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not a file mode (write it like 0600)"))
}

/// When clap refuses a value that came from an environment variable (the way
/// the chart configures the agent), the message to print instead of clap's,
/// which names only the flag: `KUBECONFIG_MODE="abc" (environment): ...`.
/// `None` when the value came from the command line or clap's message is fine.
pub fn env_value_error(
    cmd: &clap::Command,
    err: &clap::Error,
    argv: &[std::ffi::OsString],
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(err.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return None;
    }
    let Some(ContextValue::String(shown)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // clap shows `--flag <VALUE>`; the long name is its first word.
    let long = shown.split_whitespace().next()?.strip_prefix("--")?;
    let arg = find_long(cmd, long)?;
    let flag = format!("--{long}");
    let on_command_line = argv
        .iter()
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.strip_prefix(flag.as_str()).is_some_and(|rest| rest.starts_with('=')));
    if on_command_line {
        return None;
    }
    let var = arg.get_env()?.to_str()?;
    let value = env(var)?;
    let reason = match std::error::Error::source(err) {
        Some(source) => source.to_string(),
        None => match err.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!("expected one of {}", valid.join(", ")),
            _ => "not a valid value".to_string(),
        },
    };
    Some(format!(
        "{var}={:?} (environment, read as {flag}): {reason}",
        value.to_string_lossy()
    ))
}

fn find_long<'a>(cmd: &'a clap::Command, long: &str) -> Option<&'a clap::Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .or_else(|| cmd.get_subcommands().find_map(|sub| find_long(sub, long)))
}

#[cfg(test)]
impl InstallSettings {
    /// The settings the flags `args` give, for the installer's tests.
    pub(crate) fn from_flags(args: &[&str]) -> InstallSettings {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            s: InstallSettings,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).map(|c| c.settings)
    }

    #[test]
    fn a_bad_flag_value_keeps_clap_naming_the_flag() {
        use clap::CommandFactory;
        // The environment case runs the real binary (tests/dropin.rs): clap
        // reads the variable itself, and tests here share one environment.
        let cmd = Cli::command();
        let argv = ["agent", "--kubeconfig-mode=abc"];
        let err = cmd.clone().try_get_matches_from(argv).unwrap_err();
        let argv: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
        assert_eq!(env_value_error(&cmd, &err, &argv, |_| Some("abc".into())), None);
        assert!(err.to_string().contains("--kubeconfig-mode"));
    }

    #[test]
    fn defaults_are_istios() {
        let s = parse(&[]).unwrap();
        assert!(s.install.chained_cni_plugin);
        assert_eq!(s.install.mounted_cni_net_dir, PathBuf::from("/host/etc/cni/net.d"));
        assert_eq!(s.install.cni_agent_run_dir, PathBuf::from("/var/run/istio-cni"));
        assert_eq!(s.install.kubeconfig_mode, 0o600);
        assert_eq!(s.install.cni_bin_dir, PathBuf::from("/host/opt/cni/bin"));
        assert_eq!(s.monitoring_port, 15014);
        assert_eq!(s.health_port, 8000);
        assert!(s.repair.repair_enabled);
        assert_eq!(s.repair.repair_init_container_exit_code, 126);
        assert_eq!(s.repair.repair_broken_pod_label_key, "cni.istio.io/uninitialized");
        // The binary's default: no repair mode enabled (the chart turns repairPods on).
        assert_eq!(s.repair.mode(), None);
        assert_eq!(s.repair.field_selector(), "spec.nodeName=");
    }

    #[test]
    fn go_integer_and_bool_forms() {
        assert_eq!(parse_go_int("0600"), Ok(0o600));
        assert_eq!(parse_go_int("600"), Ok(600));
        assert_eq!(parse_go_int("0x1F"), Ok(31));
        assert_eq!(parse_go_int("0o17"), Ok(15));
        assert_eq!(parse_go_int("-1"), Ok(-1));
        assert!(parse_go_int("12a").is_err());
        assert_eq!(parse_go_bool("T"), Ok(true));
        assert_eq!(parse_go_bool("False"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
        assert!(parse_file_mode("010000").is_err());
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse(&["--kubeconfig-mode", "rw"]).unwrap_err().to_string();
        assert!(
            err.contains("--kubeconfig-mode") && err.contains("\"rw\" is not an integer"),
            "{err}"
        );
        let err = parse(&["--chained-cni-plugin", "maybe"]).unwrap_err().to_string();
        assert!(
            err.contains("--chained-cni-plugin") && err.contains("not a boolean"),
            "{err}"
        );
    }

    #[test]
    fn go_flag_forms_and_bare_booleans() {
        // Istio's chart passes `--log_as_json` bare; Go booleans take no value.
        let s = parse(&["--log_as_json", "--log_output_level=info"]).unwrap();
        assert!(s.log.as_json);
        assert_eq!(s.log.output_level, "info");
        let s = parse(&[
            "--chained-cni-plugin",
            "--repair-repair-pods",
            "--log_output_level",
            "cni-agent:debug",
        ])
        .unwrap();
        assert!(s.install.chained_cni_plugin && s.repair.repair_repair_pods);
        assert_eq!(s.log.output_level, "cni-agent:debug");
        let s = parse(&["--chained-cni-plugin=false", "--log_as_json=true", "--skip-tls-verify"]).unwrap();
        assert!(!s.install.chained_cni_plugin && s.log.as_json && s.install.skip_tls_verify);
        // Istio's other logging and ControlZ flags, and its obsolete ones, are accepted.
        let s = parse(&[
            "--ctrlz_port=9877",
            "--ctrlz_address",
            "127.0.0.1",
            "--log_caller=cni-agent",
            "--log_stacktrace_level=default:none",
            "--log_target=stdout",
            "--log_target",
            "stderr",
            "--log_rotate_max_age=7",
            "--cni-network-config={}",
            "--log-level=warn",
            "--ztunnel-uds-address=/var/run/ztunnel/ztunnel.sock",
        ])
        .unwrap();
        assert_eq!(s.log.ctrlz_port, 9877);
        assert_eq!(s.log.target, ["stdout", "stderr"]);
        assert_eq!(s.obsolete_given(), ["--cni-network-config", "--log-level"]);
        assert!(s.ambient_only_given().contains(&"ZTUNNEL_UDS_ADDRESS"));
        let err = parse(&["--log_output_level=cni-agent:loud"]).unwrap_err().to_string();
        assert!(
            err.contains("--log_output_level") && err.contains("\"loud\" is not a level"),
            "{err}"
        );
    }

    #[test]
    fn repair_mode_precedence() {
        let s = parse(&[
            "--repair-delete-pods",
            "true",
            "--repair-label-pods",
            "true",
            "--repair-node-name",
            "n1",
            "--repair-field-selectors",
            "metadata.namespace=a",
        ])
        .unwrap();
        assert_eq!(s.repair.mode(), Some(RepairMode::Delete));
        assert_eq!(s.repair.field_selector(), "metadata.namespace=a,spec.nodeName=n1");
        let s = parse(&["--repair-repair-pods", "1", "--repair-delete-pods", "1"]).unwrap();
        assert_eq!(s.repair.mode(), Some(RepairMode::Repair));
        let s = parse(&["--repair-enabled", "false", "--repair-repair-pods", "1"]).unwrap();
        assert_eq!(s.repair.mode(), None);
    }

    #[test]
    fn node_features_default_off_and_taint_keys_are_checked() {
        let s = parse(&[]).unwrap();
        assert!(!s.node.not_ready_taint_enabled && !s.node.safe_upgrade_enabled);
        assert_eq!(s.node.not_ready_taint_name, "cni.istio.io/not-ready");
        let s = parse(&[
            "--not-ready-taint-enabled",
            "--not-ready-taint-name=example.com/cni-wait",
        ])
        .unwrap();
        assert!(s.node.not_ready_taint_enabled);
        assert_eq!(s.node.not_ready_taint_name, "example.com/cni-wait");
        for bad in ["", "a b", "-x", "Example.com/x", "x/", "/x", &"n".repeat(64)] {
            let arg = format!("--not-ready-taint-name={bad}");
            let err = parse(&[&arg]).unwrap_err().to_string();
            assert!(err.contains("is not a taint key"), "{bad:?}: {err}");
        }
        assert_eq!(
            parse_taint_key("node.kubernetes.io/not-ready"),
            Ok("node.kubernetes.io/not-ready".into())
        );
    }

    #[test]
    fn api_server_url() {
        let mut s = parse(&[]).unwrap().install;
        assert!(
            s.api_server_url()
                .unwrap_err()
                .contains("KUBERNETES_SERVICE_HOST not set")
        );
        s.kubernetes_service_host = "fd00::1".into();
        s.kubernetes_service_port = "443".into();
        assert_eq!(s.api_server_url().unwrap(), "https://[fd00::1]:443");
    }
}
