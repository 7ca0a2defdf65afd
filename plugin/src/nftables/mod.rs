//! nftables (Istio's `native_nftables` mode): rendering the transaction, and applying it.

pub mod apply;
