//! `istio-cni-agent manifest`: the DaemonSet, its ConfigMap and
//! ServiceAccount, and the RBAC, from the values of Istio's `istio-cni` Helm
//! chart and from IstioOperator files, so existing install files work.
//!
//! ```text
//! istio-cni-agent manifest [--values FILE]... [-f ISTIOOPERATOR.yaml]... [--set key=value]...
//!                          [--platform gke|k3d|k3s|microk8s|minikube|openshift] [--namespace NS]
//! ```
//!
//! Precedence, lowest first (a later layer wins key by key, lists replace):
//! 1. the chart's defaults (with our image, `istio-cni-rs/agent:dev`);
//! 2. the `profile` (`demo` shrinks requests; `openshift` implies the platform);
//! 3. the platform profile (`--platform`, else `platform` / `global.platform`);
//! 4. `--values` files, in order;
//! 5. IstioOperator files (`-f`), in order;
//! 6. `--set`, in order.
//!
//! Within one document `cni.x` wins over `x`, as in the chart. `null` removes
//! a key and its default (Helm). Unknown keys are errors naming their full
//! dotted path; keys of other Istio components are accepted and ignored.
//! `global.hub`/`global.tag` name Istio's images, so only the CNI keys
//! (`hub`, `tag`, `image`, `variant`) pick our image.
//!
//! The pieces are typed for callers that want objects, not YAML:
//! [`Manifest::resolve`] gives the effective [`Values`], and
//! [`Manifest::objects`] the k8s-openapi [`Objects`].

mod istio_operator;
pub mod objects;
pub mod platform;
mod schema;
pub mod set;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

pub use istio_operator::K8sOverlay;
pub use objects::{HostMount, Objects};
pub use platform::Platform;
pub use values::Values;

/// The `manifest` subcommand's arguments.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ManifestArgs {
    /// Helm values file(s) of Istio's istio-cni chart (keys at the top level or under `cni.`)
    #[arg(long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// IstioOperator file(s) (spec.components.cni, spec.values.cni, spec.values.global)
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A value in Helm's --set syntax, e.g. repair.deletePods=true or excludeNamespaces={kube-system,ops}
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The Kubernetes distribution (its CNI dirs and settings)
    #[arg(long, value_enum)]
    pub platform: Option<Platform>,
    /// Namespace of the DaemonSet [default: the IstioOperator's, else istio-system]
    #[arg(long)]
    pub namespace: Option<String>,
}

/// Why nothing was rendered.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {}", problems.join("; "))]
    Invalid { origin: String, problems: Vec<String> },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot serialize the objects: {0}")]
    Serialize(String),
}

/// A document and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Source {
    pub origin: String,
    pub text: String,
}

impl Source {
    pub fn new(origin: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            origin: origin.into(),
            text: text.into(),
        }
    }

    fn read(kind: &str, path: &Path) -> Result<Source, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Source::new(format!("{kind} {}", path.display()), text))
    }
}

/// [`ManifestArgs`] with the files already read.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub platform: Option<Platform>,
    pub namespace: Option<String>,
    /// Helm values documents.
    pub values: Vec<Source>,
    /// IstioOperator files (one or more documents each).
    pub operators: Vec<Source>,
    /// `--set` arguments.
    pub set: Vec<String>,
}

impl Inputs {
    /// Reads the files `args` names.
    pub fn read(args: &ManifestArgs) -> Result<Inputs, ManifestError> {
        Ok(Inputs {
            platform: args.platform,
            namespace: args.namespace.clone(),
            values: args
                .values
                .iter()
                .map(|p| Source::read("values file", p))
                .collect::<Result<_, _>>()?,
            operators: args
                .files
                .iter()
                .map(|p| Source::read("IstioOperator file", p))
                .collect::<Result<_, _>>()?,
            set: args.set.clone(),
        })
    }
}

/// The resolved install: effective values, namespace, platform, istioctl's k8s settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub values: Values,
    pub namespace: String,
    pub platform: Option<Platform>,
    pub overlay: K8sOverlay,
}

/// The namespace when nothing names one (Istio 1.24+ installs CNI there).
pub const DEFAULT_NAMESPACE: &str = "istio-system";

