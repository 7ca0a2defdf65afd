//! The plugin's access to the Kubernetes API: one GET of the pod, with the
//! kubeconfig the node agent writes. A small blocking client keeps the
//! per-pod cost low (no async runtime is started for it).

pub mod kubeconfig;
pub mod node_cache;
mod path;
mod resolve;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::transport::DefaultConnector;

use crate::cni::add::{ApiError, PodApi};
pub use kubeconfig::{KubeconfigError, Target};

/// A client for one API server.
pub struct Client {
    agent: ureq::Agent,
    target: Target,
    timeout: Duration,
}

impl Client {
    /// Builds a client for `target`; every request is bounded by `timeout`.
    pub fn new(target: Target, timeout: Duration) -> Result<Client, String> {
        let mut tls = TlsConfig::builder().disable_verification(target.insecure_skip_tls_verify);
        if let Some(pem) = &target.ca_pem {
            let mut roots = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                match item.map_err(|e| format!("CA bundle: {e}"))? {
                    PemItem::Certificate(c) => roots.push(Certificate::from_der(c.der()).to_owned()),
                    _ => continue,
                }
            }
            if roots.is_empty() && !target.insecure_skip_tls_verify {
                return Err("CA bundle holds no certificate".into());
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(roots)));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("istio-cni/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), resolve::LiteralFirst::default());
        Ok(Client { agent, target, timeout })
    }
}

impl PodApi for Client {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        let url = format!("{}{}", self.target.server, path::pod(namespace, name));
        let mut request = self.agent.get(&url).header("Accept", "application/json");
        if let Some(token) = &self.target.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let err = |message: String| ApiError { message };
        let mut response = request
            .call()
            .map_err(|e| err(format!("GET {url}: {}", cause(&e, self.timeout))))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| err(format!("GET {url}: reading the reply: {}", cause(&e, self.timeout))))?;
        if status != 200 {
            // Kubernetes errors are Status objects; their message says it best.
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or(body);
            return Err(err(format!("GET {url}: HTTP {status}: {message}")));
        }
        serde_json::from_str(&body).map_err(|e| err(format!("GET {url}: not a Pod: {e}")))
    }
}

/// What went wrong, in the words an operator looks for in a pod event
/// ("timed out", "connection refused") rather than the client's own
/// ("timeout: global", "io: Connection refused").
fn cause(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("timed out after {timeout:?}"),
        ureq::Error::Io(io) => match io.raw_os_error() {
            Some(code) => format!("{} (os error {code})", io.kind()),
            None => io.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named_plainly() {
        let timeout = Duration::from_millis(1500);
        assert_eq!(
            cause(&ureq::Error::Timeout(ureq::Timeout::Global), timeout),
            "timed out after 1.5s"
        );
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            cause(&ureq::Error::Io(refused), timeout),
            format!("connection refused (os error {})", libc::ECONNREFUSED)
        );
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed early");
        assert_eq!(cause(&ureq::Error::Io(eof), timeout), "closed early");
        assert_eq!(cause(&ureq::Error::HostNotFound, timeout), "host not found");
    }
}
