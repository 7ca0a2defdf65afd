//! No secret reaches the agent's log, bad token files get a clean error, and
//! the plugin's log socket takes lines only from root or the agent's uid.

mod install_common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use install_common::*;
use istio_cni::api::kubeconfig::Target;
use istio_cni_agent::install::InstallError;

/// A log sink the tests read back.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// A subscriber printing every level of every target into this sink.
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish()
    }
}

/// Everything logged while `f` runs on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    let capture = Capture::default();
    let out = tracing::subscriber::with_default(capture.subscriber(), f);
    (out, capture.text())
}

/// The pieces of `token` that must never be logged: every non-blank line.
fn secret_parts(token: &str) -> Vec<&str> {
    token.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

fn assert_no_secret(log: &str, token: &str) {
    for part in secret_parts(token) {
        assert!(!log.contains(part), "token bytes {part:?} in the log:\n{log}");
    }
    // The CA is not secret, but the kubeconfig text is never logged at all.
    assert!(!log.contains(&b64(CA)), "CA data in the log:\n{log}");
}

/// A node with Calico's conflist whose service account token is `token`.
fn calico_node_with_token(name: &str, token: &str) -> Node {
    let node = Node::with_primary(name, "10-calico.conflist", CALICO);
    node.rotate_token(token, "2025_01_01_00_00_00.2");
    node
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Tokens as users hand them over: the kubelet's projected token has no
/// newline, a token written with `echo` or a text editor does.
#[test]
fn token_bytes_never_reach_the_log_and_surrounding_whitespace_is_trimmed() {
    let cases = [
        ("plain", "eyJhbGciOiJSUzI1NiJ9.cGxhaW4tcGF5bG9hZA.c2lnbmF0dXJlLXBsYWlu"),
        ("newline", "eyJhbGciOiJSUzI1NiJ9.bmV3bGluZS1wYXlsb2Fk.c2lnLW5ld2xpbmU\n"),
        ("two-newlines", "eyJhbGciOiJSUzI1NiJ9.dHdvLW5ld2xpbmVz.c2lnLXR3bw\n\n"),
        ("leading-spaces", "   eyJhbGciOiJSUzI1NiJ9.bGVhZGluZw.c2lnLWxlYWRpbmc\n"),
        ("crlf", "eyJhbGciOiJSUzI1NiJ9.Y3JsZg.c2lnLWNybGY\r\n"),
        ("unicode", "jéton-ünïcödé-値-トークン\n"),
    ];
    for (label, token) in cases {
        let node = calico_node_with_token(&format!("secret-{label}"), token);
        let mut installer = node.installer();
        let (result, log) = logged(|| installer.install_all());
        result.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_no_secret(&log, token);
        let kubeconfig_path = node.run.join("istio-cni-kubeconfig");
        assert!(
            log.contains("wrote kubeconfig") && log.contains(&kubeconfig_path.display().to_string()),
            "{label}: the write is still logged, as a summary:\n{log}"
        );
        // The token goes in trimmed, as one plain YAML line, and the plugin reads the same token.
        let trimmed = token.trim();
        let text = fs::read_to_string(&kubeconfig_path).unwrap();
        assert!(
            text.contains(&format!("\n    token: {trimmed}\n")),
            "{label}: token not written as one trimmed line:\n{text}"
        );
        let target = Target::parse(&text, &node.run).unwrap();
        assert_eq!(target.token.as_deref(), Some(trimmed), "{label}");
        // A second pass with the same token rewrites nothing and logs nothing secret either.
        let (result, log) = logged(|| installer.install_all());
        result.unwrap();
        assert_no_secret(&log, token);
    }
}

/// A token that is not one line of text cannot be a bearer token: a clear
/// error naming the file, without its content, and nothing written.
#[test]
fn a_token_with_inner_whitespace_or_control_bytes_is_refused_without_echoing_it() {
    let cases = [
        (
            "multi-line",
            "eyJhbGciOiJSUzI1NiJ9.Zmlyc3QtbGluZQ\nc2Vjb25kLWxpbmUtc2VjcmV0\n",
        ),
        ("inner-space", "eyJhbGciOiJSUzI1NiJ9.aW5uZXI c3BhY2Utc2VjcmV0"),
        ("control", "eyJhbGciOiJSUzI1NiJ9.Y29udHJvbA\u{1b}[31mZXNjYXBlLXNlY3JldA"),
        ("empty", "\n \n"),
    ];
    for (label, token) in cases {
        let node = calico_node_with_token(&format!("bad-token-{label}"), token);
        let (result, log) = logged(|| node.installer().install_all());
        let err = result.expect_err(label);
        assert!(matches!(err, InstallError::WriteKubeconfig(_)), "{label}: {err}");
        let message = err.to_string();
        assert!(
            message.contains(&node.sa.join("token").display().to_string()),
            "{message}"
        );
        for part in secret_parts(token).iter().flat_map(|p| p.split(['\u{1b}', ' '])) {
            if part.len() > 4 {
                assert!(!message.contains(part), "{label}: {part:?} in the error: {message}");
                assert!(!log.contains(part), "{label}: {part:?} in the log:\n{log}");
            }
        }
        assert!(!node.run.join("istio-cni-kubeconfig").exists(), "{label}");
        assert_eq!(node.read("10-calico.conflist"), CALICO, "{label}");
    }
}

/// `install_all` on another thread, failing the test instead of hanging it.
fn install_within(node: &Node, limit: Duration) -> Result<(), InstallError> {
    let mut installer = node.installer();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(installer.install_all());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("install_all still running after {limit:?}"))
}

fn replace_with_fifo(path: &Path) {
    let _ = fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A token or CA file named by configuration that is a FIFO, a device or
/// huge gives an error naming it, promptly, and nothing is written.
#[test]
fn fifo_device_and_oversized_token_or_ca_files_are_refused() {
    let node = Node::with_primary("token-files", "10-calico.conflist", CALICO);
    let fifo = |p: &Path| replace_with_fifo(p);
    let zero = |p: &Path| {
        fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", p).unwrap();
    };
    let huge = |p: &Path| fs::File::create(p).unwrap().set_len(5 << 20).unwrap();
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, &str, Make); 5] = [
        ("token", "a FIFO", &fifo),
        ("ca.crt", "a FIFO", &fifo),
        ("token", "a character device", &zero),
        ("token", "larger than the limit", &huge),
        ("ca.crt", "larger than the limit", &huge),
    ];
    for (name, why, make) in cases {
        node.rotate_token(TOKEN, "2025_01_01_00_00_00.1");
        // The kubelet's layout: `<sa>/token -> ..data/token`.
        let file = node.sa.join("..data").join(name);
        make(&file);
        let err = install_within(&node, Duration::from_secs(20)).expect_err(why);
        let message = err.to_string();
        assert!(
            matches!(err, InstallError::WriteKubeconfig(_))
                && message.contains(why)
                && message.contains(&node.sa.join(name).display().to_string()),
            "{name} {why}: {message}"
        );
        assert!(!node.run.join("istio-cni-kubeconfig").exists(), "{name} {why}");
        assert_eq!(node.read("10-calico.conflist"), CALICO, "{name} {why}");
        let _ = fs::remove_file(&file);
    }
}

