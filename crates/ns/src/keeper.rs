//! Releasing a throw-away thread's namespaces off the caller's critical path.
//!
//! When the last task leaves a mount namespace, the kernel unmounts the
//! whole copied tree and waits out an RCU grace period before that task's
//! exit completes (5–30 ms on a loaded 2-core VM, docs/perf.md). For a
//! sandbox thread that task is the thread itself, and a process is not
//! reported dead until all of its threads are: a CNI plugin's runtime waits
//! for that grace period on every sandboxed command.
//!
//! A keeper is a forked child that does nothing but hold the namespaces of
//! the thread that forked it, until that thread exits: `PR_SET_PDEATHSIG`
//! follows the creating *thread*, and the signal is sent after the exiting
//! thread has left its namespaces. The keeper is then the last member, and
//! its exit pays the grace period; nothing waits for it. A keeper is reaped
//! by the next [`hold_current_namespaces`] call of the process or, once the
//! process exits, by init.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, read};

/// Keepers forked by this process and not reaped yet.
static KEEPERS: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

/// Forks a keeper of the calling thread's namespaces (see the module docs)
/// and waits until it is armed. Returns its pid, or `None` when it could
/// not be forked: the thread's exit then releases the namespaces itself,
/// which costs time but nothing else.
pub fn hold_current_namespaces() -> Option<Pid> {
    reap_finished();
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).ok()?;
    // SAFETY: the child runs only async-signal-safe system calls
    // (prctl, write, close_range/close, pause, _exit) and never returns
    // into Rust code that could allocate or take a lock.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => keep(ready_w.as_raw_fd()),
        Ok(ForkResult::Parent { child }) => {
            drop(ready_w);
            let armed = wait_armed(&ready_r);
            if let Ok(mut keepers) = KEEPERS.lock() {
                keepers.push(child);
            }
            armed.then_some(child)
        }
        Err(_) => None,
    }
}

/// One byte from the keeper: it is armed. EOF: it died before that.
fn wait_armed(ready: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match read(ready, &mut byte) {
            Ok(n) => return n == 1,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// The keeper's whole life.
fn keep(ready: libc::c_int) -> ! {
    // SAFETY: plain system calls on this process's own state.
    unsafe {
        // The forking thread waits for the byte below, so it is alive when
        // the death signal is armed: no race with its exit.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        let _ = libc::write(ready, [1u8].as_ptr().cast(), 1);
        // Hold nothing but namespaces: no pipe of the caller stays open.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
        loop {
            libc::pause();
        }
    }
}

/// Reaps keepers that have exited (never blocks).
fn reap_finished() {
    let Ok(mut keepers) = KEEPERS.lock() else {
        return;
    };
    keepers.retain(|&pid| matches!(waitpid(pid, Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn ns_of(pid: Pid, ns: &str) -> Option<std::path::PathBuf> {
        std::fs::read_link(Path::new("/proc").join(pid.to_string()).join("ns").join(ns)).ok()
    }

    fn state(pid: Pid) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    #[test]
    fn a_keeper_holds_the_threads_namespaces_and_dies_with_the_thread() {
        let (pid, mnt) = std::thread::spawn(|| {
            let pid = hold_current_namespaces().expect("fork a keeper");
            (pid, std::fs::read_link("/proc/thread-self/ns/mnt").unwrap())
        })
        .join()
        .unwrap();
        // Its namespaces were the thread's (readable until it is gone).
        if let Some(keeper_mnt) = ns_of(pid, "mnt") {
            assert_eq!(keeper_mnt, mnt);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(state(pid), Some('Z') | None) {
            assert!(Instant::now() < deadline, "keeper {pid} outlived its thread");
            std::thread::sleep(Duration::from_millis(5));
        }
        hold_current_namespaces_reaps(pid);
    }

    /// The next call reaps the dead keeper.
    fn hold_current_namespaces_reaps(dead: Pid) {
        let next = std::thread::spawn(hold_current_namespaces).join().unwrap();
        assert!(
            !KEEPERS.lock().unwrap().contains(&dead),
            "the dead keeper {dead} was reaped"
        );
        assert!(state(dead).is_none(), "no zombie left");
        let _ = next;
    }

    #[test]
    fn a_keeper_holds_no_file_of_the_caller() {
        let pid = std::thread::spawn(|| {
            let pid = hold_current_namespaces().expect("fork a keeper");
            // While the thread lives, the keeper is armed and has no fds.
            let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(fds.is_empty(), "keeper fds: {fds:?}");
            pid
        })
        .join()
        .unwrap();
        let _ = pid;
    }
}
