//! The install pass (docs/agent.md#install-pass) and its undo (docs/agent.md#cleanup).
//!
//! CONTRACT (used by `watch.rs`, `run.rs` and `main.rs`; keep these signatures):
//!
//! ```text
//! pub struct Installer;                     // owns InstallSettings, Metrics, the pinned conf name, current path
//! impl Installer {
//!     pub fn new(settings: InstallSettings, plugin_log_level: String, metrics: Metrics) -> Installer;
//!     /// One pass: copy binaries, write kubeconfig, ensure our CNI entry. Counts
//!     /// `istio_cni_installs_total{result=...}` on failure.
//!     /// `Err(InstallError::NoPrimaryConfig { .. })` means "no primary config yet: wait for
//!     /// a conf-dir event and call again" (the caller owns waiting and cancellation).
//!     pub fn install_all(&mut self) -> Result<(), InstallError>;
//!     /// docs/agent.md#validity-check: Ok when our entry is in place and the file is still the chosen one.
//!     pub fn check_valid(&mut self) -> Result<(), InstallError>;
//!     /// What the watch loop watches: installed binaries, the conf dir, the SA dir.
//!     pub fn watch_targets(&self) -> Vec<std::path::PathBuf>;
//!     /// The config file holding our entry, once installed.
//!     pub fn current_path(&self) -> Option<&std::path::Path>;
//!     /// docs/agent.md#cleanup (+ byte-exact restore): remove our entry, kubeconfig, binary.
//!     pub fn cleanup(&mut self) -> Result<(), InstallError>;
//!     /// The file is Cilium's (path contains "cilium"): the watch loop's hint.
//!     pub fn is_cilium(&self) -> bool;
//! }
//! /// `istio-cni-agent uninstall`: the same cleanup for a node whose agent died.
//! pub fn uninstall(settings: &InstallSettings) -> Result<UninstallReport, InstallError>;
//! ```
//!
//! Where we differ from Istio, on purpose:
//! - the primary is edited by byte spans, never re-serialized ([`conflist`]):
//!   its cniVersion, key order, whitespace and numbers survive; a converted
//!   `.conf` keeps its cniVersion and name at list level;
//! - every `istio-cni` entry is replaced, and an entry that differs from the
//!   one we would write (another version's) is not valid (docs/agent.md#stale-entries);
//! - cleanup restores the file byte for byte when nobody changed it since we
//!   wrote it ([`state`]), the `.conf` included;
//! - binaries and the kubeconfig are rewritten only when they differ, and
//!   every write is temp + fsync + rename ([`atomic`]).
//!
//! Pinning is Istio 1.27+'s: the first chosen file stays chosen; a
//! higher-priority file that appears later is only logged.

pub mod atomic;
pub mod binaries;
pub mod conflist;
pub mod entry;
mod error;
pub mod kubeconfig;
mod leftovers;
pub mod select;
pub mod state;

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use error::{Cause, InstallError};

use crate::config::InstallSettings;
use crate::metrics::{InstallResult, Metrics};
use entry::{Entry, PLUGIN_TYPE};
use istio_cni::bounded::ReadError;
use state::{Record, State};

/// The standalone file's name when CNI_CONF_NAME is empty (sorts after the primaries).
pub const STANDALONE_FILE: &str = "YYY-istio-cni.conf";

/// The installer: one per agent, driven by the watch loop.
pub struct Installer {
    settings: InstallSettings,
    plugin_log_level: String,
    metrics: Metrics,
    /// The primary's name once chosen (CNI_CONF_NAME, else the first valid file).
    pinned: Option<String>,
    /// The file holding our entry.
    current: Option<PathBuf>,
    /// The installed binaries, watched for replacement.
    binaries: Vec<PathBuf>,
}

impl Installer {
    pub fn new(settings: InstallSettings, plugin_log_level: String, metrics: Metrics) -> Installer {
        let pinned = (!settings.cni_conf_name.is_empty()).then(|| settings.cni_conf_name.clone());
        Installer {
            settings,
            plugin_log_level,
            metrics,
            pinned,
            current: None,
            binaries: Vec::new(),
        }
    }

