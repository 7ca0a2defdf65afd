//! What a killed agent leaves besides its entry, binary and kubeconfig: the
//! temp files of every file we write (`<name>.tmp.<digits>`, see [`atomic`])
//! in the bin dir, the conf dir and the run dir; the plugin's log socket; a
//! state file with nothing left to restore. A writer removes its own temp
//! files opportunistically and ignores failures; cleanup removes them for
//! good and reports what it could not remove: a kubeconfig temp file may
//! hold the service-account token.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::state::{STATE_FILE, State};
use super::{UninstallReport, atomic, binaries};
use crate::config::InstallSettings;
use crate::server::{logsock, pods};

/// Removes the temp files of the binaries (those of the source dir, and
/// `istio-cni` in any case), of the run dir's kubeconfig and state file, and
/// of `conf_paths`, the config files cleanup found we may have written.
pub fn remove_temp_files(settings: &InstallSettings, conf_paths: &[PathBuf], report: &mut UninstallReport) {
    let mut targets: Vec<(PathBuf, String)> = Vec::new();
    let mut bin_names = vec![binaries::PLUGIN_BINARY.to_string()];
    // Unreadable: the image's binaries are unknown; `istio-cni` is still covered.
    if let Ok(entries) = fs::read_dir(&settings.cni_bin_source_dir) {
        bin_names.extend(entries.flatten().filter_map(|e| e.file_name().into_string().ok()));
    }
    targets.extend(bin_names.into_iter().map(|n| (settings.cni_bin_dir.clone(), n)));
    let run_dir = &settings.cni_agent_run_dir;
    for name in [istio_cni::cni::config::KUBECONFIG_FILE, STATE_FILE] {
        targets.push((run_dir.clone(), name.to_string()));
    }
    for path in conf_paths {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            targets.push((dir.to_path_buf(), name.to_string()));
        }
    }
    targets.sort();
    targets.dedup();
    for (dir, name) in targets {
        match atomic::temp_files(&dir, &name) {
            Ok(found) => {
                for tmp in found {
                    remove(&tmp, report);
                }
            }
            Err(e) => report
                .failed
                .push(format!("listing {} for temp files of {name}: {e}", dir.display())),
        }
    }
}

/// `uninstall` only (a running agent closes its own sockets): the log and
/// pod cache sockets when no agent listens on them, and the state file once
/// nothing in it is left to restore (unreadable, or of an unknown version).
pub fn remove_run_dir_files(settings: &InstallSettings, report: &mut UninstallReport) {
    let run_dir = &settings.cni_agent_run_dir;
    for socket in [run_dir.join(logsock::SOCKET_NAME), run_dir.join(pods::SOCKET_NAME)] {
        if fs::symlink_metadata(&socket).is_err() {
            continue;
        }
        if UnixStream::connect(&socket).is_ok() {
            report.untouched.push((
                socket,
                "an agent is listening on it: it is that agent's to remove".into(),
            ));
        } else {
            remove(&socket, report);
        }
    }
    let state = State::path(run_dir);
    if fs::symlink_metadata(&state).is_ok() && State::load(run_dir).records.is_empty() {
        remove(&state, report);
    }
}

/// Deletes one file of ours, recording the outcome.
fn remove(path: &Path, report: &mut UninstallReport) {
    match atomic::remove(path) {
        Ok(true) => report.deleted.push(path.to_path_buf()),
        Ok(false) => {}
        Err(e) => report.failed.push(format!("remove {}: {e}", path.display())),
    }
}

/// The twin libcni would also read: `x.conf` ↔ `x.conflist`.
pub fn twin(path: &Path) -> Option<PathBuf> {
    let text = path.to_str()?;
    if let Some(base) = text.strip_suffix(".conflist") {
        Some(PathBuf::from(format!("{base}.conf")))
    } else {
        text.ends_with(".conf").then(|| PathBuf::from(format!("{text}list")))
    }
}
