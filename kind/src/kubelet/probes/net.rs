//! httpGet and tcpSocket checks, connecting from the node's network
//! namespace (where kubelet runs) to the pod IP or the probe's host.
//!
//! The HTTP client is the few lines a probe needs: one GET with
//! `Connection: close`, the status line read back. 200–399 succeed (kubelet
//! follows redirects to the same host; here a redirect counts as success
//! without being followed). HTTPS does not verify the server's certificate,
//! as kubelet does not.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use linux_ns::Netns;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::state::Outcome;

/// Longest response head read back (the status line is all that counts).
const MAX_HEAD: usize = 16 * 1024;
/// The User-Agent kubelet sends.
const USER_AGENT: &str = "kube-probe/1.33";

/// Where probes connect from and to.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The node's network namespace; `None`: the harness's own.
    pub netns: Option<Netns>,
    /// The default host: the pod IP.
    pub pod_ip: Option<IpAddr>,
}

/// Resolves the probe's host (default: the pod IP) and port.
async fn address(origin: &Origin, host: Option<&str>, port: u16) -> Result<SocketAddr, String> {
    let Some(host) = host else {
        return origin
            .pod_ip
            .map(|ip| SocketAddr::new(ip, port))
            .ok_or_else(|| "the pod has no IP address yet".to_string());
    };
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("dial tcp: lookup {host}: {e}"))?;
    found
        .next()
        .ok_or_else(|| format!("dial tcp: lookup {host}: no such host"))
}

/// A TCP connection from `origin`'s namespace (the socket is made there; it
/// stays in that namespace whichever thread uses it).
async fn connect(origin: &Origin, addr: SocketAddr) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let make = move || -> io::Result<OwnedFd> {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        socket(family, SockType::Stream, flags, None).map_err(io::Error::from)
    };
    let fd = match origin.netns.clone() {
        Some(ns) => tokio::task::spawn_blocking(move || ns.run(make))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)??,
        None => make()?,
    };
    TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
        .connect(addr)
        .await
}

/// An OS error as Go prints it ("connection refused").
fn os_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            let mut chars = text.chars();
            chars
                .next()
                .map(|c| c.to_lowercase().chain(chars).collect())
                .unwrap_or_default()
        }
        None => e.to_string(),
    }
}