    /// One install pass (docs/agent.md#install-pass). SUCCESS is counted by the watch loop.
    pub fn install_all(&mut self) -> Result<(), InstallError> {
        let s = &self.settings;
        match binaries::copy_all(&s.cni_bin_source_dir, &s.cni_bin_dir) {
            Ok(installed) => self.binaries = installed,
            Err(cause) => {
                self.metrics.install(InstallResult::COPY_BINARIES_FAILURE);
                return Err(InstallError::CopyBinaries(cause));
            }
        }
        if let Err(cause) = kubeconfig::write(s) {
            self.metrics.install(InstallResult::CREATE_KUBECONFIG_FAILURE);
            return Err(InstallError::WriteKubeconfig(cause));
        }
        match self.check_valid() {
            Ok(()) => {
                tracing::info!(target: "cni-agent", "CNI config {} is valid", self.path_text());
                // Temp files of a pass killed before its rename; the file itself is fine.
                if let Some(current) = &self.current {
                    remove_leftovers(current);
                }
                Ok(())
            }
            Err(reason) => {
                tracing::info!(target: "cni-agent", "writing the CNI config: {reason}");
                match self.create_config() {
                    Ok(path) => {
                        tracing::info!(target: "cni-agent", "Wrote CNI config to {}", path.display());
                        self.current = Some(path);
                        Ok(())
                    }
                    Err(e @ InstallError::NoPrimaryConfig { .. }) => Err(e),
                    Err(e) => {
                        self.metrics.install(InstallResult::CREATE_CNI_CONFIG_FAILURE);
                        Err(e)
                    }
                }
            }
        }
    }

