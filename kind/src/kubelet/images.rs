//! Images as local executables: the harness maps an image name to a program
//! (e.g. `mesh-probe` → the workspace binary). An unknown image is an
//! `ErrImagePull`, never a crash.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Container;

/// What to execute for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub program: PathBuf,
    pub args: Vec<String>,
}

type Resolver = Arc<dyn Fn(&Container) -> Option<Exec> + Send + Sync>;

/// Image name → executable.
#[derive(Clone, Default)]
pub struct ImageTable {
    entries: Vec<(String, Resolver)>,
}

impl std::fmt::Debug for ImageTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(n, _)| n)).finish()
    }
}

/// The repository's last path segment without tag or digest:
/// `docker.io/istio/proxyv2:1.26.0` → `proxyv2`.
pub fn short_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

impl ImageTable {
    pub fn new() -> ImageTable {
        ImageTable::default()
    }
    /// Istio's images as this project's binaries run them: `proxyv2` is the
    /// `istio-validation` probe (`istio-iptables … --run-validation` →
    /// `istio-cni validate …`) or the sidecar (`proxy …` → mesh-probe's
    /// capturing proxy); `hello-go-gke` (Istio's sample app) is mesh-probe's
    /// echo server on :80; `mesh-probe` and `shell` run as given.
    pub fn istio(istio_cni: impl Into<PathBuf>, mesh_probe: impl Into<PathBuf>) -> ImageTable {
        let istio_cni = istio_cni.into();
        let mesh_probe = mesh_probe.into();
        let probe = mesh_probe.clone();
        ImageTable::new()
            .add_fn("proxyv2", move |c| {
                let args = c.args.clone().unwrap_or_default();
                match args.first().map(String::as_str) {
                    Some("istio-iptables") => Some(Exec {
                        program: istio_cni.clone(),
                        args: std::iter::once("validate".to_string()).chain(args).collect(),
                    }),
                    Some("proxy") => Some(Exec {
                        program: probe.clone(),
                        args: vec!["proxy".into()],
                    }),
                    _ => None,
                }
            })
            .add("hello-go-gke", mesh_probe.clone(), &["echo", "--port", "80"])
            .add("mesh-probe", mesh_probe, &[])
            .add("shell", "/bin/sh", &[])
    }

    /// Runs `program` with `prefix` and then the container's `args`. A
    /// container `command` is accepted when its first word is the image's
    /// name (the rest are arguments), like an image whose entrypoint is it.
    pub fn add(mut self, image: &str, program: impl Into<PathBuf>, prefix: &[&str]) -> ImageTable {
        let program = program.into();
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        let name = short_name(image).to_string();
        let entry = name.clone();
        let resolver: Resolver = Arc::new(move |c: &Container| {
            let mut args = prefix.clone();
            match c.command.as_deref() {
                None | Some([]) => {}
                Some([first, rest @ ..]) if short_name(first) == entry => args.extend(rest.iter().cloned()),
                Some(_) => return None,
            }
            args.extend(c.args.iter().flatten().cloned());
            Some(Exec {
                program: program.clone(),
                args,
            })
        });
        self.entries.push((name, resolver));
        self
    }

    /// A custom mapping, e.g. one image whose behaviour depends on its args.
    pub fn add_fn(
        mut self,
        image: &str,
        resolve: impl Fn(&Container) -> Option<Exec> + Send + Sync + 'static,
    ) -> ImageTable {
        self.entries.push((short_name(image).to_string(), Arc::new(resolve)));
        self
    }

    /// What to run for `container`, or the `ErrImagePull` message.
    pub fn resolve(&self, container: &Container) -> Result<Exec, String> {
        let image = container.image.as_deref().unwrap_or_default();
        let name = short_name(image);
        let entry = self.entries.iter().find(|(n, _)| n == image || n == name);
        match entry {
            Some((_, resolve)) => resolve(container).ok_or_else(|| {
                format!(
                    "image {image:?} cannot run command {:?}",
                    container.command.as_deref().unwrap_or_default()
                )
            }),
            None => {
                let known: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
                Err(format!(
                    "Failed to pull image {image:?}: not in the harness's image table (known: {known:?})"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: Option<&[&str]>, args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
            args: Some(args.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn images_resolve_by_short_name() {
        assert_eq!(short_name("docker.io/istio/proxyv2:1.26.0"), "proxyv2");
        assert_eq!(short_name("mesh-probe"), "mesh-probe");
        assert_eq!(short_name("reg:5000/x/mesh-probe@sha256:abc"), "mesh-probe");
        let table = ImageTable::new().add("mesh-probe", "/bin/mesh-probe", &[]);
        let exec = table
            .resolve(&container(
                "example.com/mesh-probe:dev",
                None,
                &["echo", "--port", "80"],
            ))
            .unwrap();
        assert_eq!(exec.args, vec!["echo", "--port", "80"]);
        let exec = table
            .resolve(&container("mesh-probe", Some(&["mesh-probe", "proxy"]), &[]))
            .unwrap();
        assert_eq!(exec.args, vec!["proxy"]);
        assert!(
            table
                .resolve(&container("mesh-probe", Some(&["sh", "-c", "x"]), &[]))
                .is_err()
        );
    }

    #[test]
    fn unknown_images_are_pull_errors() {
        let e = ImageTable::new()
            .resolve(&container("nginx:1.27", None, &[]))
            .unwrap_err();
        assert!(e.starts_with("Failed to pull image \"nginx:1.27\""), "{e}");
    }
}
