//! The kubeconfig the node agent writes for the plugin: server URL, CA (data
//! or file) or insecure-skip-tls, and a bearer token (inline or file). The
//! kubeconfig and every file it names are read through [`bounded`]: a path
//! in a config may name `/dev/zero`, a FIFO or a hung mount.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::bounded::{self, Limits, ReadError};

/// Where and how to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://host:port` or `http://host:port`, without a trailing `/`.
    pub server: String,
    /// PEM bytes of the CA bundle, when verifying TLS.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The kubeconfig file itself could not be read (the error names it).
    #[error("kubeconfig {0}")]
    Read(#[source] ReadError),
    #[error("kubeconfig {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Deserialize)]
struct File {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority_data: Option<String>,
    certificate_authority: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

impl Target {
    /// Reads and resolves a kubeconfig file (current context, else the first).
    pub fn load(path: &Path) -> Result<Target, KubeconfigError> {
        let text = bounded::read_to_string(path, Limits::CONFIG).map_err(KubeconfigError::Read)?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("/"))).map_err(|reason| KubeconfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Resolves kubeconfig text; relative file references are under `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Target, String> {
        let file: File = serde_yaml::from_str(text).map_err(|e| format!("not a kubeconfig: {e}"))?;
        let context = file
            .contexts
            .iter()
            .find(|c| c.name == file.current_context)
            .or(file.contexts.first())
            .map(|c| &c.context);
        let cluster = match context {
            Some(ctx) => file.clusters.iter().find(|c| c.name == ctx.cluster),
            None => file.clusters.first(),
        }
        .map(|c| &c.cluster)
        .ok_or("no cluster for the current context")?;
        let user = match context {
            Some(ctx) => file.users.iter().find(|u| u.name == ctx.user),
            None => file.users.first(),
        }
        .map(|u| &u.user);

        let server = cluster.server.trim_end_matches('/').to_string();
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return Err(format!("server {server:?} must be an http:// or https:// URL"));
        }
        let resolve = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        let ca_pem = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| format!("certificate-authority-data is not base64: {e}"))?,
            ),
            (None, Some(file)) => {
                Some(bounded::read(&resolve(file), Limits::CONFIG).map_err(|e| format!("certificate-authority {e}"))?)
            }
            (None, None) => None,
        };
        let token = match user {
            Some(User { token: Some(t), .. }) => Some(t.trim().to_string()),
            Some(User {
                token_file: Some(f), ..
            }) => Some(
                bounded::read_to_string(&resolve(f), Limits::CONFIG)
                    .map_err(|e| format!("tokenFile {e}"))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        Ok(Target {
            server,
            ca_pem,
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT_WRITTEN: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://10.96.0.1:443/
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
users:
- name: istio-cni
  user:
    token: abc.def
contexts:
- name: istio-cni-context
  context:
    cluster: local
    user: istio-cni
current-context: istio-cni-context
"#;

    #[test]
    fn the_agents_kubeconfig() {
        let t = Target::parse(AGENT_WRITTEN, Path::new("/")).unwrap();
        assert_eq!(t.server, "https://10.96.0.1:443");
        assert_eq!(t.ca_pem.as_deref(), Some(&b"-----BEGIN CERTIFICATE-----\n"[..]));
        assert_eq!(t.token.as_deref(), Some("abc.def"));
        assert!(!t.insecure_skip_tls_verify);
    }

    #[test]
    fn insecure_plain_http_and_token_files() {
        let dir = std::env::temp_dir().join(format!("istio-cni-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "tok\n").unwrap();
        let text = "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:8001', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {tokenFile: token}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n";
        let t = Target::parse(text, &dir).unwrap();
        assert_eq!(
            (t.server.as_str(), t.token.as_deref(), t.insecure_skip_tls_verify),
            ("http://127.0.0.1:8001", Some("tok"), true)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(
            Target::parse("clusters: []", Path::new("/"))
                .unwrap_err()
                .contains("no cluster")
        );
        assert!(
            Target::parse("clusters: [{name: c, cluster: {server: 'ftp://x'}}]", Path::new("/"))
                .unwrap_err()
                .contains("http")
        );
        let e = Target::load(Path::new("/nonexistent/istio-cni-kubeconfig")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("kubeconfig /nonexistent/istio-cni-kubeconfig: No such file"),
            "{e}"
        );
    }

    /// Special files (FIFOs, `/dev/zero`) are covered with the binary in
    /// tests/hostile_input.rs, where a regression cannot hang or exhaust the
    /// test process; here the cases a plain read would get wrong safely.
    #[test]
    fn files_it_names_are_read_within_bounds() {
        let dir = std::env::temp_dir().join(format!("istio-cni-kubeconfig-bounds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(Limits::CONFIG.max_bytes + 1)
            .unwrap();
        let cluster = |ca: &str| {
            format!("clusters: [{{name: c, cluster: {{server: 'https://x', certificate-authority: '{ca}'}}}}]\n")
        };
        let token = |file: &str| {
            format!(
                "clusters: [{{name: c, cluster: {{server: 'https://x'}}}}]\nusers: [{{name: u, user: {{tokenFile: '{file}'}}}}]\n"
            )
        };
        let cases = [
            (
                cluster("."),
                "certificate-authority {dir}/.: not a regular file (a directory)",
            ),
            (
                cluster("big"),
                "certificate-authority {dir}/big: larger than the limit of 4194304 bytes",
            ),
            (
                token("big"),
                "tokenFile {dir}/big: larger than the limit of 4194304 bytes",
            ),
        ];
        for (text, expected) in cases {
            let e = Target::parse(&text, &dir).unwrap_err();
            assert_eq!(e, expected.replace("{dir}", &dir.display().to_string()));
        }
        std::fs::write(dir.join("kubeconfig"), token("big")).unwrap();
        let e = Target::load(&dir.join("kubeconfig")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "kubeconfig {}/kubeconfig: tokenFile {}: larger than the limit of 4194304 bytes",
                dir.display(),
                big.display()
            )
        );
        let e = Target::load(&dir).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("kubeconfig {}: not a regular file (a directory)", dir.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
