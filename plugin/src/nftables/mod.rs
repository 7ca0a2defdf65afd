//! nftables (Istio's `native_nftables` mode): rendering the transaction, and
//! applying it inside a pod netns — in-process over netlink by default.

pub mod apply;
mod expr;
mod names;
pub mod native;
mod render;
mod rule;
pub mod transaction;
pub(crate) mod wire;

pub use render::{render, transaction_text};
