//! `istio-cni-cluster up` as an ordinary user (`nobody`): it enters a user,
//! network and mount namespace itself, and kubectl run by the same user in
//! the namespaces the test started in (the user's "other shell") reaches its
//! API server through the kubeconfig it wrote. Needs root to become nobody,
//! and kubectl (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::{Kubectl, Need, Scratch};

const NOBODY: u32 = 65534;
const AS_NOBODY: [&str; 4] = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

/// `cmd` run as nobody (same program, arguments and environment).
fn as_nobody(cmd: &Command) -> Command {
    let mut c = Command::new(AS_NOBODY[0]);
    c.args(&AS_NOBODY[1..]).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// A directory only nobody can use, as a home.
fn nobodys_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.to_path_buf()
}

/// The binaries where nobody can run them: the build tree itself, or copies.
fn reachable_bins(scratch: &Path) -> PathBuf {
    let (cluster, probe) = (
        Path::new(env!("CARGO_BIN_EXE_istio-cni-cluster")),
        Path::new(env!("CARGO_BIN_EXE_mesh-probe")),
    );
    let dir = cluster.parent().expect("bin dir");
    let can_run = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .args(["test", "-x"])
        .arg(cluster)
        .args(["-a", "-x"])
        .arg(probe)
        .status()
        .is_ok_and(|s| s.success());
    if can_run && probe.parent() == Some(dir) {
        return dir.to_path_buf();
    }
    let copies = scratch.join("bin");
    std::fs::create_dir(&copies).unwrap();
    for bin in [cluster, probe] {
        std::fs::copy(bin, copies.join(bin.file_name().unwrap())).unwrap();
    }
    copies
}

/// The namespace `kind` (`net`, `user`) of process `pid`, as an inode.
fn ns(pid: impl std::fmt::Display, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).unwrap().ino()
}

/// `up` in the background; SIGTERM and reaped on drop (a failing test
/// leaves nothing running).
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn an_ordinary_user_runs_up_and_reaches_it_from_another_shell() {
    let test = testkit::test_name!();
    testkit::gate_or_return!(&[Need::Root, Need::Tool("setpriv"), Need::Tool("kubectl")]);
    let scratch = Scratch::new("rootless-up");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bins = reachable_bins(&scratch);
    let home = nobodys_dir(&scratch.join("home"));
    let (runtime_dir, tmp) = (nobodys_dir(&home.join("run")), nobodys_dir(&home.join("tmp")));
    let name = format!("rootless-{}", std::process::id());

    let mut up = Command::new(bins.join("istio-cni-cluster"));
    up.args(["up", "--name", &name, "--nodes", "2"])
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .env("TMPDIR", &tmp);
    let errors = scratch.join("up.stderr");
    let mut up = as_nobody(&up);
    let mut up = Up(up
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap());
    let stdout = up.0.stdout.take().unwrap();
    let (found, kubeconfig) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let path = lines
            .by_ref()
            .find_map(|l| l.strip_prefix("kubeconfig: ").map(PathBuf::from));
        let _ = found.send(path);
        // Keep reading: `up` prints again when it tears down.
        lines.for_each(drop);
    });
    let Ok(Some(kubeconfig)) = kubeconfig.recv_timeout(Duration::from_secs(60)) else {
        drop(up);
        let errors = std::fs::read_to_string(&errors).unwrap_or_default();
        panic!("up printed no kubeconfig path; stderr:\n{errors}");
    };

    // It entered namespaces of its own: nobody could not have made the
    // cluster's network namespaces otherwise.
    let pid = up.0.id();
    assert_ne!(ns(pid, "user"), ns("self", "user"), "up entered a user namespace");
    assert_ne!(ns(pid, "net"), ns("self", "net"), "up entered a network namespace");
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().uid(),
        NOBODY,
        "the kubeconfig is the user's"
    );
    let config = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(config.contains("server: https://127.0.0.1:"), "{config}");

    // kubectl as the same user, from the namespaces the test runs in.
    let kubectl = Kubectl::new(test, &kubeconfig, &home).expect("gated on kubectl");
    let run = |args: &[&str]| {
        let out = as_nobody(&kubectl.command(args)).stdin(Stdio::null()).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let nodes = run(&["get", "nodes"]);
    assert!(
        nodes.contains("node-0") && nodes.contains("node-1") && nodes.matches(" Ready ").count() == 2,
        "{nodes}"
    );
    run(&["run", "echo", "--image=mesh-probe", "--", "echo", "--port", "8080"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let phase = run(&["get", "pod", "echo", "-o", "jsonpath={.status.phase}"]);
        if phase == "Running" {
            break;
        }
        assert!(Instant::now() < deadline, "echo not Running: {phase:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run(&["exec", "echo", "--", "echo", "from the pod"]), "from the pod\n");

    let mut down = Command::new(bins.join("istio-cni-cluster"));
    down.args(["down", "--name", &name])
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime_dir);
    let down = as_nobody(&down).output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let status = up.0.wait().unwrap();
    assert!(status.success(), "up exits cleanly after down");
    assert!(!kubeconfig.exists(), "state removed");
    let left = testkit::names_in(&tmp);
    assert!(left.is_empty(), "left in the temp dir: {left:?}");
}
