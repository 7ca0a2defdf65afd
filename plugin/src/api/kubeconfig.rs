//! The kubeconfig the node agent writes for the plugin: server URL, CA (data
//! or file) or insecure-skip-tls, and a bearer token (inline or file).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

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
#[error("kubeconfig {}: {reason}", path.display())]
pub struct KubeconfigError {
    pub path: PathBuf,
    pub reason: String,
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
        let err = |reason: String| KubeconfigError {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("/"))).map_err(err)
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
            (None, Some(file)) => Some(
                std::fs::read(resolve(file))
                    .map_err(|e| format!("certificate-authority {}: {e}", resolve(file).display()))?,
            ),
            (None, None) => None,
        };
        let token = match user {
            Some(User { token: Some(t), .. }) => Some(t.trim().to_string()),
            Some(User {
                token_file: Some(f), ..
            }) => Some(
                std::fs::read_to_string(resolve(f))
                    .map_err(|e| format!("tokenFile {}: {e}", resolve(f).display()))?
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
                .starts_with("kubeconfig /nonexistent/istio-cni-kubeconfig: cannot read it"),
            "{e}"
        );
    }
}
