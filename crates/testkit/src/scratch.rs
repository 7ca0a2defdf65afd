//! Scratch directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory unique to this process and call, removed with
/// everything in it on drop (also when the test panics). Declare what is
/// mounted or pinned inside it after it, so that goes first.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new directory under the temp dir whose name carries `label`; panics
    /// when it cannot be created (for tests).
    pub fn new(label: &str) -> Scratch {
        let label = label.replace("::", "-").replace('/', "-");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("istio-cni-test-{}-{n}-{label}", std::process::id()));
        Scratch::at(path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new directory `<prefix>-<pid>-<n>` under the temp dir, for code that
    /// reports failures instead of panicking (the scenario runner's work
    /// dirs). The error names the directory.
    pub fn create(prefix: &str) -> std::io::Result<Scratch> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Scratch::at(std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id())))
    }

    /// Creates `path` empty: a leftover of an earlier process with the same
    /// pid is removed first.
    fn at(path: PathBuf) -> std::io::Result<Scratch> {
        let _ = std::fs::remove_dir_all(&path);
        match std::fs::create_dir_all(&path) {
            Ok(()) => Ok(Scratch { path }),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("creating {}: {e}", path.display()),
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// The names of the entries of `dir`, sorted (a test asserting that nothing
/// was left behind prints them). Panics when `dir` cannot be listed.
pub fn names_in(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scratch_is_fresh_and_removed_on_drop() {
        let a = Scratch::new("a::b/c");
        let b = Scratch::new("a::b/c");
        assert_ne!(a.path(), b.path());
        assert!(a.path().file_name().unwrap().to_string_lossy().ends_with("a-b-c"));
        std::fs::write(a.join("f"), "x").unwrap();
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn names_in_lists_a_directory_sorted() {
        let dir = Scratch::new("names");
        assert!(names_in(&dir).is_empty());
        for name in ["b", "a"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(names_in(&dir), ["a", "b"]);
    }
}
