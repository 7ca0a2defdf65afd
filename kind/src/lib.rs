//! The cluster harness: one Rust API over several backends.
//!
//! - `local`: an embedded cluster made of Linux namespaces — an API server
//!   ([`apiserver`]), its controllers ([`controllers`]: scheduler, namespace
//!   lifecycle), nodes as network namespaces with their own CNI
//!   directories ([`node`]), real primary CNI plugins ([`cni`]).
//! - `kind`, `k3s`, `existing`: real clusters ([`backend`]).

pub mod apiserver;
pub mod backend;
pub mod cluster;
pub mod cni;
pub mod controllers;
pub mod kubelet;
pub mod node;
pub mod testing;