impl Manifest {
    /// Layers the inputs (see the module docs for the precedence) and checks them.
    pub fn resolve(inputs: &Inputs) -> Result<Manifest, ManifestError> {
        let mut user = values::empty();
        let mut overlay = K8sOverlay::default();
        let mut namespace = None;

        for src in &inputs.values {
            let mut doc = parse_one(src)?;
            validate(&mut doc, schema::VALUES, &src.origin)?;
            values::descope(&mut doc);
            values::merge(&mut user, &doc);
        }
        for src in &inputs.operators {
            for mut doc in parse_all(src)? {
                validate(&mut doc, &[schema::OPERATOR], &src.origin)?;
                let op = istio_operator::translate(&doc).map_err(|message| ManifestError::Parse {
                    origin: src.origin.clone(),
                    message,
                })?;
                if op.enabled == Some(false) {
                    return Err(ManifestError::Unsupported(format!(
                        "{}: spec.components.cni.enabled is false: nothing to render",
                        src.origin
                    )));
                }
                let mut layer = op.values;
                values::descope(&mut layer);
                values::merge(&mut user, &layer);
                overlay.merge(op.overlay);
                namespace = op.namespace.or(namespace);
            }
        }
        if !inputs.set.is_empty() {
            let mut layer = set::parse(&inputs.set).map_err(|message| ManifestError::Parse {
                origin: "--set".into(),
                message,
            })?;
            validate(&mut layer, schema::VALUES, "--set")?;
            values::descope(&mut layer);
            values::merge(&mut user, &layer);
        }

        let invalid = |problem: String| ManifestError::Invalid {
            origin: "values".into(),
            problems: vec![problem],
        };
        let profile = first_set(&user, &[&["profile"], &["global", "profile"]]);
        let (profile_tree, profile_platform) = platform::profile_values(profile).map_err(invalid)?;
        platform::check_compatibility_version(values::str_at(&user, &["compatibilityVersion"])).map_err(invalid)?;
        let platform = match inputs.platform {
            Some(p) => Some(p),
            None => match first_set(&user, &[&["platform"], &["global", "platform"]]) {
                "" => profile_platform,
                name => Some(name.parse::<Platform>().map_err(invalid)?),
            },
        };

        let mut tree = values::chart_defaults();
        values::merge(&mut tree, &profile_tree);
        if let Some(p) = platform {
            values::merge(&mut tree, &p.profile());
        }
        values::merge(&mut tree, &user);
        values::strip_nulls(&mut tree);
        if let (Some(p), Value::Object(map)) = (platform, &mut tree) {
            map.insert("platform".into(), Value::String(p.name().into()));
        }
        let values = Values::deserialize(&tree).map_err(|e| invalid(e.to_string()))?;

        if values.ambient.enabled {
            return Err(ManifestError::Unsupported(
                "ambient.enabled: istio-cni-agent implements sidecar mode only".into(),
            ));
        }
        if values.taint.enabled {
            crate::config::parse_taint_key(&values.taint.name).map_err(|e| invalid(format!("taint.name: {e}")))?;
        }
        if !matches!(values.global.resource_scope.as_str(), "all" | "namespace" | "cluster") {
            return Err(invalid(format!(
                "global.resourceScope must be all, namespace or cluster, got {:?}",
                values.global.resource_scope
            )));
        }
        let namespace = inputs
            .namespace
            .clone()
            .or(namespace)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        // Every object lands in this namespace: a name the API server would
        // refuse must fail here, not half-way through `kubectl apply`.
        let origin = if inputs.namespace.is_some() {
            "--namespace"
        } else {
            "the IstioOperator's namespace"
        };
        istio_cni::cni::args::dns1123_label(&namespace).map_err(|reason| ManifestError::Invalid {
            origin: origin.into(),
            problems: vec![format!("{namespace:?} is not a namespace name: {reason}")],
        })?;
        Ok(Manifest {
            values,
            namespace,
            platform,
            overlay,
        })
    }

    /// The chart defaults on `platform` (what `manifest --platform P` renders).
    pub fn for_platform(platform: Option<Platform>) -> Result<Manifest, ManifestError> {
        Manifest::resolve(&Inputs {
            platform,
            ..Default::default()
        })
    }

