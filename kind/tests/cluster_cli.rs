//! `istio-cni-cluster up` / `down` with kubectl, as a new user tries it.
//! Needs root and kubectl (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skip(reason: &str) {
    if std::env::var("ISTIO_CNI_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("cluster_cli: {reason} and ISTIO_CNI_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("SKIP: cluster_cli: {reason}");
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn up_kubectl_down() {
    if !nix::unistd::geteuid().is_root() {
        return skip("not root");
    }
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        return skip("kubectl not installed");
    }
    let name = format!("cli-test-{}", std::process::id());
    let mut up = Command::new(env!("CARGO_BIN_EXE_istio-cni-cluster"))
        .args(["up", "--name", &name, "--nodes", "2", "--cni", "bridge"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let kubeconfig = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("kubeconfig: ").map(str::to_string));
    let Some(kubeconfig) = kubeconfig else {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut err);
        panic!("up printed no kubeconfig path; stderr:\n{err}");
    };

    let (ok, nodes) = kubectl(&kubeconfig, &["get", "nodes"]);
    assert!(
        ok && nodes.contains("node-0") && nodes.contains("node-1") && nodes.contains("Ready"),
        "{nodes}"
    );
    let (ok, out) = kubectl(
        &kubeconfig,
        &["run", "echo", "--image=mesh-probe", "--", "echo", "--port", "8080"],
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pods) = kubectl(&kubeconfig, &["get", "pod", "echo", "-o", "jsonpath={.status.phase}"]);
        if pods == "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "echo not Running: {pods}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, logs) = kubectl(&kubeconfig, &["logs", "echo"]);
    assert!(ok && logs.contains("\"listening\""), "{logs}");

    let down = Command::new(env!("CARGO_BIN_EXE_istio-cni-cluster"))
        .args(["down", "--name", &name])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let status = up.wait().unwrap();
    assert!(status.success(), "up exits cleanly after down");
    assert!(!std::path::Path::new(&kubeconfig).exists(), "state removed");
}

/// A cluster of no nodes could run no pod: refused before anything starts.
#[test]
fn up_with_no_nodes_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_istio-cni-cluster"))
        .args(["up", "--name", "no-nodes", "--nodes", "0"])
        .output()
        .expect("istio-cni-cluster runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'--nodes <NODES>'") && stderr.contains("0 is not in 1.."),
        "{stderr}"
    );
}

/// An unprivileged start fails naming what it needs, and leaves nothing in
/// the temp dir (it used to leave its empty `istio-cni-cluster-<pid>-0`).
#[test]
fn a_failed_unprivileged_up_leaves_nothing_behind() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return skip("not root (the test drops to nobody)");
    }
    let scratch = testkit::Scratch::new("unprivileged-up");
    let tmp = scratch.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = scratch.join("istio-cni-cluster");
    std::fs::copy(env!("CARGO_BIN_EXE_istio-cni-cluster"), &bin).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["up", "--name", "unprivileged"])
        .env("TMPDIR", &tmp)
        .env("HOME", &tmp)
        .env("XDG_RUNTIME_DIR", &tmp)
        .output()
        .expect("setpriv runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("EPERM") && stderr.contains("needs root"), "{stderr}");
    assert_eq!(stderr.matches("creating the cluster").count(), 1, "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the temp dir: {left:?}");
}