    /// docs/agent.md#validity-check: Ok when our entry, exactly as we would write it now, is the only
    /// istio-cni entry of the chosen file (standalone: the file is it).
    pub fn check_valid(&mut self) -> Result<(), InstallError> {
        let dir = &self.settings.mounted_cni_net_dir;
        let not_valid = |path: &Path, reason: String| InstallError::NotValid {
            path: path.to_path_buf(),
            reason,
        };
        let valid = select::valid_configs(dir).map_err(|e| not_valid(dir, e))?;
        let Some(first) = valid.first() else {
            return Err(not_valid(dir, format!("no valid networks found in {}", dir.display())));
        };
        let Some(current) = self.current.clone() else {
            return Err(not_valid(dir, "istio-cni is not installed yet".into()));
        };
        let first = dir.join(first);
        if first != current {
            if self.settings.chained_cni_plugin {
                tracing::warn!(target: "cni-agent", "CNI config file {} preempted by {}", current.display(), first.display());
            } else {
                tracing::debug!(target: "cni-agent", "standalone {} is not the first config ({})", current.display(), first.display());
            }
        }
        let text = match select::read_config_text(&current) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => {
                return Err(not_valid(&current, "CNI config file removed".into()));
            }
            Err(e) => return Err(not_valid(&current, e.to_string())),
        };
        let (value, _) = conflist::parse(&text).map_err(|e| not_valid(&current, e))?;
        let chained = self.settings.chained_cni_plugin;
        let desired = self
            .entry(chained)
            .map_err(|e| not_valid(&current, e.to_string()))?
            .to_value();
        if !chained {
            return if value == desired {
                Ok(())
            } else if entry::is_ours(&value) {
                Err(not_valid(
                    &current,
                    "istio-cni CNI config file differs from the desired one".into(),
                ))
            } else {
                Err(not_valid(&current, "istio-cni CNI config file modified".into()))
            };
        }
        let plugins = conflist::plugins(&value).map_err(|e| not_valid(&current, e))?;
        if let Some(i) = plugins
            .iter()
            .position(|p| !p.get("type").is_some_and(serde_json::Value::is_string))
        {
            return Err(not_valid(&current, format!("plugin {i} has no string \"type\"")));
        }
        let ours: Vec<_> = plugins.iter().filter(|p| entry::is_ours(p)).collect();
        match ours.as_slice() {
            [] => Err(not_valid(&current, "istio-cni not found in the plugin list".into())),
            [one] if **one == desired => Ok(()),
            [_] => Err(not_valid(
                &current,
                "the istio-cni entry differs from the desired one (another version or other settings wrote it)".into(),
            )),
            many => Err(not_valid(&current, format!("{} istio-cni entries", many.len()))),
        }
    }

    /// Installed binaries, the conf dir and the SA dir, where they exist.
    pub fn watch_targets(&self) -> Vec<PathBuf> {
        let s = &self.settings;
        self.binaries
            .iter()
            .chain([&s.mounted_cni_net_dir, &s.service_account_dir])
            .filter(|p| p.exists())
            .cloned()
            .collect()
    }

    pub fn current_path(&self) -> Option<&Path> {
        self.current.as_deref()
    }

    /// The file is Cilium's (its path contains "cilium"): Cilium's
    /// `cni.exclusive=true` rewrites it, the watch loop's hint.
    pub fn is_cilium(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|p| p.to_string_lossy().contains("cilium"))
    }

    /// docs/agent.md#cleanup with byte-exact restore: temp files of killed writers, then our
    /// entry (or standalone file), the kubeconfig, `<bin dir>/istio-cni`.
    /// The first error stops the last three, so the binary is never removed
    /// while an entry still points at it; a temp file that cannot be removed
    /// ends it in `Incomplete`.
    pub fn cleanup(&mut self) -> Result<(), InstallError> {
        let report = clean(&self.settings, self.current.as_deref(), self.pinned.as_deref())?;
        self.current = None;
        let report = complete(report)?;
        tracing::info!(target: "cni-agent", "cleanup: {report}");
        Ok(())
    }

    fn entry(&self, chained: bool) -> Result<Entry, Cause> {
        Entry::build(&self.settings, &self.plugin_log_level, chained)
    }

    fn path_text(&self) -> String {
        self.current
            .as_ref()
            .map_or_else(|| "(none)".into(), |p| p.display().to_string())
    }

    /// createCNIConfigFile: the standalone file, or our entry chained into the primary.
    fn create_config(&mut self) -> Result<PathBuf, InstallError> {
        let dir = self.settings.mounted_cni_net_dir.clone();
        if !self.settings.chained_cni_plugin {
            return self.write_standalone(&dir).map_err(InstallError::CreateCniConfig);
        }
        let name = match &self.pinned {
            Some(name) => name.clone(),
            None => {
                let valid = select::valid_configs(&dir).map_err(|reason| InstallError::NoPrimaryConfig {
                    dir: dir.clone(),
                    reason,
                })?;
                valid.into_iter().next().ok_or_else(|| InstallError::NoPrimaryConfig {
                    dir: dir.clone(),
                    reason: format!("no valid networks found in {}", dir.display()),
                })?
            }
        };
        let path = select::resolve(&dir, &name).ok_or_else(|| InstallError::NoPrimaryConfig {
            dir: dir.clone(),
            reason: format!("{name} (or its .conf/.conflist twin) does not exist yet"),
        })?;
        // Istio 1.27+: the first choice sticks (docs/agent.md#pinning).
        self.pinned = Some(name);
        self.chain_into(&path).map_err(|cause| match cause {
            cause if cause.is_not_found() && !path.exists() => InstallError::NoPrimaryConfig {
                dir,
                reason: format!("CNI config file {} removed during configuration", path.display()),
            },
            other => InstallError::CreateCniConfig(other),
        })
    }

    fn write_standalone(&self, dir: &Path) -> Result<PathBuf, Cause> {
        let name = if self.settings.cni_conf_name.is_empty() {
            STANDALONE_FILE
        } else {
            &self.settings.cni_conf_name
        };
        let path = dir.join(name);
        let text = self.entry(false)?.standalone_text();
        let mode = self.settings.owned_file_mode();
        let same = fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode)
            && select::read_config(&path).is_ok_and(|b| b == text.as_bytes());
        if !same {
            atomic::write(&path, text.as_bytes(), mode, None).map_err(Cause::io("write", &path))?;
        }
        Ok(path)
    }

    /// Inserts our entry into `path` (a `.conf` becomes `<path>list`),
    /// recording what restore needs first, so a kill between the two
    /// writes still leaves a restorable node.
    fn chain_into(&self, path: &Path) -> Result<PathBuf, Cause> {
        let meta = fs::metadata(path).map_err(Cause::io("stat", path))?;
        let text = select::read_config_text(path).map_err(|e| match e {
            ReadError::NotUtf8 { .. } => Cause::bad(path, "not UTF-8 text, so not JSON"),
            other => Cause::Read(other),
        })?;
        let new = conflist::insert(&text, &self.entry(true)?).map_err(|e| Cause::bad(path, e))?;
        let target = match path.to_str() {
            Some(p) if p.ends_with(".conf") => PathBuf::from(format!("{p}list")),
            _ => path.to_path_buf(),
        };
        let run_dir = &self.settings.cni_agent_run_dir;
        let mut state = State::load(run_dir);
        let record = state.get(&target).cloned();
        let ours_now = |bytes: &[u8]| record.as_ref().is_some_and(|r| state::hash(bytes) == r.written);
        if target != *path && target.exists() && !select::read_config(&target).is_ok_and(|b| ours_now(&b)) {
            return Err(Cause::bad(
                &target,
                format!(
                    "both {} and {} exist; refusing to overwrite the .conflist with the converted .conf (remove one of them)",
                    path.display(),
                    target.display()
                ),
            ));
        }
        let (original_path, original) = match &record {
            Some(r) if ours_now(text.as_bytes()) => (r.original_path.clone(), r.original.clone()),
            // The file as it is now, minus entries an older installer left:
            // restoring those would point the runtime at a deleted binary.
            _ => (
                path.to_path_buf(),
                conflist::remove_ours(&text).map_or(text.clone(), |(t, _)| t),
            ),
        };
        if new == text && target == *path && record.as_ref().is_some_and(|r| r.original == original) {
            return Ok(target);
        }
        state.put(Record {
            path: target.clone(),
            original_path,
            original,
            written: state::hash(new.as_bytes()),
        });
        let state_path = State::path(run_dir);
        state.save(run_dir).map_err(Cause::io("write", &state_path))?;
        let mode = meta.permissions().mode() & 0o7777;
        atomic::write(&target, new.as_bytes(), mode, Some(&meta)).map_err(Cause::io("write", &target))?;
        if target != *path {
            atomic::remove(path).map_err(Cause::io("remove", path))?;
        }
        Ok(target)
    }
}

