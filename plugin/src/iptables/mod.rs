//! iptables: rendering the restore payload, and applying it inside a netns.

pub mod apply;
