//! The `istio-validation` init-container probe.
