//! `istio-cni-agent manifest`: the DaemonSet and RBAC from Istio's Helm values.
//!
//! CONTRACT (used by `main.rs`; keep these signatures):
//!
//! ```ignore
//! #[derive(clap::Args)] pub struct ManifestArgs { .. }   // --values, -f, --set, --platform
//! /// The multi-document YAML to print.
//! pub fn render(args: &ManifestArgs) -> Result<String, ManifestError>;
//! ```
