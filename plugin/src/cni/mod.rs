//! The CNI protocol surface of the plugin: error codes and `CNI_ARGS`.

pub mod args;
pub mod error;
