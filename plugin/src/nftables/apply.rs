//! Applying an nftables transaction inside a pod netns.
