//! Primary CNI profiles and a runner that executes CNI chains exactly as libcni does.
//!
//! - [`config`]: loading `.conflist`/`.conf`/`.json` files and choosing a
//!   node's network (first valid file in byte order).
//! - [`runner`]: ADD/DEL/CHECK/STATUS/GC/VERSION over a list, with
//!   `prevResult` chaining, the result cache and a per-call timeout.
//! - [`request`], [`runtime`]: the per-plugin stdin and the `CNI_*`
//!   environment, as libcni builds them.
//! - [`result`], [`cache`]: what plugins print, and libcni's cache format.
//! - [`profile`]: bridge, ptp (kindnet), macvlan and ipvlan configs.

pub mod cache;
pub mod config;
pub mod error;
pub mod exec;
pub mod json;
pub mod profile;
pub mod request;
pub mod result;
pub mod runner;
pub mod runtime;
pub mod version;

pub use config::{NetworkConfigList, PluginConf, SelectError, Selection, SkippedConfig, select_network};
pub use error::{BadOutput, CniError, PluginFailure};
pub use profile::{ChainedPlugin, ConfFormat, GeneratedConfig, Profile, ProfileConfig};
pub use request::GcAttachment;
pub use result::{CniResult, PluginError, VersionInfo};
pub use runner::{CachedAttachment, Runner};
pub use runtime::{PodRef, RuntimeConf};
