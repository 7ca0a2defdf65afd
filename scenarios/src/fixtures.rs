//! Pods and configs the scenarios deploy: injected pods as Istio's injector
//! shapes them per version, and annotation sets.
