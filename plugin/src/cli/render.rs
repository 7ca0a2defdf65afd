//! `istio-cni render`: the rules for every pod of a manifest.

use std::io::Read;

use super::{Backend, RenderArgs};
use crate::capture::{CaptureConfig, CaptureError, NodeEnv};
use crate::pod::{Decision, LoadError, decide, load_pods};
use crate::redirect::{Redirect, RedirectError};
use crate::{iptables, nftables};

/// How to render: what the plugin would find in the netns and on the node.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub ipv6: bool,
    pub backend: Backend,
    pub node: NodeEnv,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{object}: {source}")]
    Annotation { object: String, source: RedirectError },
    #[error("{0}")]
    Node(#[from] CaptureError),
}

/// Renders every pod in `manifest`. All pods are checked before anything is
/// returned, so an invalid pod never yields a partial output.
pub fn render_manifest(manifest: &str, opts: &RenderOptions) -> Result<String, RenderError> {
    let pods = load_pods(manifest)?;
    let headers = pods.len() > 1;
    let mut out = String::new();
    for wp in &pods {
        let object = format!("{}/{}", wp.kind, wp.name);
        if headers {
            out.push_str(&format!("# {object}\n"));
        }
        match decide(&wp.pod) {
            Decision::Skip(reason) => out.push_str(&format!("# skip: {reason}\n")),
            Decision::Redirect => {
                let redirect = Redirect::from_pod(&wp.pod).map_err(|source| RenderError::Annotation {
                    object: object.clone(),
                    source,
                })?;
                for w in &redirect.warnings {
                    tracing::warn!("{object}: {w}");
                }
                let cfg = CaptureConfig::new(&redirect, &opts.node, opts.ipv6)?;
                out.push_str(&render_config(&cfg, opts.backend));
            }
        }
    }
    Ok(out)
}

fn render_config(cfg: &CaptureConfig, backend: Backend) -> String {
    match backend {
        Backend::Nftables => nftables::render(cfg),
        Backend::Iptables => {
            let payload = iptables::render(cfg);
            match payload.v6 {
                // IPv4 alone is exactly what `iptables-restore` takes.
                None => payload.v4,
                Some(v6) => format!(
                    "# iptables-restore (IPv4)\n{}# ip6tables-restore (IPv6)\n{v6}",
                    payload.v4
                ),
            }
        }
    }
}

pub(super) fn run(args: &RenderArgs) -> i32 {
    let file = args.file.display();
    let manifest = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(&args.file)
    };
    let manifest = match manifest {
        Ok(m) => m,
        Err(e) => {
            eprintln!("istio-cni render: cannot read {file}: {e}");
            return 2;
        }
    };
    let opts = RenderOptions {
        ipv6: args.ipv6,
        backend: args.backend,
        node: NodeEnv::from_env(),
    };
    match render_manifest(&manifest, &opts) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("istio-cni render: {file}: {e}");
            2
        }
    }
}
