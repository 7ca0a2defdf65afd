//! The CNI specification as the plugin, the node agent and the embedded
//! runtime all need it — one definition of each:
//!
//! - [`version`]: the supported versions, libcni's parsing, comparison and
//!   negotiation, the result families, the VERSION report;
//! - [`result`], [`convert`]: results in the three formats, decoded, read
//!   from a plugin's output, converted between versions and printed;
//! - [`error`]: the spec's error codes and the error document;
//! - [`config`]: network configuration lists and plugin entries as libcni
//!   parses them;
//! - [`select`]: libcni's choice of a node's config file, and the
//!   `CNI_CONF_NAME` twin;
//! - [`json`]: Go's canonical JSON, as libcni encodes a plugin's stdin.

pub mod config;
pub mod convert;
pub mod error;
pub mod ipnet;
pub mod json;
pub mod result;
pub mod select;
pub mod version;

pub use config::{NetworkConfigList, PluginConf};
pub use error::{CniError, Code};
pub use ipnet::IpNet;
pub use result::CniResult;
pub use select::{SelectError, Selection, SkippedConfig, select_network};
pub use version::VersionInfo;

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// A scratch dir removed on drop.
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("cni-spec-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
