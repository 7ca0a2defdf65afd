//! The pod GET of an ADD, against a counting HTTP server: the fast path is
//! one connection and one request with no wait before it; a failure is
//! retried (after the retry delay), and only then.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use istio_cni::api::{Client, Target};
use istio_cni::cni::add::{AddOutcome, FetchPolicy, NoCache, PodApi, Programmer, cmd_add};
use istio_cni::cni::config::NetConf;
use istio_cni::cni::error::CniError;
use istio_cni::cni::skel::{Command, Request};
use istio_cni::program::{Backend, ProgramError, Programmed};
use istio_cni::redirect::Redirect;

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default"},"spec":{"containers":[{"name":"web"}]}}"#;

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// Serves `POD` with keep-alive; the first `fail_first` requests get a 500.
fn server(fail_first: usize) -> (String, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            c.connections.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    // The request head, up to its blank line.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let n = c.requests.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = if n < fail_first {
                        ("500 Internal Server Error", r#"{"message":"etcd is down"}"#)
                    } else {
                        ("200 OK", POD)
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, counts)
}

struct Never;

impl Programmer for Never {
    fn program(&self, _: &Path, _: &Redirect, _: Backend) -> Result<Programmed, ProgramError> {
        panic!("a pod without the sidecar status is not programmed")
    }
}

fn add(url: &str, sleeps: &Mutex<Vec<Duration>>) -> Result<AddOutcome, CniError> {
    let request = Request {
        command: Command::Add,
        container_id: "c1".into(),
        netns: Some("/var/run/netns/x".into()),
        ifname: "eth0".into(),
        args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web".into(),
        path: "/opt/cni/bin".into(),
        netns_override: false,
    };
    let conf = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"istio-cni"}"#).expect("conf");
    let target = Target {
        server: url.to_owned(),
        ca_pem: None,
        insecure_skip_tls_verify: false,
        token: Some("t".into()),
    };
    let policy = FetchPolicy {
        attempts: 3,
        retry_delay: Duration::from_millis(7),
        request_timeout: Duration::from_secs(5),
    };
    let api = || -> Result<Box<dyn PodApi>, CniError> {
        Ok(Box::new(
            Client::new(target.clone(), policy.request_timeout).expect("client"),
        ))
    };
    cmd_add(&request, &conf, &NoCache, &api, &Never, policy, &|d| {
        sleeps.lock().expect("lock").push(d)
    })
}

#[test]
fn the_fast_path_is_one_connection_one_request_and_no_wait() {
    let (url, counts) = server(0);
    let sleeps = Mutex::new(Vec::new());
    let outcome = add(&url, &sleeps).expect("ADD");
    assert!(matches!(outcome, AddOutcome::Skipped(_)), "{outcome:?}");
    assert_eq!(counts.requests.load(Ordering::SeqCst), 1);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
    assert!(sleeps.lock().expect("lock").is_empty());
}

#[test]
fn a_failed_get_is_retried_after_the_delay_and_only_then() {
    let (url, counts) = server(1);
    let sleeps = Mutex::new(Vec::new());
    add(&url, &sleeps).expect("ADD succeeds on the second attempt");
    assert_eq!(counts.requests.load(Ordering::SeqCst), 2);
    assert_eq!(*sleeps.lock().expect("lock"), vec![Duration::from_millis(7)]);
    // The retry reuses the client's open connection.
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}
