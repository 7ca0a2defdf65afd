//! Every pinned version the real-cluster backends use, in one place.
//!
//! Update a row here and nowhere else; the snapshot tests then show every
//! config and plan the change touches. The kind node images are the ones the
//! kind release in [`KIND`] publishes, pinned by digest as the kind release
//! notes ask (an image built for another kind release may not boot). The
//! other images are pinned by tag: their digests could not be checked when
//! this table was written, so add them when you bump a row.

use std::fmt;
use std::str::FromStr;

/// The kind release the node images below belong to (`go install sigs.k8s.io/kind@v0.30.0`).
pub const KIND: &str = "v0.30.0";

/// One supported Kubernetes minor version and its pinned images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeImage {
    /// Kubernetes minor version (`34` for 1.34).
    pub minor: u32,
    /// The full Kubernetes version of the image (`v1.34.0`).
    pub version: &'static str,
    /// The `kindest/node` image, pinned by digest.
    pub kind_image: &'static str,
}

/// Supported Kubernetes versions, oldest first: the images kind v0.30.0 publishes.
pub const NODE_IMAGES: &[NodeImage] = &[
    NodeImage {
        minor: 31,
        version: "v1.31.12",
        kind_image: "kindest/node:v1.31.12@sha256:0f5cc49c5e73c0c2bb6e2df56e7df189240d83cf94edfa30946482eb08ec57d2",
    },
    NodeImage {
        minor: 32,
        version: "v1.32.8",
        kind_image: "kindest/node:v1.32.8@sha256:abd489f042d2b644e2d033f5c2d900bc707798d075e8186cb65e3f1367a9d5a1",
    },
    NodeImage {
        minor: 33,
        version: "v1.33.4",
        kind_image: "kindest/node:v1.33.4@sha256:25a6018e48dfcaee478f4a59af81157a437f15e6e140bf103f85a2e7cd0cbbf2",
    },
    NodeImage {
        minor: 34,
        version: "v1.34.0",
        kind_image: "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a",
    },
];

/// Calico: `manifests/calico.yaml` of this release (the manifest install Istio's CI uses, not the operator).
pub const CALICO: &str = "v3.30.2";
/// Cilium: the Helm chart of this release, rendered with `helm template`.
pub const CILIUM: &str = "1.18.4";
/// Flannel: `kube-flannel.yml` of this release.
pub const FLANNEL: &str = "v0.27.4";
/// containernetworking/plugins: flannel delegates to `bridge`, which kind's node image does not ship.
pub const CNI_PLUGINS: &str = "v1.8.0";
/// The k3s image of the k3s backend (Kubernetes v1.33.4).
pub const K3S_IMAGE: &str = "docker.io/rancher/k3s:v1.33.4-k3s1";
/// Base of the generated test image. The binaries are built on the host, so
/// its glibc must be at least the build machine's (Debian 12 here).
pub const TEST_IMAGE_BASE: &str = "docker.io/library/debian:bookworm-slim";

/// A supported Kubernetes version: one row of [`NODE_IMAGES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KubeVersion {
    minor: u32,
}

impl KubeVersion {
    /// Kubernetes 1.31.
    pub const V1_31: KubeVersion = KubeVersion { minor: 31 };
    /// Kubernetes 1.32.
    pub const V1_32: KubeVersion = KubeVersion { minor: 32 };
    /// Kubernetes 1.33.
    pub const V1_33: KubeVersion = KubeVersion { minor: 33 };
    /// Kubernetes 1.34 (kind v0.30.0's default).
    pub const V1_34: KubeVersion = KubeVersion { minor: 34 };

    /// Every supported version, oldest first.
    pub fn all() -> impl Iterator<Item = KubeVersion> {
        NODE_IMAGES.iter().map(|row| KubeVersion { minor: row.minor })
    }

    /// The pinned images of this version.
    pub fn images(self) -> &'static NodeImage {
        // A KubeVersion is only built from a row of the table, so the lookup finds it.
        NODE_IMAGES
            .iter()
            .find(|row| row.minor == self.minor)
            .unwrap_or(&NODE_IMAGES[NODE_IMAGES.len() - 1])
    }

    /// The full version, e.g. `v1.34.0`.
    pub fn version(self) -> &'static str {
        self.images().version
    }

    /// The pinned `kindest/node` image.
    pub fn kind_image(self) -> &'static str {
        self.images().kind_image
    }
}

impl Default for KubeVersion {
    fn default() -> Self {
        KubeVersion::V1_34
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version())
    }
}

/// A Kubernetes version that is not in [`NODE_IMAGES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported Kubernetes version {given:?}: supported are {supported} (add a row to backend::versions::NODE_IMAGES)"
)]
pub struct UnsupportedVersion {
    /// What was asked for.
    pub given: String,
    /// The supported versions, comma separated.
    pub supported: String,
}

impl FromStr for KubeVersion {
    type Err = UnsupportedVersion;

    /// Accepts `1.33`, `v1.33` or the exact pinned patch version (`v1.33.4`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let mut parts = bare.split('.');
        let found = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("1"), Some(minor), patch, None) => NODE_IMAGES.iter().find(|row| {
                row.minor.to_string() == minor && patch.is_none_or(|p| row.version == format!("v1.{minor}.{p}"))
            }),
            _ => None,
        };
        found
            .map(|row| KubeVersion { minor: row.minor })
            .ok_or_else(|| UnsupportedVersion {
                given: s.to_string(),
                supported: NODE_IMAGES.iter().map(|row| row.version).collect::<Vec<_>>().join(", "),
            })
    }
}