/// One HTTP request over the Unix socket at `path`; the raw answer.
fn post(path: &Path, line: &str) -> std::io::Result<String> {
    let body = serde_json::to_string(&[line]).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST /log HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// [`post`] from a thread running as `uid`/`gid`. Credentials are per thread
/// in the kernel; the raw syscalls (unlike libc's wrappers, which apply them
/// to every thread of the process) change only this short-lived thread, and
/// the kernel records them as the connection's peer credentials.
fn post_as(uid: u32, gid: u32, path: &Path, line: &'static str) -> std::io::Result<String> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: plain syscalls on this thread's credentials; no memory is involved.
        let rc = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
        assert_eq!(rc, 0, "setresgid: {}", std::io::Error::last_os_error());
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        post(&path, line)
    })
    .join()
    .expect("the posting thread panicked")
}

const NOBODY: u32 = 65534;
const FORGED: &str = "FORGED-by-nobody: pod default/web is fine";

#[tokio::test(flavor = "current_thread")]
async fn the_log_socket_takes_lines_from_root_only() {
    if !testkit::gate("the_log_socket_takes_lines_from_root_only", &[testkit::Need::Root]) {
        return;
    }
    let scratch = testkit::Scratch::new("logsock-peer");
    // Traversable by everyone, so only the socket itself can keep others out.
    fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run_dir = scratch.join("run");
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let sock = istio_cni_agent::server::logsock::LogSocket::bind(&run_dir)
        .await
        .unwrap();
    fs::set_permissions(&run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = sock.path().to_path_buf();

    // As bound, nobody cannot even connect.
    let p = path.clone();
    let denied = tokio::task::spawn_blocking(move || post_as(NOBODY, NOBODY, &p, FORGED))
        .await
        .unwrap();
    assert_eq!(
        denied.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::PermissionDenied),
        "{denied:?}"
    );

    // Even when the file mode lets anyone connect (a umask-0 window at bind,
    // a chmod by someone else), the peer check refuses the connection.
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let p = path.clone();
    let forged = tokio::task::spawn_blocking(move || post_as(NOBODY, NOBODY, &p, FORGED))
        .await
        .unwrap();
    assert!(
        !forged.as_deref().unwrap_or("").starts_with("HTTP/1.1 200"),
        "{forged:?}"
    );
    let p = path.clone();
    let line = r#"{"level":"info","time":"t","msg":"ROOT-LINE accepted"}"#;
    let ok = tokio::task::spawn_blocking(move || post(&p, line))
        .await
        .unwrap()
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let log = capture.text();
    assert!(log.contains("ROOT-LINE accepted"), "{log}");
    assert!(!log.contains("FORGED"), "a line from uid {NOBODY} was accepted:\n{log}");
    assert!(
        log.contains(&format!("refused a connection from uid {NOBODY}")),
        "the refusal is logged:\n{log}"
    );
    assert_eq!(sock.refused(), 1);
    sock.close();
}

