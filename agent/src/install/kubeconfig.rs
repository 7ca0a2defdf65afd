//! The plugin's kubeconfig: Istio's names and YAML shape (keys sorted,
//! lists at the parent's indentation, as Go's JSON-then-YAML round trip
//! prints them), the service-account token inline so the plugin needs no
//! access to the agent's SA volume. Rewritten whenever the token or CA
//! changes (the watch loop wakes on the kubelet's `..data` swap).
//!
//! The token is a [`Secret`]: it goes into the file and nowhere else. The
//! log gets a [`Summary`] (server, where the CA and token came from, their
//! sizes), never the text, so no YAML quoting or block style can leak it.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use istio_cni::bounded::{self, Limits};
use serde::Serialize;

use super::atomic;
use super::error::Cause;
use crate::config::InstallSettings;

/// A value that is written into the kubeconfig and never printed.
struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// What the log may say about a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub server: String,
    /// The CA file and its size, or `None` with insecure-skip-tls-verify.
    pub ca: Option<(PathBuf, usize)>,
    pub token_file: PathBuf,
    /// The token's length after trimming.
    pub token_bytes: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {}, ", self.server)?;
        match &self.ca {
            Some((path, n)) => write!(f, "CA from {} ({n} bytes), ", path.display())?,
            None => f.write_str("insecure-skip-tls-verify, ")?,
        }
        write!(
            f,
            "token from {} ({} bytes)",
            self.token_file.display(),
            self.token_bytes
        )
    }
}

/// A rendered kubeconfig: `text` holds the token, `summary` is for logs.
pub struct Rendered {
    pub text: String,
    pub summary: Summary,
}

#[derive(Serialize)]
struct KubeConfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    clusters: Vec<NamedCluster>,
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context")]
    current_context: &'static str,
    kind: &'static str,
    users: Vec<NamedUser>,
}

#[derive(Serialize)]
struct NamedCluster {
    cluster: Cluster,
    name: &'static str,
}

#[derive(Serialize)]
struct Cluster {
    #[serde(rename = "certificate-authority-data", skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", skip_serializing_if = "Option::is_none")]
    insecure_skip_tls_verify: Option<bool>,
    server: String,
}

#[derive(Serialize)]
struct NamedContext {
    context: Context,
    name: &'static str,
}

#[derive(Serialize)]
struct Context {
    cluster: &'static str,
    user: &'static str,
}

#[derive(Serialize)]
struct NamedUser {
    name: &'static str,
    user: User,
}

#[derive(Serialize)]
struct User {
    token: Secret,
}

/// The kubeconfig for the current token and CA.
pub fn render(settings: &InstallSettings) -> Result<Rendered, Cause> {
    let server = settings.api_server_url().map_err(Cause::Setting)?;
    let (ca, skip, ca_summary) = if settings.skip_tls_verify {
        (None, Some(true), None)
    } else {
        let ca_file = settings.ca_file();
        let pem = bounded::read(&ca_file, Limits::CONFIG)?;
        let n = pem.len();
        (
            Some(base64::engine::general_purpose::STANDARD.encode(pem)),
            None,
            Some((ca_file, n)),
        )
    };
    let token_file = settings.service_account_dir.join("token");
    let token = read_token(&token_file)?;
    let summary = Summary {
        server: server.clone(),
        ca: ca_summary,
        token_file,
        token_bytes: token.0.len(),
    };
    let config = KubeConfig {
        api_version: "v1",
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: ca,
                insecure_skip_tls_verify: skip,
                server,
            },
            name: "local",
        }],
        contexts: vec![NamedContext {
            context: Context {
                cluster: "local",
                user: "istio-cni",
            },
            name: "istio-cni-context",
        }],
        current_context: "istio-cni-context",
        kind: "Config",
        users: vec![NamedUser {
            name: "istio-cni",
            user: User { token },
        }],
    };
    let text = serde_yaml::to_string(&config).map_err(|e| Cause::Setting(format!("kubeconfig: {e}")))?;
    Ok(Rendered { text, summary })
}

