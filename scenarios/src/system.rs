//! The system under test: what scenarios deploy as "the CNI agent".
//!
//! By default the project's own manifests (`istio-cni-agent manifest`), the
//! DaemonSet running the project's agent image. A distribution can put its
//! own in their place: a Helm chart directory with values (rendered with
//! `helm template`), or manifest files applied as they are. A scenario says
//! what it needs of the install as Istio chart values ([`Install`]: `--set`s
//! and a platform profile); the project's manifests and a chart take them,
//! raw manifests cannot (such a scenario is skipped, saying so). What goes
//! beyond Istio's chart (the project's own features, [`Feature`]) is declared
//! by the scenario and skipped with a reason on a system without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use istio_cni::bounded::{self, Limits, ReadError};
use istio_cni_agent::manifest::{Inputs, Manifest, Platform};
use istio_cni_kind::backend::images::AGENT_IMAGE;
use istio_cni_kind::cluster::Cluster;
use istio_cni_kind::kubelet::ImageTable;
use istio_cni_kind::kubelet::images::ImageEntryError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::scenario::Stop;
use testkit::Scratch;

/// Where the agent's manifests come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Source {
    /// The project's own (`istio-cni-agent manifest` with the scenario's values).
    #[default]
    Project,
    /// A Helm chart directory, rendered by `helm template` with these values
    /// files and `--set`s, then the scenario's.
    Chart {
        dir: PathBuf,
        values: Vec<PathBuf>,
        set: Vec<String>,
    },
    /// Manifest files applied as they are.
    Manifests(Vec<PathBuf>),
}

/// What the project's agent offers beyond Istio's chart, by the values key
/// that turns it on. A scenario needing one is skipped on a system that does
/// not declare it; a foreign chart or manifest declares none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// `taint.enabled`: the agent removes the not-ready taint from its node.
    Taint,
    /// `safeUpgrade.enabled`: a rolling agent leaves the plugin in place.
    SafeUpgrade,
}

impl Feature {
    pub const ALL: [Feature; 2] = [Feature::Taint, Feature::SafeUpgrade];

    /// The values key that turns it on.
    pub fn key(self) -> &'static str {
        match self {
            Feature::Taint => "taint.enabled",
            Feature::SafeUpgrade => "safeUpgrade.enabled",
        }
    }
}

/// Why the system under test's inputs are unusable; each names the input
/// (the flag and its file or directory) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("--chart {}: not a Helm chart directory (no Chart.yaml there)", dir.display())]
    NotAChart { dir: PathBuf },
    #[error("--chart {}: rendering a chart needs helm on PATH, and there is none (ci/env puts helm 4 there)", dir.display())]
    NoHelm { dir: PathBuf },
    #[error("--values {}: {}", file.display(), read_reason(source))]
    Values {
        file: PathBuf,
        #[source]
        source: ReadError,
    },
    #[error("--manifests {}: {}", file.display(), read_reason(source))]
    ReadManifests {
        file: PathBuf,
        #[source]
        source: ReadError,
    },
    #[error("--manifests {}: {source}", file.display())]
    ParseManifests {
        file: PathBuf,
        #[source]
        source: ObjectsError,
    },
    #[error("--manifests {}: no DaemonSet in it", file.display())]
    NoDaemonSet { file: PathBuf },
    #[error("--agent-image names the image of the project's manifests; a chart or manifest names its own")]
    AgentImageOfForeign,
    /// An `--image` entry (the error names it).
    #[error(transparent)]
    Image(#[from] ImageEntryError),
}

/// Why a text is not a list of Kubernetes objects; `doc` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("document {doc}: {source}")]
    Yaml {
        doc: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {doc}: not an object")]
    NotAnObject { doc: usize },
    #[error("document {doc}: an object without kind or metadata.name")]
    Unnamed { doc: usize },
}

/// A command-line file's read error in a few words: the I/O error's kind
/// (the message names the file already), or what else was wrong.
fn read_reason(e: &ReadError) -> String {
    match e.io_kind() {
        Some(kind) => kind.to_string(),
        None => e.to_string(),
    }
}

/// The system under test and how its images reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct System {
    pub source: Source,
    /// `REF=DIR|EXECUTABLE` entries added to the embedded cluster's image
    /// table, ahead of every other (`--image`).
    pub images: Vec<String>,
    /// The image the project's manifests run (`--agent-image`); default: the
    /// project's agent image as the cluster names it.
    pub agent_image: Option<String>,
}