/// What cleanup or `uninstall` did, file by file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallReport {
    /// Config files put back byte for byte as they were before our insertion.
    pub restored: Vec<PathBuf>,
    /// Config files changed since our insertion: only our entry was cut out.
    pub entry_removed: Vec<PathBuf>,
    /// Files deleted: the standalone config, the kubeconfig, the binary.
    pub deleted: Vec<PathBuf>,
    /// Files left alone, with why.
    pub untouched: Vec<(PathBuf, String)>,
    /// Files of ours that could not be removed, each with the error.
    pub failed: Vec<String>,
}

impl fmt::Display for UninstallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = Vec::new();
        lines.extend(
            self.restored
                .iter()
                .map(|p| format!("restored {} byte for byte", p.display())),
        );
        lines.extend(
            self.entry_removed
                .iter()
                .map(|p| format!("removed the istio-cni entry from {}", p.display())),
        );
        lines.extend(self.deleted.iter().map(|p| format!("deleted {}", p.display())));
        lines.extend(
            self.untouched
                .iter()
                .map(|(p, why)| format!("left {} alone: {why}", p.display())),
        );
        lines.extend(self.failed.iter().map(|why| format!("could not {why}")));
        if lines.is_empty() {
            return f.write_str("nothing to clean up");
        }
        f.write_str(&lines.join("\n"))
    }
}

