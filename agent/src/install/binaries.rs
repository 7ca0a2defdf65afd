//! Copying the plugin binaries into the node's CNI bin dir: every regular
//! file of the source dir, atomically (a runtime may be executing the old
//! binary: writing in place would fail with "text file busy" or hand it a
//! torn file), skipped when content and mode are already equal.
//!
//! Reads are bounded like every read of a configured path, with a larger
//! limit: a source file over [`LIMITS`] is an error, the comparison streams
//! both files a block at a time, and only a changed binary is loaded.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use istio_cni::bounded::{self, Limits, ReadError};

use super::atomic;
use super::error::Cause;

/// The binary `cleanup` removes (Istio leaves other copied files in place).
pub const PLUGIN_BINARY: &str = "istio-cni";

/// Plugin binaries are tens of MiB; 256 MiB leaves room for debug builds.
/// A minute covers reading that from a slow disk.
pub const LIMITS: Limits = Limits::new(256 << 20, Duration::from_secs(60));

/// Copies each regular file of `src` into `dst`; returns the installed paths.
pub fn copy_all(src: &Path, dst: &Path) -> Result<Vec<PathBuf>, Cause> {
    copy_all_within(src, dst, LIMITS)
}

fn copy_all_within(src: &Path, dst: &Path, limits: Limits) -> Result<Vec<PathBuf>, Cause> {
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
        if meta.len() > limits.max_bytes {
            return Err(Cause::Read(ReadError::TooLarge {
                path: from,
                max: limits.max_bytes,
            }));
        }
        let to = dst.join(&name);
        atomic::remove_leftovers(dst, &name);
        let mode = meta.permissions().mode() & 0o7777;
        if !same(&from, &to, mode, limits) {
            let bytes = bounded::read(&from, limits)?;
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

/// Whether `to` is a regular file with `mode` and the bytes of `from`,
/// decided within `limits.timeout` (on a helper thread, so a hung mount
/// cannot stall the pass); unreadable or slow counts as different, and the
/// bounded read of `from` that follows reports why.
fn same(from: &Path, to: &Path, mode: u32, limits: Limits) -> bool {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("compare-binary".into())
        .spawn(move || {
            let _ = tx.send(compare(&from, &to, mode, limits.max_bytes).unwrap_or(false));
        });
    spawned.is_ok() && rx.recv_timeout(limits.timeout).unwrap_or(false)
}

/// Both files a block at a time: memory stays at two buffers whatever
/// their size.
fn compare(from: &Path, to: &Path, mode: u32, max: u64) -> io::Result<bool> {
    let (a, a_meta) = open_regular(from)?;
    let (b, b_meta) = open_regular(to)?;
    if b_meta.permissions().mode() & 0o7777 != mode || a_meta.len() != b_meta.len() || a_meta.len() > max {
        return Ok(false);
    }
    const BLOCK: usize = 64 << 10;
    let mut a = BufReader::with_capacity(BLOCK, a.take(max));
    let mut b = BufReader::with_capacity(BLOCK, b.take(max));
    loop {
        let (x, y) = (a.fill_buf()?, b.fill_buf()?);
        if x.is_empty() || y.is_empty() {
            return Ok(x.is_empty() && y.is_empty());
        }
        let n = x.len().min(y.len());
        if x[..n] != y[..n] {
            return Ok(false);
        }
        a.consume(n);
        b.consume(n);
    }
}

/// Opens without blocking on a FIFO, and only a regular file.
fn open_regular(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_updates_and_skips_identical() {
        let root = testkit::Scratch::new("bins");
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
        // Same length and mode, one byte different: rewritten.
        fs::write(src.join("istio-cni"), b"v3").unwrap();
        copy_all(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("istio-cni")).unwrap(), b"v3");
        let err = copy_all(&root.join("nope"), &dst).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    /// A source over the limit is an error naming it, before anything is
    /// read or written; FIFOs and devices in the source dir are not copied.
    #[test]
    fn oversized_sources_are_refused_and_special_files_skipped() {
        let root = testkit::Scratch::new("bins-limit");
        let (src, dst) = (root.join("src"), root.join("dst"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        nix::unistd::mkfifo(&src.join("a-fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", src.join("b-zero")).unwrap();
        fs::write(src.join("istio-cni"), b"12345").unwrap();
        let small = Limits::new(4, Duration::from_secs(5));
        let err = copy_all_within(&src, &dst, small).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "read {}: larger than the limit of 4 bytes",
                src.join("istio-cni").display()
            )
        );
        assert_eq!(fs::read_dir(&dst).unwrap().count(), 0, "nothing written");
        let installed = copy_all_within(&src, &dst, Limits::new(5, Duration::from_secs(5))).unwrap();
        assert_eq!(installed, [dst.join("istio-cni")]);
        let mode = fs::metadata(src.join("istio-cni")).unwrap().permissions().mode() & 0o7777;
        assert!(compare(&src.join("istio-cni"), &dst.join("istio-cni"), mode, 5).unwrap());
        assert!(!compare(&src.join("istio-cni"), &dst.join("istio-cni"), mode, 4).unwrap());
        assert!(open_regular(&src.join("a-fifo")).is_err());
    }
}
