//! `skuid`/`skgid` values: a user or group name, else a decimal id — the
//! order `nft` resolves them in. Names come from `/etc/passwd` and
//! `/etc/group` only (what `nft` sees in the plugin's sandbox, where
//! `nsswitch.conf` is masked): no NSS module, so no lookup leaves the node.

use std::path::{Path, PathBuf};

use crate::bounded::{self, Limits};

/// Lazily loaded user and group tables.
#[derive(Debug)]
pub struct Names {
    passwd: Source,
    group: Source,
}

#[derive(Debug)]
enum Source {
    File(PathBuf),
    Loaded(Vec<(String, u32)>),
}

impl Names {
    /// The node's `/etc/passwd` and `/etc/group`.
    pub fn system() -> Self {
        Self::files(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    /// Tables from the given files (read on first use; a missing file is empty).
    pub fn files(passwd: &Path, group: &Path) -> Self {
        Names {
            passwd: Source::File(passwd.to_path_buf()),
            group: Source::File(group.to_path_buf()),
        }
    }

    /// No names at all: only numeric ids resolve.
    pub fn numeric_only() -> Self {
        Names {
            passwd: Source::Loaded(Vec::new()),
            group: Source::Loaded(Vec::new()),
        }
    }

    /// The uid for `value`.
    pub fn uid(&mut self, value: &str) -> Result<u32, String> {
        resolve(&mut self.passwd, value, "user")
    }

    /// The gid for `value`.
    pub fn gid(&mut self, value: &str) -> Result<u32, String> {
        resolve(&mut self.group, value, "group")
    }
}

fn resolve(source: &mut Source, value: &str, what: &str) -> Result<u32, String> {
    if let Source::File(path) = source {
        let entries = load(path)?;
        *source = Source::Loaded(entries);
    }
    let Source::Loaded(entries) = source else {
        unreachable!("loaded just above")
    };
    if let Some((_, id)) = entries.iter().find(|(name, _)| name == value) {
        return Ok(*id);
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map_err(|_| format!("{what} id {value} is out of range"));
    }
    Err(format!("{what} {value:?} does not exist"))
}

/// `name:x:id:...` lines; malformed lines are skipped like glibc does.
fn load(path: &Path) -> Result<Vec<(String, u32)>, String> {
    let text = match bounded::read_to_string(path, Limits::CONFIG) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            (!name.is_empty()).then(|| (name.to_string(), id))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_first_then_numbers() {
        let dir = std::env::temp_dir().join(format!("icni-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (passwd, group) = (dir.join("passwd"), dir.join("group"));
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nbroken line\n1337:x:42:42::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(&group, "ftp:x:21:\nstaff:x:50:a,b\n").unwrap();
        let mut n = Names::files(&passwd, &group);
        assert_eq!(n.uid("root"), Ok(0));
        // A user literally named "1337" wins over the number, as in nft.
        assert_eq!(n.uid("1337"), Ok(42));
        assert_eq!(n.uid("7"), Ok(7));
        assert_eq!(n.gid("ftp"), Ok(21));
        assert_eq!(n.gid("java"), Err("group \"java\" does not exist".to_string()));
        assert!(n.gid("99999999999").unwrap_err().contains("out of range"));
        let mut missing = Names::files(&dir.join("none"), &dir.join("none"));
        assert_eq!(missing.gid("5"), Ok(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
