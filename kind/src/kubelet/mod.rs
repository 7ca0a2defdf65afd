//! kubelet-lite: runs the pods bound to one node. [`lifecycle`] is the pure
//! per-pod state machine (events in, actions and a Kubernetes `PodStatus`
//! out); the node's executor performs its actions with real namespaces, CNI
//! and processes.

pub mod lifecycle;
