//! Writing a volume's files the way kubelet's atomic writer does: the
//! files go into a fresh hidden directory, `..data` is switched to it with
//! one rename, and each visible name is a symlink through `..data`. A
//! reader (or a process watching the directory) never sees a mix of old
//! and new files, and a rotated token replaces the old one at once.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// One file of a volume.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Relative path inside the volume (validated by [`write`]).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for VolumeFile {
    // Never print the content: it may be a token or a Secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFile")
            .field("path", &self.path)
            .field("bytes", &self.data.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// Why a volume path is refused.
pub fn check_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(format!("path {path:?} must be relative and non-empty"));
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("path {path:?} must not contain '..' or '.'"));
    }
    if path.starts_with("..") {
        return Err(format!("path {path:?} must not start with '..'"));
    }
    Ok(())
}

fn first_component(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Replaces the content of `dir` with `files`, atomically for readers.
pub fn write(dir: &Path, files: &[VolumeFile]) -> io::Result<()> {
    for f in files {
        check_path(&f.path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}.{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
        std::process::id()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    for f in files {
        let path = fresh.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode & 0o7777)
            .open(&path)?;
        out.write_all(&f.data)?;
        // The umask may have narrowed the mode: set it exactly.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
    }
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data)?;
    let names: BTreeSet<&str> = files.iter().map(|f| first_component(&f.path)).collect();
    for name in &names {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(PathBuf::from("..data").join(name), &link)?;
        }
    }
    // Names no longer in the volume go.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !names.contains(name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str, mode: u32) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn rewrites_switch_all_files_at_once_and_drop_stale_names() {
        let dir = testkit::Scratch::new("atomic-writer");
        let vol = dir.join("vol");
        write(&vol, &[file("token", "one", 0o600), file("sub/ca.crt", "ca", 0o644)]).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("token")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(vol.join("sub/ca.crt")).unwrap(), "ca");
        let mode = std::fs::metadata(vol.join("token")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read_link(vol.join("..data")).unwrap();
        write(&vol, &[file("token", "two", 0o600)]).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("token")).unwrap(), "two");
        assert!(
            std::fs::symlink_metadata(vol.join("sub")).is_err(),
            "a stale name is removed"
        );
        assert!(!vol.join(first).exists(), "the previous generation is removed");
        assert!(
            std::fs::symlink_metadata(vol.join("token"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data", "./x"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path("a/b.txt").is_ok());
        let dir = testkit::Scratch::new("atomic-writer-bad");
        assert!(write(&dir.join("v"), &[file("../escape", "x", 0o644)]).is_err());
        assert!(!dir.join("escape").exists());
    }
}
