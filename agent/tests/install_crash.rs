//! The real agent binary killed at random instants: during install
//! (SIGKILL), during cleanup (SIGTERM, then SIGKILL a random instant later)
//! and during `istio-cni-agent uninstall` (SIGKILL). After every kill the
//! primary config parses and is the original or the installed text; a
//! restarted agent converges and its cleanup restores the original byte for
//! byte; an `uninstall` leaves no file of ours. Also: SIGTERM at any instant
//! after start cleans up, and `uninstall` removes what a kill mid-install
//! leaves (temp files, the log socket) or fails naming it.

mod install_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use install_common::agent::*;
use install_common::*;
use istio_cni_agent::install::atomic::is_temp_name;
use nix::sys::signal::Signal;

/// How long a healthy agent may take to install or exit (a loaded 2-CPU
/// machine included); past it the test fails rather than hangs.
const PATIENCE: Duration = Duration::from_secs(20);

/// xorshift64: random kill instants without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("ISTIO_CNI_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill instants: ISTIO_CNI_CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// A uniformly random instant in `[0, max]`.
    fn instant(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }
}

/// The text our install gives the node's primary (computed in-process; the
/// binary's output is compared with it), and the name it ends up under.
fn installed_text(node: &Node) -> (String, String) {
    let mut installer = node.installed();
    let path = installer.current_path().unwrap().to_path_buf();
    let text = fs::read_to_string(&path).unwrap();
    installer.cleanup().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    (text, name)
}

/// Starts the agent and waits until the node is installed and the agent
/// owns SIGTERM (it has a second thread: it blocks the signals before
/// starting any; a node installed before the start would otherwise let a
/// SIGTERM land in the dynamic loader); panics with its log otherwise.
fn start_installed(node: &Node, list: &str, installed: &str) -> std::process::Child {
    let mut child = node.agent_command(false).spawn().unwrap();
    if !wait_until(PATIENCE, || {
        threads(&child).is_some_and(|n| n > 1) && node.is_installed(list, installed)
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the agent did not install within {PATIENCE:?}: {:?}\n{}",
            node.conf_files(),
            node.agent_log_tail()
        );
    }
    child
}

/// SIGTERM, then the exit; panics when it takes longer than [`PATIENCE`].
fn terminate(node: &Node, child: &mut std::process::Child) -> std::process::ExitStatus {
    signal(child, Signal::SIGTERM);
    wait_for_exit(child, PATIENCE).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no exit within {PATIENCE:?} of SIGTERM\n{}", node.agent_log_tail())
    })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Spawn {
    /// As a container runtime starts it.
    Plain,
    /// SIGTERM/SIGINT blocked at exec: a signal sent during the dynamic
    /// loader's run is pending when `main` starts.
    PendingAtExec,
}

/// A restarted agent that finds its SIGKILLed predecessor's installation
/// and gets SIGTERM at once, or a few milliseconds later, or once settled,
/// always removes it. The one instant no process can own is before its
/// first instruction (the dynamic loader: milliseconds for this debug
/// binary on a loaded machine): a SIGTERM that finds the agent still
/// single-threaded may land there and kill it by default action, and then
/// nothing of the node may have changed. Once the agent has a second thread
/// (its first act is to block the signals, before any thread exists), the
/// signal must lead to cleanup.
#[test]
fn sigterm_at_any_instant_after_start_cleans_up() {
    let node = Node::new("sigterm");
    let file = "10-calico.conflist";
    node.write(file, CALICO);
    let (installed, list) = installed_text(&node);
    let mut attempts: Vec<(Spawn, Duration)> = [0, 0, 0, 1, 2, 5]
        .into_iter()
        .map(|ms| (Spawn::PendingAtExec, Duration::from_millis(ms)))
        .collect();
    let plain_us = [
        0, 0, 0, 100, 250, 500, 750, 1_000, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 10_000,
        12_000, 15_000, 20_000, 25_000, 30_000, 40_000, 60_000, 100_000, 200_000,
    ];
    attempts.extend(plain_us.map(|us| (Spawn::Plain, Duration::from_micros(us))));
    // On a loaded machine the loader can outlast many of the short delays:
    // settled attempts are added until enough reached the agent.
    const ENOUGH: usize = 20;
    let settled = Duration::from_millis(500);
    let (mut cleaned, mut before_main) = (0, 0);
    let mut next = 0;
    while next < attempts.len() || (cleaned < ENOUGH && next < attempts.len() + ENOUGH) {
        let (spawn, delay) = attempts.get(next).copied().unwrap_or((Spawn::Plain, settled));
        next += 1;
        // The predecessor: installed, then SIGKILLed (entry, binary,
        // kubeconfig, state file and a stale log socket stay).
        let mut predecessor = start_installed(&node, &list, &installed);
        predecessor.kill().unwrap();
        predecessor.wait().unwrap();
        let before = node.snapshot();

        let mut cmd = node.agent_command(false);
        if spawn == Spawn::PendingAtExec {
            block_termination_at_exec(&mut cmd);
        }
        let mut child = cmd.spawn().unwrap();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let threads = threads(&child);
        let status = terminate(&node, &mut child);
        let what = format!("{spawn:?} SIGTERM {delay:?} after spawn ({threads:?} threads)");
        if status.success() {
            node.check_clean(file, CALICO)
                .unwrap_or_else(|e| panic!("{what}: exit 0 but {e}\n{}", node.agent_log_tail()));
            cleaned += 1;
        } else if killed_by(status) == Some(Signal::SIGTERM) && spawn == Spawn::Plain && threads == Some(1) {
            assert!(
                node.snapshot() == before,
                "{what}: killed before main, yet the node changed"
            );
            before_main += 1;
            // The node is still the predecessor's: start from a clean one.
            node.agent_command(true).status().unwrap();
        } else {
            panic!(
                "{what}: {status}; node: {:?}\n{}",
                node.check_clean(file, CALICO),
                node.agent_log_tail()
            );
        }
        assert_eq!(node.read(file), CALICO);
    }
    eprintln!(
        "SIGTERM after a SIGKILLed predecessor: {} attempts, {cleaned} cleaned up (exit 0, node as before the first install), \
         {before_main} landed before main (single-threaded, killed by default action, node untouched)",
        cleaned + before_main
    );
    assert!(cleaned >= ENOUGH, "too few attempts reached the agent: {cleaned}");
}

