//! Links the `istio-cni` executable as a fixed-address (non-PIE) binary.
//!
//! The runtime starts the plugin once per pod, and its start-up is most of
//! a non-meshed or excluded ADD. A position-independent executable of this
//! size carries ~15,000 relative relocations that the dynamic loader applies
//! on every start, writing (and so copying) ~70 pages of `.data.rel.ro`; a
//! fixed-address one has them resolved at link time (docs/perf.md). Go
//! builds executables the same way by default, Istio's own plugin included.
//! Shared libraries are still loaded at random addresses. Only the binary
//! is affected: the library, tests and benches keep the default.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        println!("cargo::rustc-link-arg-bin=istio-cni=-no-pie");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
