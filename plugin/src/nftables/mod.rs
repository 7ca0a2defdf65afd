//! nftables (Istio's `native_nftables` mode): rendering the transaction, and
//! applying it inside a pod netns.

pub mod apply;
mod render;

pub use render::{render, transaction_text};