/// What a scenario needs of the install, as Istio chart values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// Helm `--set`s, e.g. `chained=false`.
    pub set: Vec<String>,
    /// A platform's value profile (its CNI dirs and settings).
    pub platform: Option<Platform>,
    /// Values documents (origin, YAML text), applied before the `--set`s.
    pub values: Vec<(String, String)>,
}

impl Install {
    /// The chart defaults.
    pub fn defaults() -> Install {
        Install::default()
    }

    /// These `--set`s.
    pub fn set(values: &[&str]) -> Install {
        Install {
            set: values.iter().map(|s| s.to_string()).collect(),
            ..Install::default()
        }
    }

    /// `platform`'s profile.
    pub fn platform(platform: Option<Platform>) -> Install {
        Install {
            platform,
            ..Install::default()
        }
    }

    fn is_default(&self) -> bool {
        self.set.is_empty() && self.platform.is_none() && self.values.is_empty()
    }

    /// `chained=false, platform k3s`, for messages.
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.values.iter().map(|(origin, _)| origin.clone()).collect();
        parts.extend(self.set.iter().cloned());
        if let Some(p) = self.platform {
            parts.push(format!("platform {p}"));
        }
        parts.join(", ")
    }
}

impl System {
    /// The project's own manifests (the default).
    pub fn project() -> System {
        System::default()
    }

    /// Checks what can be checked before any cluster exists: the chart dir
    /// has a `Chart.yaml`, values and manifest files are readable, manifests
    /// parse, image entries name something runnable, `--agent-image` goes
    /// with the project's manifests. The message names the input.
    pub fn check(&self) -> Result<(), SystemError> {
        match &self.source {
            Source::Project => {}
            Source::Chart { dir, values, .. } => {
                if !dir.join("Chart.yaml").is_file() {
                    return Err(SystemError::NotAChart { dir: dir.clone() });
                }
                for file in values {
                    read_file(file).map_err(|source| SystemError::Values {
                        file: file.clone(),
                        source,
                    })?;
                }
            }
            Source::Manifests(files) => {
                for file in files {
                    let objects = manifest_objects(file)?;
                    if !objects.iter().any(|o| o["kind"] == "DaemonSet") {
                        return Err(SystemError::NoDaemonSet { file: file.clone() });
                    }
                }
            }
        }
        if self.agent_image.is_some() && self.source != Source::Project {
            return Err(SystemError::AgentImageOfForeign);
        }
        let mut table = ImageTable::new();
        for entry in &self.images {
            table = table.add_entry(entry)?;
        }
        Ok(())
    }

    /// Checks the tools rendering needs: helm for a chart, saying which chart.
    pub fn check_tools(&self) -> Result<(), SystemError> {
        match &self.source {
            Source::Chart { dir, .. } if testkit::on_path("helm").is_none() => {
                Err(SystemError::NoHelm { dir: dir.clone() })
            }
            _ => Ok(()),
        }
    }

    /// One line for reports: what is deployed.
    pub fn describe(&self) -> String {
        let images = if self.images.is_empty() {
            String::new()
        } else {
            format!(", images {}", self.images.join(" "))
        };
        let source = match &self.source {
            Source::Project => match &self.agent_image {
                Some(image) => format!("the project's manifests with image {image}"),
                None => "the project's manifests".into(),
            },
            Source::Chart { dir, .. } => format!("chart {}", dir.display()),
            Source::Manifests(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                format!("manifests {}", names.join(" "))
            }
        };
        format!("{source}{images}")
    }

    /// Whether the system offers `feature`: the project's manifests offer
    /// every one, a foreign chart or manifest none.
    pub fn has(&self, feature: Feature) -> bool {
        self.source == Source::Project && Feature::ALL.contains(&feature)
    }

    /// Why a scenario needing `needs` cannot run on this system, if it cannot.
    pub fn lacks(&self, needs: &[Feature]) -> Option<String> {
        let missing: Vec<&str> = needs.iter().filter(|f| !self.has(**f)).map(|f| f.key()).collect();
        (!missing.is_empty()).then(|| {
            format!(
                "needs {} (a feature of the project's agent), which {} does not declare",
                missing.join(", "),
                self.describe()
            )
        })
    }

