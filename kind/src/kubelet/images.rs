//! Images as local executables: the harness maps an image name to a program
//! (e.g. `mesh-probe` → the workspace binary). An unknown image is an
//! `ErrImagePull`, never a crash.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};

/// What to execute for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Why a container's image cannot run here (kubelet reports it as `ErrImagePull`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The table knows the image but not this command of it.
    #[error("image {image:?} cannot run command {command:?}")]
    CannotRun {
        /// The container's image.
        image: String,
        /// Its command.
        command: Vec<String>,
    },
    /// The table does not know the image.
    #[error("Failed to pull image {image:?}: not in the harness's image table (known: {known:?})")]
    NotInTable {
        /// The container's image.
        image: String,
        /// The images the table knows.
        known: Vec<String>,
    },
}

/// Why a pod cannot be run from the test image on a real cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemotePodError {
    /// A container's image is not one the table runs.
    #[error("pod {pod} container {container}: {source}")]
    Image {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: ImageError,
    },
    /// The program the table maps it to has no file name to run by.
    #[error("pod {pod} container {container}: program {program:?} has no file name")]
    NoFileName {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// The program.
        program: PathBuf,
    },
}

/// Why an `--image REF=DIR|EXECUTABLE` entry cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageEntryError {
    /// Not `REF=PATH`.
    #[error("--image {0:?}: expected REF=DIR or REF=EXECUTABLE")]
    Syntax(String),
    /// The path does not exist or is not a regular executable file.
    #[error("--image {entry:?}: {path}: {reason}")]
    Path {
        /// The whole entry.
        entry: String,
        /// The path it names.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

type Resolver = Arc<dyn Fn(&Container) -> Option<Exec> + Send + Sync>;

/// Image name → executable.
#[derive(Clone, Default)]
pub struct ImageTable {
    entries: Vec<(String, Resolver)>,
    /// The image directory of each entry made by [`ImageTable::add_dir`],
    /// by entry name.
    dirs: Vec<(String, PathBuf)>,
    /// What must live as long as any clone of the table (e.g. a temporary
    /// image directory removed when its guard drops).
    keep: Vec<Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for ImageTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(n, _)| n)).finish()
    }
}