/// tcpSocket: success when the connection opens within `timeout`.
pub async fn tcp(origin: &Origin, host: Option<&str>, port: u16, timeout: Duration) -> Outcome {
    let addr = match address(origin, host, port).await {
        Ok(addr) => addr,
        Err(e) => return Outcome::Failure(e),
    };
    match tokio::time::timeout(timeout, connect(origin, addr)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: connect: {}", os_error(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// What an HTTP probe asks for.
pub struct HttpGet<'a> {
    pub https: bool,
    pub host: Option<&'a str>,
    pub port: u16,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
}

/// httpGet: success on a 2xx or 3xx status within `timeout`.
pub async fn http(origin: &Origin, get: &HttpGet<'_>, timeout: Duration) -> Outcome {
    let addr = match address(origin, get.host, get.port).await {
        Ok(addr) => addr,
        Err(e) => return Outcome::Failure(e),
    };
    let scheme = if get.https { "https" } else { "http" };
    let host = get.host.map_or_else(|| addr.ip().to_string(), str::to_string);
    let authority = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{}", get.port),
        _ => format!("{host}:{}", get.port),
    };
    let url = format!("{scheme}://{authority}{}", get.path);
    let exchange = async {
        let tcp = connect(origin, addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {}", os_error(&e)))?;
        let request = request(get, &authority);
        if get.https {
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("server name {host:?}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(insecure_client_config()?)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            status(tls, &request).await
        } else {
            status(tcp, &request).await
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
        Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Ok(Err(e)) => Outcome::Failure(format!("Get {url:?}: {e}")),
        Err(_) => Outcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// The request head; a probe header named Host replaces the default.
fn request(get: &HttpGet<'_>, authority: &str) -> String {
    let mut head = format!("GET {} HTTP/1.1\r\n", get.path);
    let has = |name: &str| get.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        head.push_str(&format!("Host: {authority}\r\n"));
    }
    if !has("user-agent") {
        head.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("accept") {
        head.push_str("Accept: */*\r\n");
    }
    for (name, value) in get.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

/// Sends `request` and reads the status code back.
async fn status<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> Result<u16, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {}", os_error(&e)))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {}", os_error(&e)))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    parse_status(&head)
}

/// The code of an `HTTP/1.x NNN reason` status line.
fn parse_status(head: &[u8]) -> Result<u16, String> {
    if head.is_empty() {
        return Err("EOF".into());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("HTTP/1.") && (100..1000).contains(&code) => Ok(code),
        _ => Err(format!(
            "malformed HTTP response {:?}",
            line.chars().take(80).collect::<String>()
        )),
    }
}

/// A TLS client that accepts any server certificate (signatures over the
/// handshake are still checked), built once.
fn insecure_client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS client: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\nA: b\r\n"), Ok(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"), Ok(503));
        assert_eq!(parse_status(b"HTTP/1.1 302\r\n"), Ok(302));
        assert_eq!(parse_status(b""), Err("EOF".into()));
        assert!(parse_status(b"SSH-2.0-OpenSSH\r\n").unwrap_err().contains("malformed"));
        assert!(parse_status(b"HTTP/1.1 abc\r\n").is_err());
    }

    #[test]
    fn request_head_with_probe_headers() {
        let headers = vec![("X-Probe".to_string(), "yes".to_string())];
        let get = HttpGet {
            https: false,
            host: None,
            port: 8080,
            path: "/ready",
            headers: &headers,
        };
        assert_eq!(
            request(&get, "10.0.0.5:8080"),
            "GET /ready HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n\
             X-Probe: yes\r\nConnection: close\r\n\r\n"
        );
        let headers = vec![("host".to_string(), "app.local".to_string())];
        let get = HttpGet {
            headers: &headers,
            ..get
        };
        let head = request(&get, "10.0.0.5:8080");
        assert!(
            !head.contains("Host: 10.0.0.5") && head.contains("host: app.local"),
            "{head}"
        );
    }

    #[test]
    fn os_errors_read_as_go_prints_them() {
        assert_eq!(
            os_error(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            "connection refused"
        );
        assert_eq!(
            os_error(&io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
            "no route to host"
        );
    }

    /// Local servers on loopback (no namespaces needed): each outcome kind.
    #[tokio::test]
    async fn http_and_tcp_outcomes_against_local_servers() {
        let origin = Origin {
            netns: None,
            pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
        };
        let serve = |answer: &'static str| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    if !answer.is_empty() {
                        let _ = s.write_all(answer.as_bytes()).await;
                    } else {
                        // Never answers: the probe times out.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            });
            port
        };
        let get = |port| HttpGet {
            https: false,
            host: None,
            port,
            path: "/ready",
            headers: &[],
        };
        let t = Duration::from_secs(5);
        let ok = serve("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(http(&origin, &get(ok), t).await, Outcome::Success);
        let bad = serve("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(
            http(&origin, &get(bad), t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        let silent = serve("").await;
        let Outcome::Failure(msg) = http(&origin, &get(silent), Duration::from_millis(200)).await else {
            panic!("a silent server fails the probe");
        };
        assert!(
            msg.starts_with(&format!(
                "Get \"http://127.0.0.1:{silent}/ready\": context deadline exceeded"
            )),
            "{msg}"
        );
        assert_eq!(tcp(&origin, None, ok, t).await, Outcome::Success);
        // A port nobody listens on: take one and close it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(
            tcp(&origin, None, closed, t).await,
            Outcome::Failure(format!("dial tcp 127.0.0.1:{closed}: connect: connection refused"))
        );
        let Outcome::Failure(msg) = http(&origin, &get(closed), t).await else {
            panic!("refused");
        };
        assert!(msg.ends_with("connect: connection refused"), "{msg}");
        let no_ip = Origin { pod_ip: None, ..origin };
        assert!(matches!(tcp(&no_ip, None, ok, t).await, Outcome::Failure(m) if m.contains("no IP")));
    }
}