    /// The objects to apply for `install` on `cluster`, in apply order,
    /// namespaced objects naming their namespace.
    pub fn render(&self, install: &Install, cluster: &Cluster) -> Result<Vec<Value>, Stop> {
        let objects = match &self.source {
            Source::Project => {
                let manifest = Manifest::resolve(&Inputs {
                    set: install.set.clone(),
                    platform: install.platform,
                    values: install
                        .values
                        .iter()
                        .map(|(origin, text)| istio_cni_agent::manifest::Source::new(origin.clone(), text.clone()))
                        .collect(),
                    ..Default::default()
                })
                .map_err(|e| Stop::Fail(format!("the agent manifest with {}: {e}", install.describe())))?;
                let image = self
                    .agent_image
                    .clone()
                    .unwrap_or_else(|| cluster.image_ref(AGENT_IMAGE));
                return crate::daemonset::objects_for_cluster(&manifest, &image);
            }
            Source::Chart { dir, values, set } => helm_template(dir, values, set, install)?,
            Source::Manifests(files) => {
                if !install.is_default() {
                    return Err(Stop::Skip(format!(
                        "the scenario installs with {}; --manifests are applied as they are",
                        install.describe()
                    )));
                }
                let mut all = Vec::new();
                for file in files {
                    all.extend(manifest_objects(file)?);
                }
                all
            }
        };
        Ok(with_namespaces(objects))
    }
}

/// `--manifests FILE`'s objects (a `List` is its items).
fn manifest_objects(file: &Path) -> Result<Vec<Value>, SystemError> {
    let text = read_file(file).map_err(|source| SystemError::ReadManifests {
        file: file.to_path_buf(),
        source,
    })?;
    parse_objects(&text).map_err(|source| SystemError::ParseManifests {
        file: file.to_path_buf(),
        source,
    })
}

/// A file named on the command line, bounded like every configured path.
fn read_file(file: &Path) -> Result<String, ReadError> {
    // Rendered manifests (CRDs included) can be larger than a config file.
    let limits = Limits::new(64 << 20, Limits::CONFIG.timeout);
    bounded::read_to_string(file, limits)
}

/// Every object of a multi-document YAML text (empty documents skipped,
/// `List`s flattened); each must have a kind and a name.
pub fn parse_objects(text: &str) -> Result<Vec<Value>, ObjectsError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let value = Value::deserialize(doc).map_err(|source| ObjectsError::Yaml { doc: doc_no, source })?;
        let items = match value {
            Value::Null => continue,
            Value::Object(_) if value["kind"] == "List" => value["items"].as_array().cloned().unwrap_or_default(),
            Value::Object(_) => vec![value],
            _ => return Err(ObjectsError::NotAnObject { doc: doc_no }),
        };
        for item in items {
            if !item["kind"].is_string() || !item["metadata"]["name"].is_string() {
                return Err(ObjectsError::Unnamed { doc: doc_no });
            }
            out.push(item);
        }
    }
    Ok(out)
}

/// The namespace helm renders into, and the DaemonSet's when a manifest names none.
pub const NAMESPACE: &str = "istio-system";

/// Kinds that live outside namespaces (what a CNI install may hold).
const CLUSTER_SCOPED: [&str; 8] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "SecurityContextConstraints",
];

/// Namespaced objects without a namespace get [`NAMESPACE`] (`kubectl
/// apply -n`), cluster-scoped ones lose any they carry.
fn with_namespaces(objects: Vec<Value>) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut o| {
            let cluster_scoped = o["kind"].as_str().is_some_and(|k| CLUSTER_SCOPED.contains(&k));
            if let Some(meta) = o["metadata"].as_object_mut() {
                if cluster_scoped {
                    meta.remove("namespace");
                } else if !meta.get("namespace").is_some_and(Value::is_string) {
                    meta.insert("namespace".into(), json!(NAMESPACE));
                }
            }
            o
        })
        .collect()
}

