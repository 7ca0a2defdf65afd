//! The calling process's mount table (`/proc/self/mountinfo`), for checks
//! that no pin or sandbox mount was left behind.

use std::path::{Path, PathBuf};

use crate::read::read_capped;

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Far above any real table (a line is ~150 bytes: this is ~400k mounts),
/// far below what would hurt.
const MOUNTINFO_CAP: u64 = 64 << 20;

/// Mount points of this process's mount namespace; empty when the table
/// cannot be read.
fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = read_capped(Path::new(MOUNTINFO), MOUNTINFO_CAP) else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

/// Whether `path` is currently a mount point in this process's mount
/// namespace.
pub fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|p| p == path)
}

/// Mount points under `dir` (path-prefix match, `dir` included).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_points().into_iter().filter(|p| p.starts_with(dir)).collect()
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as
/// three-digit octal (`\040`).
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(value) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\"), r"/end\");
        assert_eq!(unescape_mountinfo(r"/big\777"), r"/big\777");
    }

    #[test]
    fn the_root_is_mounted_and_a_plain_dir_is_not() {
        assert!(is_mounted(Path::new("/")));
        assert!(is_mounted(Path::new("/proc")));
        let dir = crate::testing::Scratch::new("mounts");
        assert!(!is_mounted(&dir));
        assert!(mounts_under(&dir).is_empty());
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/proc")));
    }
}
