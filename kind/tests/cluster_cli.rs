//! `istio-cni-cluster up` / `down` with kubectl, as a new user tries it.
//! Needs root and kubectl (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Kubectl, Need, Scratch};

#[test]
fn up_kubectl_down() {
    testkit::gate_or_return!(&[Need::Root, Need::Tool("kubectl")]);
    let home = Scratch::new("cluster-cli-kubectl");
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
    let kubectl = Kubectl::new("up_kubectl_down", Path::new(&kubeconfig), &home).expect("gated on kubectl");

    let nodes = kubectl.ok(&["get", "nodes"]);
    assert!(
        nodes.contains("node-0") && nodes.contains("node-1") && nodes.contains("Ready"),
        "{nodes}"
    );
    kubectl.ok(&["run", "echo", "--image=mesh-probe", "--", "echo", "--port", "8080"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let phase = kubectl.run(&["get", "pod", "echo", "-o", "jsonpath={.status.phase}"]);
        if phase.stdout == "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "echo not Running: {phase}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = kubectl.ok(&["logs", "echo"]);
    assert!(logs.contains("\"listening\""), "{logs}");

    let down = Command::new(env!("CARGO_BIN_EXE_istio-cni-cluster"))
        .args(["down", "--name", &name])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let status = up.wait().unwrap();
    assert!(status.success(), "up exits cleanly after down");
    assert!(!Path::new(&kubeconfig).exists(), "state removed");
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

/// A start that fails after its namespaces and root dir exist leaves
/// nothing in the temp dir (it used to leave its empty
/// `istio-cni-cluster-<pid>-0`). As nobody, `up` enters a user namespace
/// itself; without `ip` on its PATH the cluster then fails at its first
/// command.
#[test]
fn a_failed_unprivileged_up_leaves_nothing_behind() {
    use std::os::unix::fs::PermissionsExt;
    // The test drops to nobody.
    testkit::gate_or_return!(&[Need::Root, Need::Tool("setpriv")]);
    let scratch = Scratch::new("unprivileged-up");
    let tmp = scratch.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = scratch.join("istio-cni-cluster");
    testkit::place_exe(env!("CARGO_BIN_EXE_istio-cni-cluster").as_ref(), &bin).unwrap();
    let out = Command::new(testkit::on_path("setpriv").expect("gated on setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["up", "--name", "unprivileged"])
        .env("PATH", scratch.join("no-tools"))
        .env("TMPDIR", &tmp)
        .env("HOME", &tmp)
        .env("XDG_RUNTIME_DIR", &tmp)
        .output()
        .expect("setpriv runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("creating the cluster: harness loopback"), "{stderr}");
    assert_eq!(stderr.matches("creating the cluster").count(), 1, "{stderr}");
    let left = testkit::names_in(&tmp);
    assert!(left.is_empty(), "left in the temp dir: {left:?}");
}
