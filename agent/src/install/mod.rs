//! The install pass (istio-cni-agent.md §4.1–4.10) and its undo (§4.13).
//!
//! CONTRACT (used by `watch.rs`, `run.rs` and `main.rs`; keep these signatures):
//!
//! ```ignore
//! pub struct Installer;                     // owns InstallSettings, Metrics, the pinned conf name, current path
//! impl Installer {
//!     pub fn new(settings: InstallSettings, plugin_log_level: String, metrics: Metrics) -> Installer;
//!     /// One pass: copy binaries, write kubeconfig, ensure our CNI entry. Counts
//!     /// `istio_cni_installs_total{result=...}` on failure.
//!     /// `Err(InstallError::NoPrimaryConfig { .. })` means "no primary config yet: wait for
//!     /// a conf-dir event and call again" (the caller owns waiting and cancellation).
//!     pub fn install_all(&mut self) -> Result<(), InstallError>;
//!     /// §4.9: Ok when our entry is in place and the file is still the chosen one.
//!     pub fn check_valid(&mut self) -> Result<(), InstallError>;
//!     /// What the watch loop watches: installed binaries, the conf dir, the SA dir.
//!     pub fn watch_targets(&self) -> Vec<std::path::PathBuf>;
//!     /// The config file holding our entry, once installed.
//!     pub fn current_path(&self) -> Option<&std::path::Path>;
//!     /// §4.13 (+ byte-exact restore): remove our entry, kubeconfig, binary.
//!     pub fn cleanup(&mut self) -> Result<(), InstallError>;
//! }
//! /// `istio-cni-agent uninstall`: the same cleanup for a node whose agent died.
//! pub fn uninstall(settings: &InstallSettings) -> Result<UninstallReport, InstallError>;
//! ```