/// The bearer token in `path`, surrounding whitespace trimmed: a token file
/// written by hand or with `echo` ends in a newline, which would otherwise
/// turn the YAML value into a block scalar and the token into something no
/// API server accepts (client-go and our plugin trim token files the same
/// way). What is left must be one line of printable text: it becomes an HTTP
/// header. Errors never quote the content.
fn read_token(path: &Path) -> Result<Secret, Cause> {
    let raw = bounded::read(path, Limits::CONFIG)?;
    let text = String::from_utf8(raw).map_err(|_| Cause::bad(path, "the token is not UTF-8 text"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Cause::bad(path, "the token is empty"));
    }
    if let Some(at) = token.find(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Cause::bad(
            path,
            format!(
                "the token has whitespace or a control character inside it (byte {at} of {}); a bearer token is one line of printable text",
                token.len()
            ),
        ));
    }
    Ok(Secret(token.to_string()))
}

/// Writes `<run dir>/istio-cni-kubeconfig` at KUBECONFIG_MODE unless it is
/// already exactly that. Returns whether it was written.
pub fn write(settings: &InstallSettings) -> Result<bool, Cause> {
    let Rendered { text, summary } = render(settings)?;
    let path = settings.kubeconfig_path();
    let mode = settings.kubeconfig_mode;
    // A writer killed mid-write leaves a temp file even when the content is unchanged.
    atomic::remove_leftovers(&settings.cni_agent_run_dir, kubeconfig_name());
    let current = fs::metadata(&path)
        .ok()
        .filter(|m| m.permissions().mode() & 0o7777 == mode);
    if current.is_some() && bounded::read(&path, Limits::CONFIG).is_ok_and(|b| b == text.as_bytes()) {
        return Ok(false);
    }
    let dir = &settings.cni_agent_run_dir;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(Cause::io("create dir", dir))?;
    atomic::write(&path, text.as_bytes(), mode, None).map_err(Cause::io("write", &path))?;
    tracing::info!(target: "cni-agent", "wrote kubeconfig {}: {summary}", path.display());
    Ok(true)
}

fn kubeconfig_name() -> &'static str {
    istio_cni::cni::config::KUBECONFIG_FILE
}

/// Deletes the kubeconfig; missing is fine.
pub fn remove(settings: &InstallSettings) -> io::Result<Option<PathBuf>> {
    let path = settings.kubeconfig_path();
    Ok(atomic::remove(&path)?.then_some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_shape_and_summary() {
        let dir = testkit::Scratch::new("kubeconfig");
        fs::write(dir.join("token"), "service_account_token_string").unwrap();
        fs::write(dir.join("ca.crt"), "CA").unwrap();
        let mut s = InstallSettings::from_flags(&[]);
        s.service_account_dir = dir.to_path_buf();
        s.kubernetes_service_host = "10.96.0.1".into();
        s.kubernetes_service_port = "443".into();
        let Rendered { text, summary } = render(&s).unwrap();
        assert_eq!(
            text,
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://10.96.0.1:443\n  name: local\ncontexts:\n- context:\n    cluster: local\n    user: istio-cni\n  name: istio-cni-context\ncurrent-context: istio-cni-context\nkind: Config\nusers:\n- name: istio-cni\n  user:\n    token: service_account_token_string\n"
        );
        assert_eq!(
            summary.to_string(),
            format!(
                "server https://10.96.0.1:443, CA from {} (2 bytes), token from {} (28 bytes)",
                dir.join("ca.crt").display(),
                dir.join("token").display()
            )
        );
        s.skip_tls_verify = true;
        let Rendered { text, summary } = render(&s).unwrap();
        assert!(summary.to_string().contains(", insecure-skip-tls-verify, token from"));
        assert!(text.contains("\n    insecure-skip-tls-verify: true\n    server:"));
        s.kubernetes_service_host.clear();
        assert!(
            render(&s)
                .err()
                .unwrap()
                .to_string()
                .contains("KUBERNETES_SERVICE_HOST not set")
        );
    }
}