/// The repair controller's start waits up to 30 s for the API server's
/// first pod list; a SIGTERM meanwhile (an unreachable API server here)
/// ends the wait and cleans up at once, within a kubelet's grace period.
#[test]
fn sigterm_while_the_repair_controller_starts_cleans_up() {
    let node = Node::new("sigterm-repair");
    let file = "10-calico.conflist";
    node.write(file, CALICO);
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = refused.local_addr().unwrap().port();
    drop(refused); // nothing listens: every list is refused and retried
    let mut s = node.settings();
    s.kubernetes_service_host = "127.0.0.1".into();
    s.kubernetes_service_port = port.to_string();
    s.skip_tls_verify = true;
    let (installed, list) = {
        let mut installer = node.installer_with(s.clone());
        installer.install_all().unwrap();
        let path = installer.current_path().unwrap().to_path_buf();
        let text = fs::read_to_string(&path).unwrap();
        installer.cleanup().unwrap();
        (text, path.file_name().unwrap().to_str().unwrap().to_string())
    };
    let mut child = node
        .agent_command_with(false, &s)
        .args(["--repair-repair-pods", "true"])
        .spawn()
        .unwrap();
    let starting = wait_until(PATIENCE, || {
        node.is_installed(&list, &installed) && node.agent_log_tail().contains("starting CNI sidecar repair controller")
    });
    if !starting {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the repair controller did not start:\n{}", node.agent_log_tail());
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    signal(&child, Signal::SIGTERM);
    let status = wait_for_exit(&mut child, Duration::from_secs(5));
    let took = sent.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} {took:?} after SIGTERM\n{}",
        node.agent_log_tail()
    );
    node.check_clean(file, CALICO).unwrap();
    eprintln!("SIGTERM during the repair controller's start: exit 0 and the node clean {took:?} later");
}

/// What a kill mid-install leaves besides our entry: a temp file of each
/// file the agent writes, holding a token in the kubeconfig's case, and the
/// log and pod cache sockets of the dead agent. `uninstall` removes all of it, saying so;
/// someone else's files stay.
#[test]
fn uninstall_removes_what_a_kill_mid_install_leaves() {
    let node = Node::with_primary("uninstall-leftovers", "10-calico.conflist", CALICO);
    node.installed();
    let temps = [
        node.bin.join("istio-cni.tmp.4242000001"),
        node.bin.join("istio-iptables.tmp.4242000002"),
        node.run.join("istio-cni-kubeconfig.tmp.4242000003"),
        node.run.join("istio-cni-install-state.json.tmp.4242000004"),
        node.conf.join("10-calico.conflist.tmp.4242000005"),
    ];
    for t in &temps {
        fs::write(t, format!("token: {TOKEN}\n")).unwrap();
        fs::set_permissions(t, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let sockets = [node.run.join("log.sock"), node.run.join("pods.sock")];
    for socket in &sockets {
        drop(UnixListener::bind(socket).unwrap());
    }
    let others = [node.conf.join("99-other.conflist.tmp.1"), node.bin.join("bridge.tmp.1")];
    for o in &others {
        fs::write(o, "someone else's").unwrap();
    }

    let out = node.agent_command(true).stdout(Stdio::piped()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        node.agent_log_tail()
    );
    for path in temps.iter().chain(&sockets) {
        assert!(
            stdout.contains(&format!("deleted {}", path.display())),
            "the report names {}:\n{stdout}",
            path.display()
        );
    }
    for o in &others {
        fs::remove_file(o).unwrap();
    }
    node.check_clean("10-calico.conflist", CALICO).unwrap();

    let again = node.agent_command(true).stdout(Stdio::piped()).output().unwrap();
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), "nothing to clean up\n");
}

