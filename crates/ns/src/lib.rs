//! `linux-ns`: Linux namespaces, the one implementation the plugin, the node
//! agent and the harness share.
//!
//! Namespaces are per *thread*: `setns(2)` and `unshare(2)` only move the
//! calling thread. Every piece of work that must see another namespace
//! therefore runs on a fresh OS thread that enters it, does the work and
//! exits; such a thread is never pooled (and never an async worker), so no
//! unrelated code ever runs in the wrong namespace by accident.
//!
//! * [`Netns`]: create and pin a network namespace to a file (as `ip netns
//!   add` does, anywhere), open one by path, run a closure inside
//!   ([`Netns::run`], [`run_in_netns`]) or make a [`std::process::Command`]
//!   enter it between `fork` and `exec` ([`Netns::command`]).
//! * [`exec`]: run a command to completion inside a netns, optionally in a
//!   private mount namespace with bind-mount masks ([`sandbox`]).
//! * [`mounts`]: reading `/proc/self/mountinfo` (leak checks).
//! * [`proc`]: find a process's network namespace by walking `/proc`.

mod error;
pub mod exec;
pub mod mounts;
mod netns;
pub mod proc;
mod read;
pub mod sandbox;
#[cfg(test)]
mod testing;
mod thread;

pub use error::NsError;
pub use netns::{Netns, run_in_netns};