/// `istio-cni-agent uninstall`: cleanup without an agent's memory, from the
/// settings and the state file (or, when that is gone, the conf dir), plus
/// what only a dead agent leaves: its log socket, a spent state file.
/// `Err(Incomplete)` when a file of ours is left.
pub fn uninstall(settings: &InstallSettings) -> Result<UninstallReport, InstallError> {
    let pinned = (!settings.cni_conf_name.is_empty()).then_some(settings.cni_conf_name.as_str());
    let mut report = clean(settings, None, pinned)?;
    leftovers::remove_run_dir_files(settings, &mut report);
    complete(report)
}

/// Ok when nothing of ours is left.
fn complete(report: UninstallReport) -> Result<UninstallReport, InstallError> {
    if report.failed.is_empty() {
        Ok(report)
    } else {
        Err(InstallError::Incomplete(Box::new(report)))
    }
}

/// The temp files of everything we write, then our entry (or standalone
/// file), the kubeconfig and the binary. The first error stops the second
/// part (the binary must not go while an entry points at it); a temp file
/// that cannot be removed is in `failed`.
fn clean(
    settings: &InstallSettings,
    current: Option<&Path>,
    pinned: Option<&str>,
) -> Result<UninstallReport, InstallError> {
    let mut report = UninstallReport::default();
    // First, so that the writes below, which drop their own target's temp
    // files silently, find none left to drop: every removal is reported.
    leftovers::remove_temp_files(settings, &conf_paths(settings, current, pinned), &mut report);
    if let Err(e) = clean_files(settings, current, pinned, &mut report) {
        if report != UninstallReport::default() {
            tracing::warn!(target: "cni-agent", "cleanup stopped at an error; before it: {report}");
        }
        return Err(e);
    }
    Ok(report)
}

/// Every config file cleanup may find we wrote: the recorded ones, the file
/// holding our entry, the chosen or first valid primary, the standalone
/// file, and the `.conf`/`.conflist` twin of each.
fn conf_paths(settings: &InstallSettings, current: Option<&Path>, pinned: Option<&str>) -> Vec<PathBuf> {
    let dir = &settings.mounted_cni_net_dir;
    let mut paths: Vec<PathBuf> = current.map(Path::to_path_buf).into_iter().collect();
    paths.push(dir.join(pinned.unwrap_or(STANDALONE_FILE)));
    for record in State::load(&settings.cni_agent_run_dir).records {
        paths.extend([record.path, record.original_path]);
    }
    if let Some(first) = select::valid_configs(dir).ok().and_then(|v| v.into_iter().next()) {
        paths.push(dir.join(first));
    }
    let twins: Vec<PathBuf> = paths.iter().filter_map(|p| leftovers::twin(p)).collect();
    paths.extend(twins);
    paths
}