/// A file of ours that cannot be removed (here a kubeconfig temp file with
/// a file bind-mounted over it, in a private mount namespace: EBUSY even
/// for root) makes `uninstall` exit non-zero naming it, after removing
/// everything else.
#[test]
fn uninstall_fails_naming_a_leftover_it_cannot_remove() {
    if !testkit::gate(
        "uninstall_fails_naming_a_leftover_it_cannot_remove",
        &[testkit::Need::Root],
    ) {
        return;
    }
    let node = Node::with_primary("uninstall-stuck", "10-calico.conflist", CALICO);
    node.installed();
    let stuck = node.run.join("istio-cni-kubeconfig.tmp.4242000001");
    fs::write(&stuck, format!("token: {TOKEN}\n")).unwrap();
    let cover = node.scratch.join("cover");
    fs::write(&cover, "").unwrap();

    let uninstall = node.agent_command(true);
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$0" "$1" && shift && exec "$@""#)
        .arg(&cover)
        .arg(&stuck)
        .arg(uninstall.get_program())
        .args(uninstall.get_args())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0 with a leftover:\n{stderr}");
    assert!(
        stderr.contains("could not remove everything of ours")
            && stderr.contains(&format!("could not remove {}", stuck.display()))
            && stderr.contains("busy"),
        "{stderr}"
    );
    // Everything else went, the report says so.
    assert!(stderr.contains("restored"), "{stderr}");
    assert_eq!(node.read("10-calico.conflist"), CALICO);
    assert!(!node.bin.join("istio-cni").exists());
    assert!(!node.run.join("istio-cni-kubeconfig").exists());
    // Outside the namespace the mount is gone: a second run finishes the job.
    let again = node.agent_command(true).stdout(Stdio::piped()).output().unwrap();
    assert!(again.status.success());
    assert!(!stuck.exists());
}

/// What a primary looked like after a kill.
#[derive(Default, Debug, Clone, Copy)]
struct Seen {
    original: u32,
    installed: u32,
    other: u32,
}

const PHASES: [&str; 3] = ["install", "cleanup", "uninstall"];

struct Case {
    node: Node,
    file: &'static str,
    list: String,
    original: &'static str,
    installed: String,
    /// Spawn to installed, SIGTERM to exit, spawn to `uninstall`'s exit:
    /// the windows the kill instants are drawn from.
    windows: [Duration; 3],
    seen: [Seen; 3],
    torn: u32,
    uninstalls: u32,
    leftovers: u32,
}

impl Case {
    fn new(label: &str, file: &'static str, original: &'static str) -> Case {
        let node = Node::with_primary(label, file, original);
        let (installed, list) = installed_text(&node);
        let mut case = Case {
            node,
            file,
            list,
            original,
            installed,
            windows: [Duration::ZERO; 3],
            seen: [Seen::default(); 3],
            torn: 0,
            uninstalls: 0,
            leftovers: 0,
        };
        // The windows, from the slowest of three clean runs.
        for _ in 0..3 {
            let (install, cleanup) = case.converge();
            let started = Instant::now();
            case.uninstall();
            let uninstall = started.elapsed();
            for (w, t) in case.windows.iter_mut().zip([install, cleanup, uninstall]) {
                *w = (*w).max(t + t / 4);
            }
        }
        case
    }

    /// A restarted agent installs exactly the expected text, and its
    /// SIGTERM cleanup restores the original byte for byte; returns how
    /// long each took.
    fn converge(&mut self) -> (Duration, Duration) {
        let started = Instant::now();
        let mut child = start_installed(&self.node, &self.list, &self.installed);
        let install = started.elapsed();
        let started = Instant::now();
        let status = terminate(&self.node, &mut child);
        let cleanup = started.elapsed();
        assert!(status.success(), "{status}\n{}", self.node.agent_log_tail());
        self.node
            .check_clean(self.file, self.original)
            .unwrap_or_else(|e| panic!("after the agent's cleanup: {e}\n{}", self.node.agent_log_tail()));
        (install, cleanup)
    }

