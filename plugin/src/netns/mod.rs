//! Work inside the pod's network namespace. Entering namespaces is the
//! `linux-ns` crate's job (a fresh, throw-away thread per call); this module
//! adds what the plugin does there.
//!
//! * [`run_in_netns`]: run a closure inside a netns on a throw-away thread.
//! * [`exec`]: spawn external commands (`iptables*`, `nft`) inside the netns,
//!   in a private mount namespace with a per-pod xtables lock and an NSS mask.
//! * [`netlink`]: interface addresses, the `::6` passthrough address and the
//!   TPROXY policy routing, via rtnetlink.
//! * [`family`]: the pure IPv6-detection decision.

pub mod exec;
pub mod family;
pub mod netlink;

/// Why work could not be run inside a network namespace.
pub use linux_ns::NsError as NetnsError;
/// Runs a closure on a fresh thread inside a netns (see [`linux_ns::Netns::run`]).
pub use linux_ns::run_in_netns;
