//! The CNI protocol surface of the plugin: versions, error codes, `CNI_ARGS`
//! and results.

pub mod add;
pub mod args;
pub mod config;
pub mod error;
pub mod logsink;
pub mod plugin;
pub mod result;
pub mod skel;
pub mod version;
