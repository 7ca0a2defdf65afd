//! Network namespaces of the harness, its nodes and pods: pinned to files
//! under the cluster root, entered by commands (`Netns::command`) and
//! closures (`Netns::run`). The implementation is the `linux-ns` crate's,
//! shared with the plugin and the agent.

pub use linux_ns::mounts::{is_mounted, mounts_under};
pub use linux_ns::{Netns, NsError as NetnsError};
