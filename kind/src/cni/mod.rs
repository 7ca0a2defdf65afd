//! Primary CNI profiles and a runner that executes CNI chains exactly as libcni does.
//!
//! - [`config`]: loading `.conflist`/`.conf`/`.json` files and choosing a
//!   node's network (first valid file in byte order) — the shared
//!   `cni_spec` crate's, as are [`version`] and [`json`].
//! - [`runner`]: ADD/DEL/CHECK/STATUS/GC/VERSION over a list, with
//!   `prevResult` chaining, the result cache and a per-call timeout.
//! - [`request`], [`runtime`]: the per-plugin stdin and the `CNI_*`
//!   environment, as libcni builds them.
//! - [`added`], [`cache`]: what ADD returns, and libcni's cache format.
//! - [`profile`]: bridge, ptp (kindnet), macvlan and ipvlan configs.

pub mod added;
pub mod cache;
pub mod error;
pub mod exec;
pub mod node_view;
pub mod profile;
pub mod request;
pub mod runner;
pub mod runtime;

pub use cni_spec::{json, version};

/// Network configuration and libcni's choice of a node's network.
pub mod config {
    pub use cni_spec::config::*;
    pub use cni_spec::select::*;
}

pub use added::AddResult;
pub use cni_spec::{CniResult, VersionInfo};
pub use config::{NetworkConfigList, PluginConf, SelectError, Selection, SkippedConfig, select_network};
pub use error::{BadOutput, CniError, PluginError, PluginFailure};
pub use profile::{ChainedPlugin, ConfFormat, GeneratedConfig, Profile, ProfileConfig};
pub use request::GcAttachment;
pub use runner::{CachedAttachment, Runner};
pub use runtime::{PodRef, RuntimeConf};
