//! The agent's Prometheus metrics, with Istio's names and labels so existing
//! dashboards keep working (docs/agent.md#endpoints-and-metrics,
//! docs/repair.md#metrics-and-events).

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `result` of `istio_cni_installs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum InstallResult {
    SUCCESS,
    COPY_BINARIES_FAILURE,
    CREATE_KUBECONFIG_FAILURE,
    CREATE_CNI_CONFIG_FAILURE,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InstallLabels {
    result: InstallResult,
}

/// `result` of `istio_cni_repair_pods_repaired_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RepairResult {
    success,
    fail,
    skip,
}

/// `type` of `istio_cni_repair_pods_repaired_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RepairType {
    repair,
    delete,
    label,
}

impl From<crate::config::RepairMode> for RepairType {
    fn from(mode: crate::config::RepairMode) -> Self {
        match mode {
            crate::config::RepairMode::Repair => RepairType::repair,
            crate::config::RepairMode::Delete => RepairType::delete,
            crate::config::RepairMode::Label => RepairType::label,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RepairLabels {
    r#type: RepairType,
    result: RepairResult,
}

/// `result` of `istio_cni_not_ready_taint_removals_total`: the taint was
/// removed from this node, was already absent, or the attempt failed (it is
/// retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TaintResult {
    removed,
    absent,
    fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaintLabels {
    result: TaintResult,
}

/// The agent's metrics; cheap to clone, shared by installer, watch loop and
/// repair controller.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    installs: Family<InstallLabels, Counter>,
    install_ready: Gauge,
    repaired: Family<RepairLabels, Counter>,
    taint: Family<TaintLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let installs = Family::<InstallLabels, Counter>::default();
        let install_ready = Gauge::default();
        let repaired = Family::<RepairLabels, Counter>::default();
        let taint = Family::<TaintLabels, Counter>::default();
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "istio_cni_installs",
            "Total number of CNI plugins installed by the Istio CNI installer",
            installs.clone(),
        );
        registry.register(
            "istio_cni_install_ready",
            "Whether the CNI plugin installation is ready or not",
            install_ready.clone(),
        );
        registry.register(
            "istio_cni_repair_pods_repaired",
            "Total number of pods repaired by repair controller",
            repaired.clone(),
        );
        // Ours (Istio has no such feature); counted only when it is enabled.
        registry.register(
            "istio_cni_not_ready_taint_removals",
            "Attempts to remove the not-ready taint from this node, by result",
            taint.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            installs,
            install_ready,
            repaired,
            taint,
        }
    }

    /// Counts one attempt at the not-ready taint.
    pub fn taint(&self, result: TaintResult) {
        self.taint.get_or_create(&TaintLabels { result }).inc();
    }

    /// The current value of a taint counter.
    pub fn taint_count(&self, result: TaintResult) -> u64 {
        self.taint.get_or_create(&TaintLabels { result }).get()
    }

    /// Counts one install pass outcome.
    pub fn install(&self, result: InstallResult) {
        self.installs.get_or_create(&InstallLabels { result }).inc();
    }

    /// Sets `istio_cni_install_ready` to 0 or 1.
    pub fn set_install_ready(&self, ready: bool) {
        self.install_ready.set(i64::from(ready));
    }

