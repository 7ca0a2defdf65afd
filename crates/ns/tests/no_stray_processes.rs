//! A sandboxed command leaves no process behind its caller.
//!
//! A CNI plugin is exec'd by a runtime that waits for the plugin's pid and
//! nothing else; when the runtime is a child subreaper (or the pid
//! namespace's init does not reap), any process the plugin leaves behind
//! becomes the runtime's zombie for good. This test is such a runtime: it
//! marks itself a subreaper, runs a "plugin" (this binary again) that runs
//! one sandboxed command in its own netns, waits for that pid only, and
//! then looks at what it adopted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use linux_ns::Netns;
use linux_ns::exec::Job;
use linux_ns::sandbox::MountSandbox;

/// Set in the re-executed test binary: which plugin to be.
const ROLE: &str = "LINUX_NS_STRAY_ROLE";
/// The file the slow command creates once it runs.
const MARK: &str = "LINUX_NS_STRAY_MARK";

/// The re-executed binary's part: one sandboxed command, then exit.
fn plugin(role: &str) -> ! {
    let script = match role {
        "quick" => "true".to_owned(),
        _ => "touch \"$LINUX_NS_STRAY_MARK\"; exec sleep 1".to_owned(),
    };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let ns = Netns::open(Path::new("/proc/self/ns/net")).expect("own netns");
    let out = Job::new(cmd)
        .sandbox(MountSandbox::new([]))
        .run_in(&ns)
        .expect("sandboxed command");
    std::process::exit(if out.status.success() { 0 } else { 1 });
}

/// Children of this process, (pid, comm, state), zombies included.
fn adopted() -> Vec<(i32, String, char)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if rest.next() == Some(me.as_str()) {
            found.push((pid, comm, state));
        }
    }
    found
}

/// Reaps whatever of ours has exited, as a subreaper that does reap would.
fn reap_adopted() {
    loop {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[test]
fn a_sandboxed_command_leaves_no_process_behind_a_plugin_that_exits_or_is_killed() {
    if let Ok(role) = std::env::var(ROLE) {
        plugin(&role);
    }
    if !testkit::gate("no_stray_processes", &[testkit::Need::Root]) {
        return;
    }
    // SAFETY: a flag on this process; this binary holds this one test.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let me = std::env::current_exe().expect("test binary");
    let rerun = |role: &str| {
        let mut c = Command::new(&me);
        c.args([
            "--exact",
            "a_sandboxed_command_leaves_no_process_behind_a_plugin_that_exits_or_is_killed",
            "--nocapture",
        ])
        .env(ROLE, role);
        c
    };

    // A plugin that exits: the moment the runtime has its status, nothing
    // of it is left, alive or zombie, now or a little later.
    let status = rerun("quick").status().expect("run the plugin");
    assert!(status.success(), "{status}");
    assert_eq!(adopted(), vec![], "left behind by a plugin that exited");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(adopted(), vec![], "left behind by a plugin that exited (later)");

    // A plugin killed while its command runs: only the command itself is
    // orphaned, and it ends on its own.
    let scratch = testkit::Scratch::new("no_stray_processes");
    let mark = scratch.join("running");
    let mut child = rerun("slow").env(MARK, &mark).spawn().expect("run the plugin");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the sandboxed command never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL the plugin");
    child.wait().expect("reap the plugin");
    let others: Vec<_> = adopted().into_iter().filter(|(_, comm, _)| comm != "sleep").collect();
    assert_eq!(others, vec![], "adopted from a killed plugin besides its command");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        reap_adopted();
        let left = adopted();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still there: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
