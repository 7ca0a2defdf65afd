//! The node's own paths as the plugins it runs see them.
//!
//! On a real node the container runtime runs CNI plugins in the host's
//! mount namespace, so a path a config names (`/var/run/istio-cni/...`,
//! where the agent's DaemonSet pod writes the plugin's kubeconfig through a
//! hostPath mount) is the same file for the agent and the plugin. An
//! embedded node's files live in its directory tree, so each plugin process
//! gets a private mount namespace with the node's directories bound over
//! those paths, entered between `fork` and `exec`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Node directories bound over the paths plugins name.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// (node dir, path) pairs, ready for mount(2).
    binds: Arc<Vec<(CString, CString)>>,
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{} holds a NUL byte", p.display())))
}

impl NodeView {
    /// Binds each `(source, target)`: the node's directory `source` seen at
    /// `target`. Both are created when missing (a mount point must exist).
    pub fn new(binds: impl IntoIterator<Item = (PathBuf, PathBuf)>) -> io::Result<NodeView> {
        let mut out = Vec::new();
        for (source, target) in binds {
            std::fs::create_dir_all(&source)?;
            std::fs::create_dir_all(&target)?;
            out.push((c_path(&source)?, c_path(&target)?));
        }
        Ok(NodeView { binds: Arc::new(out) })
    }

    /// Makes `cmd`'s child enter a private mount namespace with the binds.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let binds = Arc::clone(&self.binds);
        // SAFETY: the hook runs in the forked child before exec and only
        // makes the unshare(2) and mount(2) system calls on C strings the
        // captured Arc keeps alive; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Private: the binds must not propagate back to the machine.
                let root = c"/";
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for (source, target) in binds.iter() {
                    let flags = libc::MS_BIND | libc::MS_REC;
                    if libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_sees_the_node_dir_at_the_named_path() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: a_plugin_sees_the_node_dir_at_the_named_path needs root (a mount namespace)");
            return;
        }
        let base = std::env::temp_dir().join(format!("node-view-{}", std::process::id()));
        let (node, seen) = (base.join("node/var/run/x"), base.join("machine/var/run/x"));
        let view = NodeView::new([(node.clone(), seen.clone())]).unwrap();
        std::fs::write(node.join("kubeconfig"), "from the node").unwrap();
        let mut cmd = Command::new("cat");
        cmd.arg(seen.join("kubeconfig"));
        view.enter_on_exec(&mut cmd);
        let out = cmd.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from the node", "{out:?}");
        // The machine's own path is untouched.
        assert!(!seen.join("kubeconfig").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
