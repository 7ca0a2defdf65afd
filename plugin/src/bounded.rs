//! Bounded reads of files named by configuration (kubeconfigs, tokens, CA
//! bundles, CNI configs). A path in a config can name anything: `/dev/zero`
//! would grow memory until the OOM killer comes, a FIFO without a writer
//! blocks `open` forever, a hung network filesystem blocks `read`. Every such
//! read goes through [`read`]: only regular files (symlinks followed), at
//! most [`Limits::max_bytes`], finished within [`Limits::timeout`].

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// How much and how long a read may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub timeout: Duration,
}

impl Limits {
    /// Config-sized files: kubeconfigs, CNI configs, tokens, CA bundles.
    /// 4 MiB is far above any real one (a kubeconfig with a large CA bundle
    /// is tens of KiB) and far below anything that hurts a node.
    pub const CONFIG: Limits = Limits {
        max_bytes: 4 << 20,
        timeout: Duration::from_secs(5),
    };

    pub const fn new(max_bytes: u64, timeout: Duration) -> Limits {
        Limits { max_bytes, timeout }
    }
}

/// Why a bounded read failed; the message names the path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a regular file (a {kind})", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: larger than the limit of {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{}: not read within {timeout:?}", path.display())]
    TimedOut { path: PathBuf, timeout: Duration },
    #[error("{}: not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
}

impl ReadError {
    /// A missing file, which callers often treat as "not there yet".
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The underlying I/O error kind, when there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ReadError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// The file's bytes, within `limits`.
///
/// The read runs on a helper thread so the deadline holds even when `open`
/// or `read` blocks in the kernel (a hung FUSE or NFS mount); on a timeout
/// that thread is abandoned, still blocked, and the caller gets an error.
pub fn read(path: &Path, limits: Limits) -> Result<Vec<u8>, ReadError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("bounded-read".into()).spawn(move || {
        let _ = tx.send(read_now(&owned, limits.max_bytes));
    });
    if let Err(source) = spawned {
        return Err(ReadError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    match rx.recv_timeout(limits.timeout) {
        Ok(result) => result,
        Err(_) => Err(ReadError::TimedOut {
            path: path.to_path_buf(),
            timeout: limits.timeout,
        }),
    }
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, limits: Limits) -> Result<String, ReadError> {
    let bytes = read(path, limits)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

fn read_now(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let io_err = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO without a writer returns at once instead of
    // waiting for one; the type check below then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err)?;
    let kind = file.metadata().map_err(io_err)?.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: type_name(kind),
        });
    }
    let mut bytes = Vec::new();
    // One byte past the limit tells "exactly max" from "more than max".
    (&file as &File)
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

fn type_name(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::Scratch;

    #[test]
    fn reads_a_regular_file_up_to_the_limit() {
        let dir = Scratch::new("bounded-regular");
        let f = dir.join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read(&f, Limits::new(5, Duration::from_secs(5))).unwrap(), b"12345");
        let err = read(&f, Limits::new(4, Duration::from_secs(5))).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { max: 4, .. }), "{err}");
        assert!(err.to_string().contains("larger than the limit of 4 bytes"), "{err}");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(read_to_string(&link, Limits::CONFIG).unwrap(), "12345");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused() {
        let err = read(Path::new("/dev/zero"), Limits::CONFIG).unwrap_err();
        assert!(
            err.to_string().contains("not a regular file (a character device)"),
            "{err}"
        );
        let dir = Scratch::new("bounded-fifo");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read(&fifo, Limits::CONFIG).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let err = read(&dir, Limits::CONFIG).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
    }

    #[test]
    fn missing_files_and_bad_utf8_say_so() {
        let dir = Scratch::new("bounded-missing");
        let err = read(&dir.join("nope"), Limits::CONFIG).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        std::fs::write(dir.join("bin"), [0xff, 0xfe]).unwrap();
        let err = read_to_string(&dir.join("bin"), Limits::CONFIG).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }
}