/// The second part of [`clean`].
fn clean_files(
    settings: &InstallSettings,
    current: Option<&Path>,
    pinned: Option<&str>,
    report: &mut UninstallReport,
) -> Result<(), InstallError> {
    let dir = &settings.mounted_cni_net_dir;
    if settings.chained_cni_plugin {
        let run_dir = &settings.cni_agent_run_dir;
        let mut state = State::load(run_dir);
        for record in state.records.clone() {
            undo(&record, report).map_err(InstallError::Cleanup)?;
            state.remove(&record.path);
            let state_path = State::path(run_dir);
            state
                .save(run_dir)
                .map_err(|e| InstallError::Cleanup(Cause::io("write", &state_path)(e)))?;
        }
        // No record (lost with a reboot, or written by another installer):
        // cut our entry out of the file the runtime uses.
        let mut candidates: Vec<PathBuf> = current.map(Path::to_path_buf).into_iter().collect();
        let name = pinned
            .map(str::to_string)
            .or_else(|| select::valid_configs(dir).ok().and_then(|v| v.into_iter().next()));
        candidates.extend(name.and_then(|n| select::resolve(dir, &n)));
        candidates.dedup();
        for path in candidates {
            remove_entry(&path, report).map_err(InstallError::Cleanup)?;
        }
    } else {
        let name = pinned.unwrap_or(STANDALONE_FILE);
        let path = dir.join(name);
        let ours = select::read_config_text(&path)
            .ok()
            .and_then(|t| conflist::parse(&t).ok())
            .is_some_and(|(v, _)| entry::is_ours(&v));
        if ours {
            atomic::remove(&path).map_err(|e| InstallError::Cleanup(Cause::io("remove", &path)(e)))?;
            report.deleted.push(path);
        } else if path.exists() {
            report
                .untouched
                .push((path, format!("not an {PLUGIN_TYPE} config; someone else's file")));
        }
    }
    if let Some(path) = kubeconfig::remove(settings).map_err(|e| {
        let path = settings.kubeconfig_path();
        InstallError::Cleanup(Cause::io("remove", &path)(e))
    })? {
        report.deleted.push(path);
    }
    let binary = settings.cni_bin_dir.join(binaries::PLUGIN_BINARY);
    if atomic::remove(&binary).map_err(|e| InstallError::Cleanup(Cause::io("remove", &binary)(e)))? {
        report.deleted.push(binary);
    }
    Ok(())
}

/// Deletes `<path>.tmp.*` left by a killed writer.
fn remove_leftovers(path: &Path) {
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        atomic::remove_leftovers(dir, name);
    }
}

/// Undoes one recorded insertion: byte-exact when the file is still what we
/// wrote, else only our entry.
fn undo(record: &Record, report: &mut UninstallReport) -> Result<(), Cause> {
    let path = &record.path;
    let bytes = match select::read_config(path) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(Cause::Read(e)),
    };
    if state::hash(&bytes) != record.written {
        return remove_entry(path, report);
    }
    let meta = fs::metadata(path).map_err(Cause::io("stat", path))?;
    let mode = meta.permissions().mode() & 0o7777;
    let to = &record.original_path;
    // Original first, then the converted file: a kill in between leaves both,
    // and the `.conf` sorts first, so the runtime already sees the original.
    atomic::write(to, record.original.as_bytes(), mode, Some(&meta)).map_err(Cause::io("write", to))?;
    if to != path {
        atomic::remove(path).map_err(Cause::io("remove", path))?;
    }
    report.restored.push(to.clone());
    Ok(())
}

/// Cuts every istio-cni entry out of `path` by span; a file that is missing,
/// has none or cannot be parsed is left as it is.
fn remove_entry(path: &Path, report: &mut UninstallReport) -> Result<(), Cause> {
    let text = match select::read_config_text(path) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(ReadError::NotUtf8 { .. }) => {
            report.untouched.push((path.to_path_buf(), "not UTF-8 text".into()));
            return Ok(());
        }
        Err(e) => return Err(Cause::Read(e)),
    };
    let single = matches!(conflist::parse(&text), Ok((_, conflist::Shape::Single)));
    if single {
        return Ok(());
    }
    match conflist::remove_ours(&text) {
        Ok((_, 0)) => Ok(()),
        Ok((without, _)) => {
            let meta = fs::metadata(path).map_err(Cause::io("stat", path))?;
            let mode = meta.permissions().mode() & 0o7777;
            atomic::write(path, without.as_bytes(), mode, Some(&meta)).map_err(Cause::io("write", path))?;
            report.entry_removed.push(path.to_path_buf());
            Ok(())
        }
        Err(reason) => {
            report.untouched.push((path.to_path_buf(), reason));
            Ok(())
        }
    }
}
