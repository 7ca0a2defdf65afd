//! Putting the primary CNI plugins (Debian's containernetworking-plugins)
//! into a node's bin dir.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the dir the primary plugins are taken from
/// (set by `ci/env`); `/usr/lib/cni` when unset.
pub const PLUGINS_DIR_ENV: &str = "CNI_PLUGINS_DIR";

/// Where Debian installs the reference plugins.
pub const DEFAULT_PLUGINS_DIR: &str = "/usr/lib/cni";

/// The plugin source dir: `$CNI_PLUGINS_DIR`, else `/usr/lib/cni`.
pub fn default_plugins_dir() -> PathBuf {
    std::env::var_os(PLUGINS_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGINS_DIR))
}

/// How plugins are put into a node's bin dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstallMode {
    /// A symlink to the source binary (cheap; the default).
    #[default]
    Symlink,
    /// A copy with the source's permissions (what a real node has, and what
    /// tests that replace or remove binaries need).
    Copy,
}

/// What was installed into one bin dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPlugins {
    /// The bin dir.
    pub bin_dir: PathBuf,
    /// Where the binaries came from.
    pub source_dir: PathBuf,
    /// Symlinked or copied.
    pub mode: InstallMode,
    /// The plugin names, sorted.
    pub names: Vec<String>,
}

/// Why the primary plugins could not be installed into a node.
#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    /// The source dir cannot be listed.
    #[error("reading CNI plugin dir {}: {source}", dir.display())]
    Read {
        /// The source dir.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A plugin could not be linked or copied.
    #[error("installing {} as {}: {source}", from.display(), to.display())]
    Install {
        /// The source binary.
        from: PathBuf,
        /// Its place in the bin dir.
        to: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The source dir has no executables.
    #[error("no CNI plugins in {} (install Debian's containernetworking-plugins or set {PLUGINS_DIR_ENV})", .0.display())]
    None(PathBuf),
}

/// Installs every executable regular file of `source_dir` into `bin_dir`.
pub fn install_plugins(source_dir: &Path, bin_dir: &Path, mode: InstallMode) -> Result<InstalledPlugins, PluginsError> {
    let unreadable = |source| PluginsError::Read {
        dir: source_dir.to_path_buf(),
        source,
    };
    let entries = std::fs::read_dir(source_dir).map_err(unreadable)?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let src = entry.path();
        let Ok(meta) = std::fs::metadata(&src) else { continue };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dst = bin_dir.join(&name);
        install_one(&src, &dst, mode, meta.permissions().mode()).map_err(|source| PluginsError::Install {
            from: src.clone(),
            to: dst.clone(),
            source,
        })?;
        names.push(name);
    }
    if names.is_empty() {
        return Err(PluginsError::None(source_dir.to_path_buf()));
    }
    names.sort();
    Ok(InstalledPlugins {
        bin_dir: bin_dir.to_path_buf(),
        source_dir: source_dir.to_path_buf(),
        mode,
        names,
    })
}

fn install_one(src: &Path, dst: &Path, mode: InstallMode, perms: u32) -> io::Result<()> {
    match std::fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match mode {
        InstallMode::Symlink => std::os::unix::fs::symlink(src, dst),
        InstallMode::Copy => {
            // Copy to a temporary name and rename, so a concurrent exec never
            // sees a half-written binary ("text file busy" or truncated).
            let tmp = dst.with_extension("tmp-install");
            std::fs::copy(src, &tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(perms))?;
            std::fs::rename(&tmp, dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use testkit::Scratch;

    use super::*;

    fn write_exec(path: &Path, mode: u32) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn symlinks_and_copies_executables_only() {
        let base = Scratch::new("plugins-modes");
        let src = base.join("src");
        std::fs::create_dir_all(src.join("subdir")).unwrap();
        write_exec(&src.join("bridge"), 0o755);
        write_exec(&src.join("ptp"), 0o700);
        write_exec(&src.join("README"), 0o644);
        for (mode, dir) in [(InstallMode::Symlink, "l"), (InstallMode::Copy, "c")] {
            let bin = base.join(dir);
            std::fs::create_dir_all(&bin).unwrap();
            let got = install_plugins(&src, &bin, mode).unwrap();
            assert_eq!(got.names, ["bridge", "ptp"]);
            let meta = std::fs::symlink_metadata(bin.join("ptp")).unwrap();
            match mode {
                InstallMode::Symlink => assert!(meta.file_type().is_symlink()),
                InstallMode::Copy => {
                    assert!(meta.is_file());
                    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
                }
            }
            assert!(!bin.join("README").exists());
            // Re-installing replaces what is there.
            install_plugins(&src, &bin, mode).unwrap();
        }
    }

    #[test]
    fn empty_or_missing_source_is_an_error() {
        let base = Scratch::new("plugins-empty");
        let err = install_plugins(&base, &base, InstallMode::Symlink).unwrap_err();
        assert!(matches!(&err, PluginsError::None(dir) if dir == base.path()), "{err:?}");
        assert!(err.to_string().contains("no CNI plugins"), "{err}");
        let err = install_plugins(&base.join("nope"), &base, InstallMode::Symlink).unwrap_err();
        assert!(matches!(&err, PluginsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