    /// `istio-cni-agent uninstall` to the end: exit 0 and nothing of ours left.
    fn uninstall(&mut self) {
        let status = self.node.agent_command(true).status().unwrap();
        assert!(status.success(), "uninstall: {status}\n{}", self.node.agent_log_tail());
        self.uninstalls += 1;
        let left = self.node.leftovers();
        self.leftovers += left.len() as u32;
        assert!(left.is_empty(), "left after uninstall: {left:?}");
        assert_eq!(self.node.conf_files(), [self.file]);
        assert_eq!(self.node.read(self.file), self.original);
    }

    /// One kill in `phase` at a random instant of its window.
    fn kill(&mut self, phase: usize, rng: &mut Rng) {
        let window = self.windows[phase];
        let mut child = match phase {
            0 => self.node.agent_command(false).spawn().unwrap(),
            1 => {
                let child = start_installed(&self.node, &self.list, &self.installed);
                signal(&child, Signal::SIGTERM);
                child
            }
            _ => self.node.agent_command(true).spawn().unwrap(),
        };
        std::thread::sleep(rng.instant(window));
        child.kill().unwrap(); // SIGKILL; a child that already exited is only reaped
        child.wait().unwrap();
    }

    /// After a kill: every config parses (else torn), and what the runtime
    /// reads is the original or the installed text. A converted `.conf`
    /// may coexist with its `.conflist` for an instant; the runtime then
    /// reads the `.conf`, which sorts first.
    fn check(&mut self, phase: usize, kill: usize) {
        let mut primary = None;
        let mut list = None;
        for name in self.node.conf_files() {
            if is_temp_name(&name) {
                continue;
            }
            let text = self.node.read(&name);
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                self.torn += 1;
                panic!("kill {kill} ({}): {name} torn: {e}\n{text}", PHASES[phase]);
            }
            if name == self.file {
                primary = Some(text);
            } else if name == self.list {
                list = Some(text);
            } else {
                panic!("kill {kill}: unexpected file {name}");
            }
        }
        let seen = &mut self.seen[phase];
        match (primary.as_deref(), list.as_deref()) {
            (Some(p), None) if p == self.original => seen.original += 1,
            (Some(p), None) if p == self.installed => seen.installed += 1,
            (None, Some(l)) if l == self.installed => seen.installed += 1,
            (Some(p), Some(l)) if p == self.original && l == self.installed => seen.original += 1,
            _ => seen.other += 1,
        }
        assert_eq!(
            seen.other, 0,
            "kill {kill} ({}): the primary is neither the original nor installed: {primary:?} / {list:?}",
            PHASES[phase]
        );
        for dir in [&self.node.run, &self.node.bin] {
            for e in fs::read_dir(dir).into_iter().flatten() {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if name.ends_with(".json") || name.ends_with("kubeconfig") {
                    let text = fs::read_to_string(&path).unwrap();
                    if let Err(err) = serde_yaml::from_str::<serde_yaml::Value>(&text) {
                        self.torn += 1;
                        panic!("kill {kill}: {name} torn: {err}\n{text}");
                    }
                }
            }
        }
    }
}

#[test]
fn killed_at_random_instants_never_tears_the_primary() {
    const KILLS: usize = 240;
    let started = Instant::now();
    let mut cases = [
        Case::new("crash-list", "10-calico.conflist", CALICO),
        Case::new("crash-conf", "10-bridge.conf", BRIDGE_CONF),
    ];
    let mut rng = Rng::seeded();
    for kill in 0..KILLS {
        let case = &mut cases[kill % 2];
        let phase = rng.below(3) as usize;
        case.kill(phase, &mut rng);
        case.check(phase, kill);
        // Now and then an uninstall to the end: no temp file survives it.
        if rng.below(8) == 0 {
            case.uninstall();
        }
    }
    for case in &mut cases {
        case.converge();
        case.uninstall();
    }
    let elapsed = started.elapsed();
    eprintln!("{KILLS} kills of the real agent in {elapsed:.1?}");
    for case in &cases {
        let windows: Vec<String> = case.windows.iter().map(|w| format!("{w:.1?}")).collect();
        eprintln!(
            "{}: kill windows (install, cleanup, uninstall) {}; torn {}; uninstalls run to the end {}, leftovers after them {}",
            case.file,
            windows.join(", "),
            case.torn,
            case.uninstalls,
            case.leftovers
        );
        for (phase, seen) in PHASES.iter().zip(case.seen) {
            eprintln!(
                "  killed during {phase:9}: {:3} times; the primary was the original {:3}, installed {:3}, other {}",
                seen.original + seen.installed + seen.other,
                seen.original,
                seen.installed,
                seen.other
            );
        }
        let all = case.seen.iter().fold(Seen::default(), |a, s| Seen {
            original: a.original + s.original,
            installed: a.installed + s.installed,
            other: a.other + s.other,
        });
        assert!(
            all.original > 0 && all.installed > 0,
            "{}: kills landed in both states",
            case.file
        );
    }
}
