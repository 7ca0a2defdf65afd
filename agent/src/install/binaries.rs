//! Copying the plugin binaries into the node's CNI bin dir (§4.2): every
//! regular file of the source dir, atomically (a runtime may be executing
//! the old binary: writing in place would fail with "text file busy" or
//! hand it a torn file), skipped when content and mode are already equal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::atomic;
use super::error::Cause;

/// The binary `cleanup` removes (Istio leaves other copied files in place).
pub const PLUGIN_BINARY: &str = "istio-cni";

/// Copies each regular file of `src` into `dst`; returns the installed paths.
pub fn copy_all(src: &Path, dst: &Path) -> Result<Vec<PathBuf>, Cause> {
    let mut names: Vec<String> = fs::read_dir(src)
        .map_err(Cause::io("read dir", src))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut installed = Vec::new();
    for name in names {
        let from = src.join(&name);
        // Follows symlinks, as Go's ReadDir+Open would; directories are skipped.
        let meta = fs::metadata(&from).map_err(Cause::io("stat", &from))?;
        if !meta.is_file() {
            continue;
        }
        let to = dst.join(&name);
        atomic::remove_leftovers(dst, &name);
        let bytes = fs::read(&from).map_err(Cause::io("read", &from))?;
        let mode = meta.permissions().mode() & 0o7777;
        if !same(&to, &bytes, mode) {
            atomic::write(&to, &bytes, mode, None).map_err(|e| {
                if e.raw_os_error() == Some(libc::EROFS) {
                    tracing::error!(target: "cni-agent", "{} is read-only: set global.platform for this platform's CNI bin dir", dst.display());
                }
                Cause::Io {
                    op: "write",
                    path: to.clone(),
                    source: e,
                }
            })?;
            tracing::info!(target: "cni-agent", "Copied {} to {}", name, dst.display());
        }
        installed.push(to);
    }
    Ok(installed)
}

fn same(path: &Path, bytes: &[u8], mode: u32) -> bool {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o7777 == mode && m.len() == bytes.len() as u64 => {
            fs::read(path).is_ok_and(|b| b == bytes)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_updates_and_skips_identical() {
        let root = std::env::temp_dir().join(format!("istio-cni-bins-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (src, dst) = (root.join("src"), root.join("dst"));
        fs::create_dir_all(src.join("subdir")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(src.join("istio-cni"), b"v1").unwrap();
        fs::set_permissions(src.join("istio-cni"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dst.join("istio-cni.tmp.42"), b"torn").unwrap();
        assert_eq!(copy_all(&src, &dst).unwrap(), [dst.join("istio-cni")]);
        assert_eq!(fs::read(dst.join("istio-cni")).unwrap(), b"v1");
        assert_eq!(
            fs::metadata(dst.join("istio-cni")).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(!dst.join("istio-cni.tmp.42").exists());
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(dst.join("istio-cni")).unwrap());
        copy_all(&src, &dst).unwrap();
        let again = std::os::unix::fs::MetadataExt::ino(&fs::metadata(dst.join("istio-cni")).unwrap());
        assert_eq!(inode, again, "identical content must not be rewritten");
        fs::write(src.join("istio-cni"), b"v2").unwrap();
        copy_all(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("istio-cni")).unwrap(), b"v2");
        let err = copy_all(&root.join("nope"), &dst).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }
}
