//! The CNI protocol surface of the plugin: `CNI_ARGS`, its own network
//! config, the skeleton dispatching the commands, and ADD. The spec's types
//! (versions, error codes, results) are the shared `cni_spec` crate's.

pub mod add;
pub mod args;
pub mod config;
pub mod logsink;
pub mod plugin;
pub mod skel;

pub use cni_spec::{error, result, version};
