//! Crash-safe file replacement: a temp file in the target's own directory
//! (so the rename never crosses filesystems), fsynced, then renamed over the
//! target, then the directory fsynced. A reader, or the node after a kill at
//! any instant, sees the old file or the new one, never a torn one.
//!
//! Temp files are named `<name>.tmp.<digits>` as Istio's are: never `.conf`
//! or `.conflist`, so libcni and the runtime ignore them, and a leftover from
//! a killed writer is recognisable and removed by the next write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Replaces `path` with `bytes` at `mode`. When `like` is an existing file,
/// its owner and group are copied (best effort: only root may chown).
pub fn write(path: &Path, bytes: &[u8], mode: u32, like: Option<&fs::Metadata>) -> io::Result<()> {
    let (dir, name) = split(path)?;
    remove_leftovers(dir, name);
    let (tmp, mut file) = create_temp(dir, name)?;
    let result = (|| {
        // Temp files are created 0600; the final mode is set before any byte
        // lands, independent of the umask.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(meta) = like {
            let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `path`; a missing file is fine. The directory is fsynced so the
/// removal survives a crash.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir);
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `<dir>/<name>.tmp.*` left by a writer that was killed. Failures
/// are ignored: a leftover only costs disk space, and cleanup removes (and
/// reports) what is still there ([`temp_files`]).
pub fn remove_leftovers(dir: &Path, name: &str) {
    for tmp in temp_files(dir, name).unwrap_or_default() {
        let _ = fs::remove_file(tmp);
    }
}

/// `<dir>/<name>.tmp.<digits>`: the temp files [`write`] makes for `name`.
/// A missing dir has none.
pub fn temp_files(dir: &Path, name: &str) -> io::Result<Vec<PathBuf>> {
    let prefix = format!("{name}.tmp.");
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let file_name = entry?.file_name();
        let Some(n) = file_name.to_str() else { continue };
        if n.strip_prefix(&prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        {
            found.push(dir.join(n));
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `file_name` is one of our temp files.
pub fn is_temp_name(file_name: &str) -> bool {
    file_name.rsplit_once(".tmp.").is_some_and(|(base, digits)| {
        !base.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a UTF-8 file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.tmp.{pid}{seq:06}"));
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes a rename or unlink durable. Best effort: some filesystems refuse
/// to fsync a directory, and the rename itself is already atomic.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use testkit::Scratch;

    #[test]
    fn replaces_with_mode_and_cleans_leftovers() {
        let dir = Scratch::new("atomic-replace");
        let target = dir.join("10-x.conflist");
        fs::write(dir.join("10-x.conflist.tmp.123"), b"torn").unwrap();
        fs::write(dir.join("10-x.conflist.tmp.abc"), b"not ours").unwrap();
        write(&target, b"{}", 0o640, None).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"{}");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o7777, 0o640);
        assert_eq!(testkit::names_in(&dir), ["10-x.conflist", "10-x.conflist.tmp.abc"]);
        fs::write(dir.join("10-x.conflist.tmp.7"), b"torn").unwrap();
        fs::write(dir.join("10-x.conflist.tmp.8"), b"torn").unwrap();
        fs::write(dir.join("10-x.conflist.tmp."), b"not ours").unwrap();
        assert_eq!(
            temp_files(&dir, "10-x.conflist").unwrap(),
            [dir.join("10-x.conflist.tmp.7"), dir.join("10-x.conflist.tmp.8")]
        );
        assert!(temp_files(&dir.join("absent"), "10-x.conflist").unwrap().is_empty());
        fs::remove_file(dir.join("10-x.conflist.tmp.7")).unwrap();
        fs::remove_file(dir.join("10-x.conflist.tmp.8")).unwrap();
        fs::remove_file(dir.join("10-x.conflist.tmp.")).unwrap();
        assert!(is_temp_name("10-x.conflist.tmp.123"));
        assert!(!is_temp_name("10-x.conflist.tmp.abc"));
        assert!(remove(&target).unwrap());
        assert!(!remove(&target).unwrap());
    }

    #[test]
    fn missing_dir_is_an_error_and_leaves_nothing() {
        let dir = Scratch::new("atomic-missing");
        let err = write(&dir.join("nope/file"), b"x", 0o600, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
