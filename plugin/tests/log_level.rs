//! `plugin_log_level` in the network config decides which of the plugin's
//! records reach the node agent's log socket.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;

use serde_json::json;

/// One ADD for a meshed-looking pod with no pod cache and no kubeconfig (it
/// fails closed, logging a debug line about the cache and an error), with
/// a fake agent on `log.sock`; returns the records the plugin posted.
fn records_at(level: &str) -> Vec<String> {
    let run_dir = support::Scratch::new(&format!("log-level-{level}"));
    let listener = UnixListener::bind(run_dir.join("log.sock")).unwrap();
    let agent = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).unwrap();
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap();
                if body.len() >= length {
                    break;
                }
            }
            assert!(n > 0, "request cut short");
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        let text = String::from_utf8(request).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
        serde_json::from_str::<Vec<String>>(&body).unwrap()
    });
    add(&run_dir, level);
    agent.join().unwrap()
}

fn add(run_dir: &Path, level: &str) {
    let conf = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
        "cni_agent_run_dir": run_dir, "plugin_log_level": level});
    let out = support::add_web_pod(&conf, None);
    assert_eq!(out.status.code(), Some(1), "no kubeconfig: fails closed");
}

fn has(records: &[String], level: &str, text: &str) -> bool {
    records
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .any(|r| r["level"] == level && r["msg"].as_str().is_some_and(|m| m.contains(text)))
}

#[test]
fn the_configured_level_decides_what_the_agent_receives() {
    let debug = records_at("debug");
    assert!(has(&debug, "debug", "node agent's cache"), "{debug:?}");
    assert!(has(&debug, "error", "kubeconfig"), "{debug:?}");

    let info = records_at("info");
    assert!(!has(&info, "debug", "node agent's cache"), "{info:?}");
    assert!(has(&info, "error", "kubeconfig"), "{info:?}");
}
