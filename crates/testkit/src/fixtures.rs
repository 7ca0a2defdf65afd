//! The injected pods every suite starts from: the plugin's rule snapshots and
//! cluster tests, the agent's cluster tests and the scenarios' rule snapshots
//! all program the same two pods, so they live here once.

use std::path::PathBuf;

/// A pod as Istio's injector shapes it with Istio CNI enabled:
/// `istio-validation` first in `initContainers`, `istio-proxy` last in
/// `containers`.
pub const INJECTED_CLASSIC: &str = include_str!("../fixtures/pods/injected-classic.yaml");

/// The same pod on Kubernetes >= 1.33: `istio-proxy` is a native sidecar (an
/// init container with `restartPolicy: Always`).
pub const INJECTED_NATIVE: &str = include_str!("../fixtures/pods/injected-native.yaml");

/// The file of an injected pod (`injected-classic.yaml`,
/// `injected-native.yaml`), for commands that read a manifest
/// (`istio-cni render -f`).
pub fn injected_pod_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/pods")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_the_constants() {
        for (name, text) in [
            ("injected-classic.yaml", INJECTED_CLASSIC),
            ("injected-native.yaml", INJECTED_NATIVE),
        ] {
            assert_eq!(std::fs::read_to_string(injected_pod_file(name)).unwrap(), text);
        }
    }
}