/// `kube_client` on another thread (in this runtime's context), failing
/// the test instead of hanging it.
fn kube_client_within(s: &istio_cni_agent::config::InstallSettings, limit: Duration) -> Result<kube::Client, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (s, runtime) = (s.clone(), tokio::runtime::Handle::current());
    std::thread::spawn(move || {
        let _context = runtime.enter();
        let _ = tx.send(istio_cni_agent::run::kube_client(&s));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("kube_client still running after {limit:?}"))
}

/// The repair controller's client reads the same token and CA files: a
/// FIFO or a device there fails its start with a clear error at once.
#[tokio::test(flavor = "current_thread")]
async fn the_repair_client_refuses_special_token_and_ca_files() {
    let node = Node::new("kube-client");
    let token = node.sa.join("..data/token");
    replace_with_fifo(&token);
    let mut s = node.settings();
    s.skip_tls_verify = true;
    let err = kube_client_within(&s, Duration::from_secs(20))
        .err()
        .expect("a FIFO token");
    assert!(
        err.contains(&node.sa.join("token").display().to_string()) && err.contains("a FIFO"),
        "{err}"
    );
    fs::remove_file(&token).unwrap();
    node.rotate_token(TOKEN, "2025_01_01_00_00_00.1");
    let ca = node.sa.join("..data/ca.crt");
    fs::remove_file(&ca).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &ca).unwrap();
    s.skip_tls_verify = false;
    let err = kube_client_within(&s, Duration::from_secs(20))
        .err()
        .expect("a device as CA");
    assert!(err.contains("ca.crt") && err.contains("a character device"), "{err}");
}