    /// Every object, typed.
    pub fn objects(&self) -> Objects {
        objects::render(self)
    }

    /// Every object as JSON, in apply order.
    pub fn object_values(&self) -> Result<Vec<Value>, ManifestError> {
        self.objects()
            .to_values()
            .map_err(|e| ManifestError::Serialize(e.to_string()))
    }

    /// The multi-document YAML `manifest` prints.
    pub fn to_yaml(&self) -> Result<String, ManifestError> {
        let mut out = format!(
            "# istio-cni-agent manifest: platform {}, namespace {}, repair mode {}\n",
            self.platform.map_or("default", Platform::name),
            self.namespace,
            self.values.repair_mode().map_or("none", |m| m.as_str()),
        );
        for (i, obj) in self.object_values()?.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&serde_yaml::to_string(obj).map_err(|e| ManifestError::Serialize(e.to_string()))?);
        }
        Ok(out)
    }

    /// The DaemonSet's hostPath mounts (host dir ↔ container dir).
    pub fn host_mounts(&self) -> Vec<HostMount> {
        objects::host_mounts(self)
    }

    /// The node's CNI config dir.
    pub fn host_conf_dir(&self) -> &str {
        &self.values.cni_conf_dir
    }

    /// The node's CNI plugin dir.
    pub fn host_bin_dir(&self) -> String {
        objects::host_bin_dir(self)
    }

    /// The environment the agent container sees on `node` as pod `pod`: the
    /// ConfigMap, then the container's env with the downward API resolved
    /// (istioctl `k8s.env` entries included).
    pub fn agent_env(&self, node: &str, pod: &str) -> BTreeMap<String, String> {
        let mut env = objects::config_data(self);
        let ds = self.objects().daemon_set;
        let containers = ds
            .and_then(|d| d.spec)
            .and_then(|s| s.template.spec)
            .map(|p| p.containers);
        let container_env = containers
            .into_iter()
            .flatten()
            .find(|c| c.name == objects::CONTAINER)
            .and_then(|c| c.env)
            .unwrap_or_default();
        for e in container_env {
            let field = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref());
            let value = match (e.value, field.map(|f| f.field_path.as_str())) {
                (Some(v), _) => v,
                (None, Some("spec.nodeName")) => node.to_string(),
                (None, Some("metadata.name")) => pod.to_string(),
                (None, Some("metadata.namespace")) => self.namespace.clone(),
                _ => continue,
            };
            env.insert(e.name, value);
        }
        env
    }
}

/// The multi-document YAML to print.
pub fn render(args: &ManifestArgs) -> Result<String, ManifestError> {
    Manifest::resolve(&Inputs::read(args)?)?.to_yaml()
}

/// The objects for `args`, as JSON, without going through YAML.
pub fn render_objects(args: &ManifestArgs) -> Result<Vec<Value>, ManifestError> {
    Manifest::resolve(&Inputs::read(args)?)?.object_values()
}

fn first_set<'a>(tree: &'a Value, paths: &[&[&str]]) -> &'a str {
    paths
        .iter()
        .map(|p| values::str_at(tree, p))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

fn yaml_error(src: &Source, e: serde_yaml::Error) -> ManifestError {
    ManifestError::Parse {
        origin: src.origin.clone(),
        message: format!("not valid YAML: {e}"),
    }
}

/// A single-document file (values); empty is `{}`.
fn parse_one(src: &Source) -> Result<Value, ManifestError> {
    let mut docs = parse_all(src)?;
    match docs.len() {
        0 => Ok(values::empty()),
        1 => Ok(docs.remove(0)),
        n => Err(ManifestError::Parse {
            origin: src.origin.clone(),
            message: format!("a values file is one YAML document, found {n}"),
        }),
    }
}

/// Every non-empty document of a file.
fn parse_all(src: &Source) -> Result<Vec<Value>, ManifestError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&src.text) {
        let v = Value::deserialize(doc).map_err(|e| yaml_error(src, e))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn validate(doc: &mut Value, fields: &[&[schema::Field]], origin: &str) -> Result<(), ManifestError> {
    let mut problems = Vec::new();
    schema::check(doc, fields, "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ManifestError::Invalid {
            origin: origin.to_string(),
            problems,
        })
    }
}
