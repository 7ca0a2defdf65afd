//! The plugin's kubeconfig (§4.3): Istio's names and YAML shape (keys sorted,
//! lists at the parent's indentation, as Go's JSON-then-YAML round trip
//! prints them), the service-account token inline so the plugin needs no
//! access to the agent's SA volume. Rewritten whenever the token or CA
//! changes (the watch loop wakes on the kubelet's `..data` swap).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use base64::Engine as _;
use serde::Serialize;

use super::atomic;
use super::error::Cause;
use crate::config::InstallSettings;

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
    token: String,
}

/// The kubeconfig's text for the current token and CA.
pub fn render(settings: &InstallSettings) -> Result<String, Cause> {
    let server = settings.api_server_url().map_err(Cause::Setting)?;
    let (ca, skip) = if settings.skip_tls_verify {
        (None, Some(true))
    } else {
        let ca_file = settings.ca_file();
        let pem = fs::read(&ca_file).map_err(Cause::io("read", &ca_file))?;
        (Some(base64::engine::general_purpose::STANDARD.encode(pem)), None)
    };
    let token_file = settings.service_account_dir.join("token");
    let raw = fs::read(&token_file).map_err(Cause::io("read", &token_file))?;
    // Raw bytes, nothing trimmed (as Istio); YAML can only carry text.
    let token = String::from_utf8(raw).map_err(|_| Cause::bad(&token_file, "the token is not UTF-8 text"))?;
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
    serde_yaml::to_string(&config).map_err(|e| Cause::Setting(format!("kubeconfig: {e}")))
}

/// Writes `<run dir>/istio-cni-kubeconfig` at KUBECONFIG_MODE unless it is
/// already exactly that. Returns whether it was written.
pub fn write(settings: &InstallSettings) -> Result<bool, Cause> {
    let text = render(settings)?;
    let path = settings.kubeconfig_path();
    let mode = settings.kubeconfig_mode;
    // A writer killed mid-write leaves a temp file even when the content is unchanged.
    atomic::remove_leftovers(&settings.cni_agent_run_dir, kubeconfig_name());
    let current = fs::metadata(&path)
        .ok()
        .filter(|m| m.permissions().mode() & 0o7777 == mode);
    if current.is_some() && fs::read(&path).is_ok_and(|b| b == text.as_bytes()) {
        return Ok(false);
    }
    let dir = &settings.cni_agent_run_dir;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(Cause::io("create dir", dir))?;
    atomic::write(&path, text.as_bytes(), mode, None).map_err(Cause::io("write", &path))?;
    tracing::info!(target: "cni-agent", "wrote kubeconfig {}: {}", path.display(), redact(&text));
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

/// The text with the token and CA replaced, for the log.
fn redact(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once(": ") {
            Some((k, _)) if k.trim() == "token" || k.trim() == "certificate-authority-data" => format!("{k}: REDACTED"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: InstallSettings,
    }

    #[test]
    fn istio_shape_and_redaction() {
        let dir = std::env::temp_dir().join(format!("istio-cni-kubeconfig-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("token"), "service_account_token_string").unwrap();
        fs::write(dir.join("ca.crt"), "CA").unwrap();
        let mut s = Cli::try_parse_from(["t"]).unwrap().s;
        s.service_account_dir = dir.clone();
        s.kubernetes_service_host = "10.96.0.1".into();
        s.kubernetes_service_port = "443".into();
        let text = render(&s).unwrap();
        assert_eq!(
            text,
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://10.96.0.1:443\n  name: local\ncontexts:\n- context:\n    cluster: local\n    user: istio-cni\n  name: istio-cni-context\ncurrent-context: istio-cni-context\nkind: Config\nusers:\n- name: istio-cni\n  user:\n    token: service_account_token_string\n"
        );
        assert!(!redact(&text).contains("Q0E=") && !redact(&text).contains("service_account"));
        s.skip_tls_verify = true;
        assert!(
            render(&s)
                .unwrap()
                .contains("\n    insecure-skip-tls-verify: true\n    server:")
        );
        s.kubernetes_service_host.clear();
        assert!(
            render(&s)
                .unwrap_err()
                .to_string()
                .contains("KUBERNETES_SERVICE_HOST not set")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