    /// Counts one repair action outcome.
    pub fn repaired(&self, kind: RepairType, result: RepairResult) {
        self.repaired
            .get_or_create(&RepairLabels { r#type: kind, result })
            .inc();
    }

    /// The current value of a repair counter (tests and logs).
    pub fn repaired_count(&self, kind: RepairType, result: RepairResult) -> u64 {
        self.repaired
            .get_or_create(&RepairLabels { r#type: kind, result })
            .get()
    }

    /// The current value of an install counter.
    pub fn install_count(&self, result: InstallResult) -> u64 {
        self.installs.get_or_create(&InstallLabels { result }).get()
    }

    /// The registry in OpenMetrics text, without the closing `# EOF`.
    fn encode_registry(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
    }

    /// The OpenMetrics exposition: Istio's metrics, then `process_*`.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = self.encode_registry();
        out.push_str(&process::render(&process::sample(), true));
        out.push_str("# EOF\n");
        out
    }

    /// The Prometheus text exposition (version 0.0.4), what Istio serves.
    pub fn encode_prometheus(&self) -> String {
        let mut out = to_prometheus_text(&self.encode_registry());
        out.push_str(&process::render(&process::sample(), false));
        out
    }

    /// Same as [`Metrics::encode_prometheus`].
    pub fn encode(&self) -> String {
        self.encode_prometheus()
    }
}

/// OpenMetrics text to Prometheus text: counter families are named with
/// their `_total` (the samples already are), `# UNIT` and `# EOF` go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|r| r.strip_suffix(" counter")) {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(meta.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// `process_*` metrics with the names of Prometheus' Go process collector,
/// read from `/proc/self` at scrape time.
mod process {
    use std::fmt::Write as _;

    /// /proc reports CPU times in USER_HZ, which Linux fixes at 100 on
    /// every architecture Kubernetes nodes run.
    const USER_HZ: f64 = 100.0;

    pub struct Family {
        /// Without `_total` for counters.
        pub name: &'static str,
        pub help: &'static str,
        pub counter: bool,
        pub value: f64,
    }

    /// The families this process can report (a missing /proc file drops its ones).
    pub fn sample() -> Vec<Family> {
        let mut out = Vec::new();
        let mut push = |name, help, counter, value: Option<f64>| {
            if let Some(value) = value {
                out.push(Family {
                    name,
                    help,
                    counter,
                    value,
                });
            }
        };
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        // Fields after the command name, which may hold spaces: field 3 is index 0.
        let fields: Vec<&str> = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu = field(14).zip(field(15)).map(|(u, s)| (u + s) / USER_HZ);
        push(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            true,
            cpu,
        );
        push(
            "process_open_fds",
            "Number of open file descriptors.",
            false,
            open_fds(),
        );
        push(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            false,
            max_fds(),
        );
        push(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            false,
            field(23),
        );
        push(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            false,
            rss_bytes(),
        );
        let start = field(22).zip(boot_time()).map(|(ticks, boot)| boot + ticks / USER_HZ);
        push(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            false,
            start,
        );
        out
    }

    fn open_fds() -> Option<f64> {
        // The count includes the descriptor read_dir itself holds open.
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count().saturating_sub(1) as f64)
    }

    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    fn rss_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb * 1024.0)
    }

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
    }

    /// The families in OpenMetrics (`openmetrics`) or Prometheus text.
    pub fn render(families: &[Family], openmetrics: bool) -> String {
        let mut out = String::new();
        for f in families {
            let sample = if f.counter {
                format!("{}_total", f.name)
            } else {
                f.name.to_string()
            };
            let family = if openmetrics {
                f.name.to_string()
            } else {
                sample.clone()
            };
            let kind = if f.counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {family} {}", f.help);
            let _ = writeln!(out, "# TYPE {family} {kind}");
            let _ = writeln!(out, "{sample} {}", f.value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_match_istio() {
        let m = Metrics::new();
        m.install(InstallResult::SUCCESS);
        m.install(InstallResult::CREATE_CNI_CONFIG_FAILURE);
        m.set_install_ready(true);
        m.repaired(RepairType::delete, RepairResult::fail);
        m.taint(TaintResult::removed);
        let text = m.encode();
        assert!(
            text.contains("istio_cni_not_ready_taint_removals_total{result=\"removed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("istio_cni_installs_total{result=\"SUCCESS\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("istio_cni_installs_total{result=\"CREATE_CNI_CONFIG_FAILURE\"} 1"),
            "{text}"
        );
        assert!(text.contains("istio_cni_install_ready 1"), "{text}");
        assert!(
            text.contains("istio_cni_repair_pods_repaired_total{type=\"delete\",result=\"fail\"} 1"),
            "{text}"
        );
        assert_eq!(m.repaired_count(RepairType::delete, RepairResult::fail), 1);
    }

    #[test]
    fn prometheus_text_names_counter_families_with_total() {
        let m = Metrics::new();
        m.install(InstallResult::SUCCESS);
        let text = m.encode_prometheus();
        assert!(text.contains("# TYPE istio_cni_installs_total counter\n"), "{text}");
        assert!(text.contains("# TYPE istio_cni_install_ready gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
        let om = m.encode_openmetrics();
        assert!(om.contains("# TYPE istio_cni_installs counter\n"), "{om}");
        assert!(om.contains("# TYPE process_cpu_seconds counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn process_metrics_describe_this_process() {
        let families = process::sample();
        let value = |name: &str| {
            families
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 3600.0, "start {start}, now {now}");
        assert!(value("process_cpu_seconds") >= 0.0);
    }
}
