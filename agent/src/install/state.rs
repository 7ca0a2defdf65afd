//! What a byte-exact restore needs, persisted under the run dir so that
//! `istio-cni-agent uninstall` after a crash can restore too: for each file
//! we changed, its bytes before our first insertion (minus any istio-cni
//! entry an older installer left, which must not come back with no binary
//! behind it), where those bytes lived (the `.conf` of a converted file),
//! and a hash of what we wrote. Restoring only when the file still
//! hashes to what we wrote means a change by anyone else is never undone.
//!
//! The run dir is the host's `/var/run/istio-cni` (tmpfs): after a reboot
//! the record is gone and cleanup falls back to removing our entry by span.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use istio_cni::bounded::{self, Limits};
use serde::{Deserialize, Serialize};

use super::atomic;

/// The state file's name in CNI_AGENT_RUN_DIR.
pub const STATE_FILE: &str = "istio-cni-install-state.json";
const VERSION: u32 = 1;

/// The state file holds, per file we changed, its original text (a config
/// of at most [`Limits::CONFIG`]) JSON-escaped, at worst six bytes per byte:
/// a few records fit well within this. Anything larger, or not a regular
/// file, is not ours and is ignored like a torn file.
const LIMITS: Limits = Limits::new(64 << 20, Duration::from_secs(5));

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub records: Vec<Record>,
}

/// One file we inserted our entry into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The file holding our entry.
    pub path: PathBuf,
    /// Where `original` is restored to (differs from `path` when a `.conf` was converted).
    pub original_path: PathBuf,
    /// The file's text before we touched it (configs are JSON, so UTF-8).
    pub original: String,
    /// [`hash`] of the bytes we last wrote to `path`.
    pub written: String,
}

impl State {
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(STATE_FILE)
    }

    /// The saved state; missing or unreadable gives an empty one (cleanup then
    /// removes our entry by span instead of restoring).
    pub fn load(run_dir: &Path) -> State {
        let path = Self::path(run_dir);
        let parsed = match bounded::read(&path, LIMITS) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.is_not_found() => return State::default(),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(state) if state.version == VERSION => state,
            Ok(state) => {
                tracing::warn!(target: "cni-agent", "ignoring {}: unknown version {}", path.display(), state.version);
                State::default()
            }
            Err(e) => {
                tracing::warn!(target: "cni-agent", "ignoring unreadable {}: {e}", path.display());
                State::default()
            }
        }
    }

    /// Writes the state atomically (0600), or deletes the file when empty.
    pub fn save(&mut self, run_dir: &Path) -> io::Result<()> {
        let path = Self::path(run_dir);
        if self.records.is_empty() {
            atomic::remove_leftovers(run_dir, STATE_FILE);
            return atomic::remove(&path).map(|_| ());
        }
        self.version = VERSION;
        let text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        atomic::write(&path, &text, 0o600, None)
    }

    pub fn get(&self, path: &Path) -> Option<&Record> {
        self.records.iter().find(|r| r.path == path)
    }

    /// Adds or replaces the record for `record.path`.
    pub fn put(&mut self, record: Record) {
        self.records.retain(|r| r.path != record.path);
        self.records.push(record);
    }

    pub fn remove(&mut self, path: &Path) {
        self.records.retain(|r| r.path != path);
    }
}

/// FNV-1a, 64 bit, as hex: stable across builds (std's hasher is not) and
/// enough to tell "still exactly what we wrote" from any edit. Not a
/// security boundary: whoever can write the conf dir owns the node anyway.
pub fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}-{}", bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn hash_is_fnv1a_and_length() {
        assert_eq!(hash(b""), "cbf29ce484222325-0");
        assert_eq!(hash(b"a"), "af63dc4c8601ec8c-1");
        assert_ne!(hash(b"{ }"), hash(b"{}"));
    }

    #[test]
    fn save_load_round_trip_and_empty_deletes() {
        let dir = testkit::Scratch::new("state");
        assert_eq!(State::load(&dir), State::default());
        let mut s = State::default();
        s.put(Record {
            path: dir.join("a.conflist"),
            original_path: dir.join("a.conf"),
            original: "{\"type\":\"bridge\"}\n".into(),
            written: hash(b"x"),
        });
        s.save(&dir).unwrap();
        assert_eq!(State::load(&dir), s);
        s.remove(&dir.join("a.conflist"));
        s.save(&dir).unwrap();
        assert!(!State::path(&dir).exists());
        fs::write(State::path(&dir), b"{torn").unwrap();
        assert_eq!(State::load(&dir), State::default());
    }

    /// A FIFO (no writer) or a device where the state file goes is ignored
    /// at once instead of blocking cleanup forever or filling memory.
    #[test]
    fn a_fifo_or_device_state_file_is_ignored_promptly() {
        let dir = testkit::Scratch::new("state-special");
        let path = State::path(&dir);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let load = |dir: PathBuf| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(State::load(&dir)));
            rx.recv_timeout(Duration::from_secs(10))
                .expect("State::load still blocked after 10 s")
        };
        assert_eq!(load(dir.to_path_buf()), State::default());
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert_eq!(load(dir.to_path_buf()), State::default());
    }
}