/// Where a command is looked up in an image directory without its own
/// configuration (the usual image `PATH`).
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `name` on [`IMAGE_PATH`] as the container sees it: the image's file
/// when the image has one, else the harness's (the container's root is
/// the harness's with the image laid over it); the name itself when
/// neither has it (starting it then fails as a missing executable).
fn image_lookup(dir: &std::path::Path, name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let candidates = IMAGE_PATH.split(':').map(|d| PathBuf::from(d).join(name));
    let in_image = candidates
        .clone()
        .find(|p| dir.join(p.strip_prefix("/").unwrap_or(p)).is_file());
    in_image
        .or_else(|| candidates.clone().find(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// How an entry added by reference is keyed: the full reference when it
/// names a repository path, tag or digest, else its short name.
fn entry_key(reference: &str) -> String {
    if reference.contains(['/', ':', '@']) {
        reference.to_string()
    } else {
        short_name(reference).to_string()
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
    /// echo server on :80; `mesh-probe` and `shell` run as given. The
    /// project's test image ([`TEST_IMAGE`](crate::backend::images::TEST_IMAGE),
    /// what [`ImageTable::remote_pod`] gives real clusters) runs its
    /// `command`'s program by name, as its `PATH` would.
    pub fn istio(istio_cni: impl Into<PathBuf>, mesh_probe: impl Into<PathBuf>) -> ImageTable {
        let istio_cni = istio_cni.into();
        let mesh_probe = mesh_probe.into();
        let probe = mesh_probe.clone();
        let on_path: Vec<(String, PathBuf)> = vec![
            ("istio-cni".into(), istio_cni.clone()),
            ("mesh-probe".into(), mesh_probe.clone()),
            ("sh".into(), "/bin/sh".into()),
        ];
        let mut table = ImageTable::new();
        // By its full tag: its short name (`test`) is too common to claim.
        table.entries.push((
            crate::backend::images::TEST_IMAGE.to_string(),
            Arc::new(move |c: &Container| {
                let argv: Vec<String> = c
                    .command
                    .iter()
                    .flatten()
                    .chain(c.args.iter().flatten())
                    .cloned()
                    .collect();
                let (first, rest) = argv.split_first()?;
                let program = on_path.iter().find(|(name, _)| name == first)?.1.clone();
                Some(Exec {
                    program,
                    args: rest.to_vec(),
                })
            }),
        ));
        table
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

    /// An image whose entrypoint is `program`, taking precedence over every
    /// entry added before (`istio-cni-cluster up --image REF=EXECUTABLE`):
    /// a container without `command` runs `program` with its `args`; one
    /// whose `command[0]` is the program's file name (or the image's name)
    /// runs it with the rest and then `args`; any other command cannot run
    /// (the image has no other files). `reference` matches exactly when it
    /// names a repository path, tag or digest (`reg.io/x/agent:1.0`), else by
    /// short name (`agent` matches `any/where/agent:any`).
    pub fn add_executable(mut self, reference: &str, program: impl Into<PathBuf>) -> ImageTable {
        let program = program.into();
        let file = program.file_name().map(|f| f.to_string_lossy().into_owned());
        let name = short_name(reference).to_string();
        let resolver: Resolver = Arc::new(move |c: &Container| {
            let mut args: Vec<String> = match c.command.as_deref() {
                None | Some([]) => Vec::new(),
                Some([first, rest @ ..]) => {
                    let first = first.rsplit('/').next().unwrap_or(first);
                    if file.as_deref() != Some(first) && first != name {
                        return None;
                    }
                    rest.to_vec()
                }
            };
            args.extend(c.args.iter().flatten().cloned());
            Some(Exec {
                program: program.clone(),
                args,
            })
        });
        let key = entry_key(reference);
        self.entries.retain(|(n, _)| *n != key);
        self.dirs.retain(|(n, _)| *n != key);
        self.entries.insert(0, (key, resolver));
        self
    }

    /// `REF=EXECUTABLE` as [`ImageTable::add_executable`], or `REF=DIR` as
    /// [`ImageTable::add_dir`] with no entrypoint (a directory says nothing
    /// about one: its containers name their `command`). Either replaces an
    /// entry of the same reference and comes before every other.
    pub fn add_entry(self, entry: &str) -> Result<ImageTable, ImageEntryError> {
        let (reference, path) = entry
            .split_once('=')
            .filter(|(r, p)| !r.is_empty() && !p.is_empty() && !r.contains(char::is_whitespace))
            .ok_or_else(|| ImageEntryError::Syntax(entry.to_string()))?;
        let path = PathBuf::from(path);
        let bad = |reason: &str| ImageEntryError::Path {
            entry: entry.to_string(),
            path: path.clone(),
            reason: reason.to_string(),
        };
        let meta = std::fs::metadata(&path).map_err(|e| bad(&e.to_string()))?;
        if meta.is_dir() {
            let key = entry_key(reference);
            let mut table = self;
            table.entries.retain(|(n, _)| *n != key);
            table.dirs.retain(|(n, _)| *n != key);
            let mut table = table.add_dir(reference, path, &[]);
            if let Some(added) = table.entries.pop() {
                table.entries.insert(0, added);
            }
            return Ok(table);
        }
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(bad("is not an executable file"));
        }
        Ok(self.add_executable(reference, path))
    }

    /// The project's agent: its image
    /// ([`AGENT_IMAGE`](crate::backend::images::AGENT_IMAGE), what
    /// `istio-cni-agent manifest` renders) and Istio's `install-cni` images
    /// (`docker.io/istio/install-cni:<tag>`, command `install-cni`) run
    /// `agent` with the container's arguments, so both this project's
    /// manifests and Istio's charts deploy it.
    pub fn with_agent(self, agent: impl Into<PathBuf>) -> ImageTable {
        let agent = agent.into();
        let mut table = self.add("install-cni", agent.clone(), &[]);
        let own = ImageTable::new().add_executable(crate::backend::images::AGENT_IMAGE, agent);
        table.entries.extend(own.entries);
        table
    }

    /// The agent's image as a directory under `root`, laid out as
    /// `agent/Dockerfile` builds it: the agent at
    /// `/usr/local/bin/istio-cni-agent` (and as Istio's
    /// `/usr/local/bin/install-cni`), the plugin at `/opt/cni/bin/istio-cni`
    /// (what the agent copies to the node). Our agent image and Istio's
    /// `install-cni` run from it, so the DaemonSet's pod finds its plugin.
    /// Files are hard links where the filesystem allows, else copies.
    pub fn with_agent_dir(
        self,
        root: &std::path::Path,
        agent: &std::path::Path,
        plugin: &std::path::Path,
    ) -> std::io::Result<ImageTable> {
        let place = |from: &std::path::Path, to: &str| -> std::io::Result<()> {
            let to = root.join(to);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let _ = std::fs::remove_file(&to);
            std::fs::hard_link(from, &to).or_else(|_| std::fs::copy(from, &to).map(|_| ()))
        };
        place(agent, "usr/local/bin/istio-cni-agent")?;
        place(agent, "usr/local/bin/install-cni")?;
        place(plugin, "opt/cni/bin/istio-cni")?;
        Ok(self.add_dir("install-cni", root, &["install-cni"]).add_dir(
            crate::backend::images::AGENT_IMAGE,
            root,
            &["istio-cni-agent"],
        ))
    }

    /// Keeps `guard` alive as long as this table or any clone of it (a
    /// cluster holds its table): a temporary image directory outlives the
    /// code that laid it out.
    pub fn holding(mut self, guard: Arc<dyn std::any::Any + Send + Sync>) -> ImageTable {
        self.keep.push(guard);
        self
    }

    /// An image directory: `dir` is laid out like the image's filesystem
    /// and its files appear at their paths in the container. As in
    /// Kubernetes, a container's `command` replaces `entrypoint` (its first
    /// word looked up on the image's `PATH`, the image's files first) and
    /// `args` follow; without a `command` the entrypoint runs with `args`.
    /// Matched by full reference first, then by short name, like
    /// [`ImageTable::add`].
    pub fn add_dir(mut self, image: &str, dir: impl Into<PathBuf>, entrypoint: &[&str]) -> ImageTable {
        let dir = dir.into();
        let entrypoint: Vec<String> = entrypoint.iter().map(|s| s.to_string()).collect();
        let root = dir.clone();
        let resolver: Resolver = Arc::new(move |c: &Container| {
            let mut argv: Vec<String> = match c.command.as_deref() {
                Some(command) if !command.is_empty() => command.to_vec(),
                _ => entrypoint.clone(),
            };
            argv.extend(c.args.iter().flatten().cloned());
            let (first, rest) = argv.split_first()?;
            Some(Exec {
                program: image_lookup(&root, first),
                args: rest.to_vec(),
            })
        });
        let name = if image.contains(['/', ':', '@']) {
            image.to_string()
        } else {
            short_name(image).to_string()
        };
        self.entries.push((name.clone(), resolver));
        self.dirs.push((name, dir));
        self
    }

    /// The image directory `container` runs from, when its image is one
    /// ([`ImageTable::add_dir`]).
    pub fn image_dir(&self, container: &Container) -> Option<PathBuf> {
        let name = self.entry_name(container)?;
        self.dirs.iter().find(|(n, _)| *n == name).map(|(_, d)| d.clone())
    }

    /// The entry `container`'s image matches: by full reference, else by
    /// short name.
    fn entry_name(&self, container: &Container) -> Option<String> {
        let image = container.image.as_deref().unwrap_or_default();
        let name = short_name(image);
        let by_ref = self.entries.iter().find(|(n, _)| n == image);
        by_ref
            .or_else(|| self.entries.iter().find(|(n, _)| n == name))
            .map(|(n, _)| n.clone())
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

    /// What to run for `container`, or why it is an `ErrImagePull`.
    pub fn resolve(&self, container: &Container) -> Result<Exec, ImageError> {
        let image = container.image.as_deref().unwrap_or_default();
        let found = self.entry_name(container);
        let entry = found.and_then(|n| self.entries.iter().find(|(e, _)| *e == n));
        match entry {
            Some((_, resolve)) => resolve(container).ok_or_else(|| ImageError::CannotRun {
                image: image.to_string(),
                command: container.command.clone().unwrap_or_default(),
            }),
            None => Err(ImageError::NotInTable {
                image: image.to_string(),
                known: self.entries.iter().map(|(n, _)| n.clone()).collect(),
            }),
        }
    }

    /// `pod` as a real cluster runs it: every container runs what this table
    /// would run locally — the same program (by file name) and arguments —
    /// from `image`, an image carrying each program on its `PATH` (the test
    /// image: `istio-cni` and `mesh-probe` in `/usr/local/bin`). So one pod
    /// spec means the same processes on every backend. Errors name the
    /// container whose image the table does not know.
    pub fn remote_pod(&self, pod: &Pod, image: &str) -> Result<Pod, RemotePodError> {
        let mut pod = pod.clone();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some(spec) = pod.spec.as_mut() {
            let init = spec.init_containers.iter_mut().flatten();
            for c in init.chain(spec.containers.iter_mut()) {
                let exec = self.resolve(c).map_err(|source| RemotePodError::Image {
                    pod: name.clone(),
                    container: c.name.clone(),
                    source,
                })?;
                let program = exec
                    .program
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .ok_or_else(|| RemotePodError::NoFileName {
                        pod: name.clone(),
                        container: c.name.clone(),
                        program: exec.program.clone(),
                    })?;
                c.image = Some(image.to_string());
                c.command = Some(vec![program]);
                c.args = Some(exec.args);
            }
        }
        Ok(pod)
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

    /// What `table` runs for a container of `image` with `command` and `args`.
    fn resolve(table: &ImageTable, image: &str, command: Option<&[&str]>, args: &[&str]) -> Result<Exec, ImageError> {
        table.resolve(&container(image, command, args))
    }

    #[test]
    fn images_resolve_by_short_name() {
        assert_eq!(short_name("docker.io/istio/proxyv2:1.26.0"), "proxyv2");
        assert_eq!(short_name("mesh-probe"), "mesh-probe");
        assert_eq!(short_name("reg:5000/x/mesh-probe@sha256:abc"), "mesh-probe");
        let table = ImageTable::new().add("mesh-probe", "/bin/mesh-probe", &[]);
        let exec = resolve(&table, "example.com/mesh-probe:dev", None, &["echo", "--port", "80"]).unwrap();
        assert_eq!(exec.args, vec!["echo", "--port", "80"]);
        let exec = resolve(&table, "mesh-probe", Some(&["mesh-probe", "proxy"]), &[]).unwrap();
        assert_eq!(exec.args, vec!["proxy"]);
        assert!(resolve(&table, "mesh-probe", Some(&["sh", "-c", "x"]), &[]).is_err());
    }

    #[test]
    fn the_agent_runs_from_our_image_and_istios_install_cni() {
        let table = ImageTable::new().with_agent("/bin/istio-cni-agent");
        let ours = resolve(
            &table,
            "istio-cni-rs/agent:dev",
            None,
            &["run", "--log_output_level=info"],
        )
        .unwrap();
        assert_eq!(ours.program, PathBuf::from("/bin/istio-cni-agent"));
        assert_eq!(ours.args, ["run", "--log_output_level=info"]);
        let istio = resolve(
            &table,
            "docker.io/istio/install-cni:1.26.0",
            Some(&["install-cni"]),
            &["--log_output_level=default:info"],
        )
        .unwrap();
        assert_eq!(istio.program, PathBuf::from("/bin/istio-cni-agent"));
        assert_eq!(istio.args, ["--log_output_level=default:info"]);
        // Only our own tag: another "agent" image is not ours.
        assert!(resolve(&table, "example.com/agent:1", None, &[]).is_err());
    }

    #[test]
    fn executable_entries_take_precedence_and_run_as_the_entrypoint() {
        let table = ImageTable::istio("/bin/istio-cni", "/bin/mesh-probe")
            .add_executable("docker.io/istio/proxyv2:1.20.0", "/old/pilot-agent")
            .add_executable("tool", "/opt/bin/tool");
        let old = resolve(&table, "docker.io/istio/proxyv2:1.20.0", None, &["proxy", "sidecar"]).unwrap();
        assert_eq!((old.program.to_str(), old.args.len()), (Some("/old/pilot-agent"), 2));
        // Other tags still resolve as before.
        let today = resolve(&table, "docker.io/istio/proxyv2:1.26.0", None, &["proxy", "sidecar"]).unwrap();
        assert_eq!(today.program, PathBuf::from("/bin/mesh-probe"));
        let by_name = resolve(&table, "reg.io/x/tool:9", Some(&["/usr/bin/tool", "a"]), &["b"]).unwrap();
        assert_eq!(by_name.args, ["a", "b"]);
        assert!(resolve(&table, "tool", Some(&["sh", "-c", "x"]), &[]).is_err());
    }

    #[test]
    fn image_entries_are_checked() {
        let err = |e: &str| ImageTable::new().add_entry(e).unwrap_err().to_string();
        assert_eq!(
            err("nothing"),
            "--image \"nothing\": expected REF=DIR or REF=EXECUTABLE"
        );
        assert!(err("=/bin/sh").contains("expected REF="));
        let image = testkit::Scratch::new("image-entry");
        let table = ImageTable::new()
            .add_dir("reg.io/a/tool:1", "/elsewhere", &["old"])
            .add_entry(&format!("reg.io/a/tool:1={}", image.path().display()))
            .unwrap();
        let c = container("reg.io/a/tool:1", Some(&["sh", "-c", "true"]), &[]);
        assert_eq!(
            table.image_dir(&c).as_deref(),
            Some(image.path()),
            "the entry replaces the older one"
        );
        assert!(
            resolve(&table, "reg.io/a/tool:1", None, &[]).is_err(),
            "no entrypoint: a command is needed"
        );
        assert!(err("x=/no/such/file").contains("/no/such/file: No such file"));
        let plain = image.join("plain");
        std::fs::write(&plain, "not a program").unwrap();
        assert!(err(&format!("x={}", plain.display())).contains("is not an executable file"));
        let table = ImageTable::new().add_entry("reg.io/a/b:1=/bin/sh").unwrap();
        assert_eq!(
            resolve(&table, "reg.io/a/b:1", None, &["-c", "true"]).unwrap().args,
            ["-c", "true"]
        );
    }

    #[test]
    fn image_directories_resolve_commands_as_kubernetes_does() {
        let dir = testkit::Scratch::new("image-dir");
        std::fs::create_dir_all(dir.join("usr/local/bin")).unwrap();
        std::fs::write(dir.join("usr/local/bin/install-cni"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.join("usr/local/bin/install-cni"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let table = ImageTable::new().add("mesh-probe", "/bin/mesh-probe", &[]).add_dir(
            "docker.io/istio/install-cni:1.26.0",
            &*dir,
            &["install-cni"],
        );
        let c = container("docker.io/istio/install-cni:1.26.0", None, &["--log", "debug"]);
        let exec = table.resolve(&c).unwrap();
        assert_eq!(exec.program, PathBuf::from("/usr/local/bin/install-cni"));
        assert_eq!(exec.args, ["--log", "debug"]);
        assert_eq!(table.image_dir(&c).as_deref(), Some(dir.path()));
        // A command replaces the entrypoint; its first word is looked up
        // in the image, then in the root beneath it.
        let sh = container("docker.io/istio/install-cni:1.26.0", Some(&["sh", "-c", "true"]), &[]);
        let exec = table.resolve(&sh).unwrap();
        assert!(exec.program.is_absolute() && exec.program.ends_with("sh"), "{exec:?}");
        assert_eq!(exec.args, ["-c", "true"]);
        // Another tag of the same repository is another image.
        let other = container("docker.io/istio/install-cni:1.27.0", None, &[]);
        assert!(table.resolve(&other).is_err());
        assert_eq!(table.image_dir(&container("mesh-probe", None, &[])), None);
    }

    #[test]
    fn unknown_images_are_pull_errors() {
        let e = ImageTable::new()
            .resolve(&container("nginx:1.27", None, &[]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Failed to pull image \"nginx:1.27\""), "{e}");
    }

    #[test]
    fn remote_pods_run_the_same_programs_from_the_test_image() {
        let table = ImageTable::istio("/w/target/debug/istio-cni", "/w/target/debug/mesh-probe");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello"},
            "spec": {
                "initContainers": [{"name": "istio-validation", "image": "docker.io/istio/proxyv2:1.26.0",
                    "args": ["istio-iptables", "-p", "15001", "--run-validation", "--skip-rule-apply"]}],
                "containers": [
                    {"name": "app", "image": "mesh-probe", "args": ["client", "--connect", "10.0.0.1:80"]},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.26.0", "args": ["proxy", "sidecar"]},
                    {"name": "web", "image": "docker.io/istio/hello-go-gke:1.0"},
                    {"name": "sh", "image": "shell", "command": ["shell", "-c", "sleep 1"]}
                ]
            }
        }))
        .unwrap();
        let remote = table.remote_pod(&pod, "istio-cni-rs/test:dev").unwrap();
        // The test image runs exactly what the original images run locally.
        let execs = |p: &Pod| -> Vec<Exec> {
            let spec = p.spec.clone().unwrap();
            let all = spec
                .init_containers
                .unwrap_or_default()
                .into_iter()
                .chain(spec.containers);
            all.map(|c| table.resolve(&c).unwrap()).collect()
        };
        assert_eq!(execs(&remote), execs(&pod));
        let spec = remote.spec.unwrap();
        let run = |c: &Container| {
            assert_eq!(c.image.as_deref(), Some("istio-cni-rs/test:dev"), "{}", c.name);
            let mut argv = c.command.clone().unwrap();
            argv.extend(c.args.clone().unwrap());
            argv.join(" ")
        };
        let init: Vec<String> = spec.init_containers.unwrap().iter().map(run).collect();
        assert_eq!(
            init,
            ["istio-cni validate istio-iptables -p 15001 --run-validation --skip-rule-apply"]
        );
        let apps: Vec<String> = spec.containers.iter().map(run).collect();
        assert_eq!(
            apps,
            [
                "mesh-probe client --connect 10.0.0.1:80",
                "mesh-probe proxy",
                "mesh-probe echo --port 80",
                "sh -c sleep 1",
            ]
        );
        let bad: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}
        }))
        .unwrap();
        let e = table.remote_pod(&bad, "t").unwrap_err();
        assert!(
            matches!(
                &e,
                RemotePodError::Image {
                    source: ImageError::NotInTable { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.starts_with("pod web container nginx: Failed to pull image"), "{e}");
    }
}
