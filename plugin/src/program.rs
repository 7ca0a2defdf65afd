//! Programming a pod netns: detect families, build the config, render, apply, route.