/// `helm template` of `dir` as release `istio-cni` in [`NAMESPACE`]: the
/// user's values files and `--set`s, then the scenario's platform profile
/// and `--set`s (helm layers every `-f` below every `--set`).
fn helm_template(dir: &Path, values: &[PathBuf], set: &[String], install: &Install) -> Result<Vec<Value>, Stop> {
    let helm = testkit::on_path("helm").ok_or_else(|| {
        Stop::Fail(format!(
            "--chart {}: rendering a chart needs helm on PATH, and there is none",
            dir.display()
        ))
    })?;
    let home = Scratch::create("istio-cni-helm").map_err(|e| Stop::Fail(e.to_string()))?;
    let scratch = home.path();
    let mut cmd = Command::new(helm);
    cmd.args(["template", "istio-cni"])
        .arg(dir)
        .args(["--namespace", NAMESPACE])
        // helm keeps its cache and config under HOME: not this machine's.
        .env("HELM_CACHE_HOME", scratch.join("cache"))
        .env("HELM_CONFIG_HOME", scratch.join("config"))
        .env("HELM_DATA_HOME", scratch.join("data"));
    for file in values {
        cmd.arg("--values").arg(file);
    }
    if let Some(platform) = install.platform {
        let profile = scratch.join(format!("platform-{platform}.json"));
        std::fs::write(&profile, platform.profile().to_string())
            .map_err(|e| Stop::Fail(format!("writing {}: {e}", profile.display())))?;
        cmd.arg("--values").arg(&profile);
    }
    for (i, (origin, text)) in install.values.iter().enumerate() {
        let file = scratch.join(format!("values-{i}.yaml"));
        std::fs::write(&file, text).map_err(|e| Stop::Fail(format!("writing {origin} to {}: {e}", file.display())))?;
        cmd.arg("--values").arg(&file);
    }
    for value in set.iter().chain(&install.set) {
        cmd.arg("--set").arg(value);
    }
    let out = cmd
        .output()
        .map_err(|e| Stop::Fail(format!("--chart {}: running helm: {e}", dir.display())))?;
    if !out.status.success() {
        return Err(Stop::Fail(format!(
            "--chart {}: helm template failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_objects(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| Stop::Fail(format!("--chart {}: helm template's output: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_from_documents_and_lists() {
        let text = "---\nkind: ServiceAccount\nmetadata: {name: a}\n---\n# only a comment\n---\n\
                    kind: List\nitems:\n- {kind: ClusterRole, metadata: {name: b, namespace: x}}\n\
                    - {kind: DaemonSet, metadata: {name: c}}\n";
        let objects = with_namespaces(parse_objects(text).unwrap());
        let names: Vec<&str> = objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(objects[0]["metadata"]["namespace"], NAMESPACE);
        assert!(objects[1]["metadata"].get("namespace").is_none(), "cluster-scoped");
        assert!(
            parse_objects("kind: X\n")
                .unwrap_err()
                .to_string()
                .contains("without kind or metadata.name")
        );
        assert!(
            parse_objects("- 1\n")
                .unwrap_err()
                .to_string()
                .contains("not an object")
        );
    }

    #[test]
    fn features_are_the_projects_only() {
        let own = System::project();
        assert!(Feature::ALL.iter().all(|f| own.has(*f)));
        assert_eq!(own.lacks(&Feature::ALL), None);
        let chart = System {
            source: Source::Chart {
                dir: "/charts/cni".into(),
                values: Vec::new(),
                set: Vec::new(),
            },
            ..System::default()
        };
        let why = chart.lacks(&[Feature::Taint]).unwrap();
        assert!(
            why.contains("taint.enabled") && why.contains("chart /charts/cni"),
            "{why}"
        );
        assert_eq!(chart.lacks(&[]), None);
    }

    #[test]
    fn bad_inputs_are_named() {
        let scratch = testkit::Scratch::new("system-check");
        let chart = |dir: PathBuf| System {
            source: Source::Chart {
                dir,
                values: Vec::new(),
                set: Vec::new(),
            },
            ..System::default()
        };
        std::fs::write(scratch.join("m.yaml"), "kind: ServiceAccount\nmetadata: {name: a}\n").unwrap();
        let manifests = |file: &str| System {
            source: Source::Manifests(vec![scratch.join(file)]),
            ..System::default()
        };
        let bad_image = System {
            images: vec!["no-equals-sign".into()],
            ..System::default()
        };
        for (system, named) in [
            (chart(scratch.join("nope")), &["--chart", "nope", "Chart.yaml"][..]),
            (manifests("m.yaml"), &["m.yaml: no DaemonSet"]),
            (bad_image, &["no-equals-sign", "REF="]),
            (manifests("missing.yaml"), &["missing.yaml"]),
        ] {
            let err = system.check().unwrap_err().to_string();
            assert!(named.iter().all(|n| err.contains(n)), "{err}");
        }
    }
}
