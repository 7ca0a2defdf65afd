//! A kill at any instant leaves every file old or new, never torn: a child
//! process loops install/cleanup on a node dir and is SIGKILLed at random
//! points, 200 times; after each kill every config parses and the primary
//! is either the original or the installed version.

mod install_common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use install_common::*;
use istio_cni_agent::install::atomic::is_temp_name;
use istio_cni_agent::install::{Installer, uninstall};
use istio_cni_agent::metrics::Metrics;

const CHILD_ENV: &str = "ISTIO_CNI_INSTALL_CRASH_NODE";

/// The child: install, clean up (alternately through the agent and through
/// `uninstall`), forever, until killed.
#[test]
#[ignore = "helper process of killed_at_random_points_never_tears_a_file"]
fn crash_child() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let settings = settings_at(Path::new(&root));
    for pass in 0u64.. {
        let mut installer = Installer::new(settings.clone(), "info".into(), Metrics::new());
        let _ = installer.install_all();
        if pass % 2 == 0 {
            let _ = installer.cleanup();
        } else {
            let _ = uninstall(&settings);
        }
    }
}

/// xorshift64: random kill delays without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Case {
    node: Node,
    file: &'static str,
    original: &'static str,
    installed: String,
    seen_original: u32,
    seen_installed: u32,
}

impl Case {
    fn new(label: &str, file: &'static str, original: &'static str) -> Case {
        let node = Node::new(label);
        node.write(file, original);
        let mut installer = node.installer();
        installer.install_all().unwrap();
        let installed_name = installer.current_path().unwrap().to_path_buf();
        let installed = fs::read_to_string(installed_name).unwrap();
        installer.cleanup().unwrap();
        assert_eq!(node.read(file), original);
        Case {
            node,
            file,
            original,
            installed,
            seen_original: 0,
            seen_installed: 0,
        }
    }

    /// Every config parses; the primary is the original or the installed
    /// version (a converted `.conf` may briefly coexist with its `.conflist`,
    /// and then the runtime uses the `.conf`, which sorts first).
    fn check(&mut self, iteration: usize) {
        let list_name = if self.file.ends_with(".conf") {
            format!("{}list", self.file)
        } else {
            self.file.to_string()
        };
        let mut primary = None;
        let mut list = None;
        for name in self.node.conf_files() {
            if is_temp_name(&name) {
                continue;
            }
            let text = self.node.read(&name);
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("iteration {iteration}: {name} torn: {e}\n{text}"));
            if name == self.file {
                primary = Some(text);
            } else if name == list_name {
                list = Some(text);
            } else {
                panic!("iteration {iteration}: unexpected file {name}");
            }
        }
        let ctx = format!("iteration {iteration}: {primary:?} / {list:?}");
        match (primary.as_deref(), list.as_deref()) {
            (Some(p), None) if p == self.original => self.seen_original += 1,
            (Some(p), None) if p == self.installed => self.seen_installed += 1,
            (None, Some(l)) if l == self.installed && list_name != self.file => self.seen_installed += 1,
            (Some(p), Some(l)) if p == self.original && l == self.installed => self.seen_original += 1,
            _ => panic!("{ctx}"),
        }
        for dir in [&self.node.run, &self.node.bin] {
            for e in fs::read_dir(dir).into_iter().flatten() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                if name.ends_with(".json") || name.ends_with("kubeconfig") {
                    let text = fs::read_to_string(e.path()).unwrap();
                    serde_yaml::from_str::<serde_yaml::Value>(&text)
                        .unwrap_or_else(|err| panic!("iteration {iteration}: {name} torn: {err}\n{text}"));
                }
            }
        }
    }
}

#[test]
fn killed_at_random_points_never_tears_a_file() {
    let exe = std::env::current_exe().unwrap();
    let mut cases = [
        Case::new("crash-list", "10-calico.conflist", CALICO),
        Case::new("crash-conf", "10-bridge.conf", BRIDGE_CONF),
    ];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill delay seed {seed}");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    for i in 0..200 {
        let case = &mut cases[i % 2];
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "crash_child", "--test-threads=1"])
            .env(CHILD_ENV, &case.node.scratch.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(20_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        case.check(i);
    }
    eprintln!("200 kills in {:?}", started.elapsed());
    for case in &mut cases {
        eprintln!(
            "{}: killed with the original in place {} times, with the installed version {} times",
            case.file, case.seen_original, case.seen_installed
        );
        assert!(
            case.seen_original > 0 && case.seen_installed > 0,
            "{}: kills landed in both states (original {}, installed {})",
            case.file,
            case.seen_original,
            case.seen_installed
        );
        // The node converges: one pass installs, cleanup restores, no temp file is left.
        let mut installer = case.node.installer();
        installer.install_all().unwrap();
        assert_eq!(
            fs::read_to_string(installer.current_path().unwrap()).unwrap(),
            case.installed
        );
        installer.cleanup().unwrap();
        assert_eq!(case.node.conf_files(), [case.file]);
        assert_eq!(case.node.read(case.file), case.original);
        let run_left: Vec<_> = fs::read_dir(&case.node.run)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(run_left.is_empty(), "{run_left:?}");
        let bin_left: Vec<_> = fs::read_dir(&case.node.bin)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(bin_left, ["istio-iptables"]);
    }
}
