//! Scratch directories: unique to the process and the call, removed with
//! everything in them on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory `<prefix>-<pid>-<n>` under the temp dir, removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates the directory; a leftover of an earlier process with the same
    /// pid is removed first. The error names the directory.
    pub fn create(prefix: &str) -> std::io::Result<ScratchDir> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Ok(ScratchDir(dir)),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("creating {}: {e}", dir.display()),
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
