//! What an iptables binary said about itself, remembered between plugin runs.
//!
//! `<bin>-save --version` and the kernel probe give the same answer for the
//! same binary on the same boot, so their results are kept in small files in
//! a cache directory (the node agent's run dir): one file per binary pair
//! (`<bin>`, `<bin>-save`), keyed by each file's resolved path, device,
//! inode and mtime, so a replaced or upgraded binary is a miss. The probe's
//! success is kept with the boot it happened in (`boot_id`): the chain types
//! a kernel offers do not change during one boot of a kernel without module
//! support.
//!
//! A missing, unreadable or malformed entry is a miss; a failed write is
//! only logged. Writes go to a temporary file renamed into place, so a
//! reader never sees a torn entry. Reads are bounded inline (regular files
//! only, opened non-blocking, at most [`MAX_ENTRY`] bytes) rather than on a
//! helper thread: the entry sits on the ADD's critical path, and on a busy
//! node each thread hand-off can cost milliseconds of scheduling delay.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::detect::Version;
use crate::netns::exec::Runner;

/// The cache directory's name under the agent's run dir.
pub const DIR_NAME: &str = "xtables-cache";
/// Entries are a few hundred bytes; anything bigger is not ours.
pub const MAX_ENTRY: u64 = 16 << 10;
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Where entries live; `None`: nothing is remembered (computed every time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionCache {
    dir: Option<PathBuf>,
}

/// The identity of a binary pair: `<bin>` and `<bin>-save` as found in the
/// search path, each with the file the path resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryKey(String);

impl BinaryKey {
    /// The key of `cmd` and `cmd-save`; `None` when either is not found.
    pub fn of(runner: &Runner, cmd: &str) -> Option<BinaryKey> {
        let mut key = String::new();
        for name in [cmd.to_owned(), format!("{cmd}-save")] {
            let path = runner.find(&name)?;
            let meta = std::fs::metadata(&path).ok()?;
            key.push_str(&format!(
                "{}\t{}:{}:{}.{}\n",
                path.display(),
                meta.dev(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
        }
        Some(BinaryKey(key))
    }

    fn file_name(&self) -> String {
        // FNV-1a: a stable name; the full key inside the file decides.
        let hash = self.0.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("{hash:016x}.json")
    }
}

/// What is known about one binary pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    key: String,
    /// `major.minor.patch` of `<bin>-save --version`.
    pub version: (u32, u32, u32),
    /// Whether the version output said `nf_tables`.
    pub nft: bool,
    /// The boot in which the kernel probe with `<bin>` succeeded.
    #[serde(default)]
    pub probed_boot: Option<String>,
}

impl Entry {
    /// A fresh entry for `key`.
    pub fn new(key: &BinaryKey, version: Version, nft: bool) -> Entry {
        Entry {
            key: key.0.clone(),
            version: (version.0, version.1, version.2),
            nft,
            probed_boot: None,
        }
    }

    /// The version as [`Version`].
    pub fn version(&self) -> Version {
        Version(self.version.0, self.version.1, self.version.2)
    }
}

impl VersionCache {
    /// Entries under `dir` (created on first store if its parent exists).
    pub fn at(dir: impl Into<PathBuf>) -> VersionCache {
        VersionCache { dir: Some(dir.into()) }
    }

    /// No cache: every run asks the binaries.
    pub fn none() -> VersionCache {
        VersionCache::default()
    }

    /// The directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The entry for `key`, if present and well-formed.
    pub fn load(&self, key: &BinaryKey) -> Option<Entry> {
        let path = self.dir.as_ref()?.join(key.file_name());
        let text = read_small(&path).ok()?;
        let entry: Entry = serde_json::from_str(&text).ok()?;
        (entry.key == key.0).then_some(entry)
    }

    /// Stores `entry` (best effort: a failure is logged, never fatal).
    pub fn store(&self, entry: &Entry) {
        let Some(dir) = &self.dir else { return };
        if let Err(e) = write_entry(dir, entry) {
            tracing::debug!(dir = %dir.display(), error = %e, "not caching the iptables version");
        }
    }
}

fn write_entry(dir: &Path, entry: &Entry) -> std::io::Result<()> {
    // Only inside an existing parent (the agent's run dir): never invent it.
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let name = BinaryKey(entry.key.clone()).file_name();
    let tmp = dir.join(format!(
        ".{name}.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let text = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A small regular file's text, within [`MAX_ENTRY`] bytes; a FIFO or
/// device is refused without blocking on it.
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_ENTRY + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_ENTRY {
        return Err(std::io::Error::other("larger than an entry"));
    }
    Ok(text)
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    let text = read_small(Path::new(BOOT_ID)).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::Scratch;

    fn fake_bins(dir: &Path) -> Runner {
        use std::os::unix::fs::PermissionsExt;
        for name in ["iptables-nft", "iptables-nft-save"] {
            let p = dir.join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Runner::new(Path::new("/proc/self/ns/net")).with_search_path(dir.as_os_str().to_owned())
    }

    #[test]
    fn entries_round_trip_and_a_changed_binary_misses() {
        let dir = Scratch::new("xtcache-roundtrip");
        let runner = fake_bins(&dir);
        let key = BinaryKey::of(&runner, "iptables-nft").expect("both binaries found");
        let cache = VersionCache::at(dir.join(DIR_NAME));
        assert_eq!(cache.load(&key), None);
        let mut entry = Entry::new(&key, Version(1, 8, 9), true);
        entry.probed_boot = Some("b".into());
        cache.store(&entry);
        assert_eq!(cache.load(&key), Some(entry));

        // Replacing the file (new inode) changes the key: a miss.
        let save = dir.join("iptables-nft-save");
        std::fs::remove_file(&save).unwrap();
        std::fs::copy(dir.join("iptables-nft"), &save).unwrap();
        let replaced = BinaryKey::of(&runner, "iptables-nft").unwrap();
        assert_ne!(replaced, key);
        assert_eq!(cache.load(&replaced), None);
    }

    #[test]
    fn bad_entries_are_misses_and_no_dir_is_never_created() {
        let dir = Scratch::new("xtcache-bad");
        let runner = fake_bins(&dir);
        let key = BinaryKey::of(&runner, "iptables-nft").unwrap();
        let cache = VersionCache::at(dir.join(DIR_NAME));
        std::fs::create_dir(dir.join(DIR_NAME)).unwrap();
        let file = dir.join(DIR_NAME).join(key.file_name());
        for junk in ["", "{", "{\"key\":\"other\",\"version\":[1,8,9],\"nft\":true}"] {
            std::fs::write(&file, junk).unwrap();
            assert_eq!(cache.load(&key), None, "{junk:?}");
        }
        // A cache dir whose parent does not exist is not created.
        let orphan = VersionCache::at(dir.join("missing").join(DIR_NAME));
        orphan.store(&Entry::new(&key, Version(1, 8, 9), true));
        assert!(!dir.join("missing").exists());
        assert_eq!(VersionCache::none().load(&key), None);
        assert!(BinaryKey::of(&runner, "ip6tables-nft").is_none());
        // A FIFO in place of the entry is refused without blocking.
        std::fs::remove_file(&file).unwrap();
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(cache.load(&key), None);
        assert!(read_small(Path::new("/dev/zero")).is_err());
    }
}
