//! The agent's Prometheus metrics, with Istio's names and labels so existing
//! dashboards keep working (istio-cni-agent.md §4.12,
//! istio-cni-repair-and-skew.md §2.9).

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

/// The agent's metrics; cheap to clone, shared by installer, watch loop and
/// repair controller.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    installs: Family<InstallLabels, Counter>,
    install_ready: Gauge,
    repaired: Family<RepairLabels, Counter>,
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
        Metrics {
            registry: Arc::new(registry),
            installs,
            install_ready,
            repaired,
        }
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
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
        let text = m.encode();
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
}
