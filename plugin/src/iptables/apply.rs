//! Applying iptables-restore payloads inside a pod netns.
