//! The watch loop (istio-cni-agent.md §4.11).
