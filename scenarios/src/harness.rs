//! Root for the scenario tests, as `cargo test -p scenarios` runs them.
//!
//! The embedded cluster needs root. An ordinary user's test re-runs itself,
//! alone, as root of a new user, network and mount namespace (what `ci/test`
//! and the conformance runner do: `unshare --map-auto --map-root-user`, uids
//! from the user's `/etc/subuid` range), and passes only when that run passed
//! the test. When the namespace cannot be had the test fails saying why: a
//! scenario that did not run is never reported as passed.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::catalog;
use crate::env::{Env, Target};
use crate::scenario::Outcome;

/// Set in the re-run test binary, so it never re-runs itself again.
pub const MARK: &str = "ISTIO_CNI_SCENARIOS_USERNS";

/// `unshare` running `program` as root of a new user, network and mount
/// namespace: uids from the caller's subordinate range (`--map-auto`), a
/// private `/run`, `lo` up. `label` is the shell's `$0` (for its messages).
/// Shared by the scenario tests and the conformance runner.
pub fn userns_command(label: &str, program: &Path) -> Command {
    const SCRIPT: &str = "mount -t tmpfs tmpfs /run && ip link set lo up && exec \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--map-auto",
        "--map-root-user",
        "--net",
        "--mount",
        "--propagation",
        "private",
    ])
    .args(["sh", "-c", SCRIPT, label])
    .arg(program);
    cmd
}

/// Whether the calling test should run its body here: true as root. As an
/// ordinary user the test has already run in a user namespace when this
/// returns false (and passed: a failure there panics here); it panics when
/// no namespace can be had. Unlike `testkit::gate` it never skips: a
/// scenario that did not run never passes.
pub fn as_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if let Err(why) = rerun_as_root(test, std::env::var_os(MARK).is_some()) {
        panic!("{test}: {why}");
    }
    false
}

/// Runs the current test (libtest names its thread after it) once more,
/// alone, in a user namespace where this process's user is root.
fn rerun_as_root(test: &str, inside: bool) -> Result<(), String> {
    if inside {
        return Err("not root even inside the user namespace made for the test".into());
    }
    if let Some(why) = missing() {
        return Err(why);
    }
    let current = std::thread::current();
    let name = current
        .name()
        .filter(|n| *n != "main")
        .ok_or("not root, and cannot tell which test to re-run as root (no test thread name)")?;
    let exe = std::env::current_exe().map_err(|e| format!("finding the test binary: {e}"))?;
    eprintln!("{test}: not root: re-running {name} as root of a user namespace");
    let output = userns_command("scenario-test", &exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(MARK, "1")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running unshare (util-linux) for the user namespace: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stdout}");
    // libtest exits 0 when --exact matched nothing: demand the one pass.
    if output.status.success() && stdout.contains("test result: ok. 1 passed") {
        Ok(())
    } else if output.status.success() {
        Err(format!("the re-run as root in a user namespace did not run {name}"))
    } else {
        Err(format!("failed as root of a user namespace ({})", output.status))
    }
}

/// Runs the catalog's scenario `name` (or the one whose name starts with
/// it, when it ends in `/`) on the embedded cluster, as root ([`as_root`]),
/// printing its timeline; `None` when it already ran in a user namespace.
pub fn run_local(name: &str) -> Option<Outcome> {
    if !as_root(name) {
        return None;
    }
    let env = Env::new(Target::Local).unwrap_or_else(|e| panic!("{name}: locating the workspace binaries: {e}"));
    let scenario = catalog::all()
        .into_iter()
        .find(|s| s.name == name || (name.ends_with('/') && s.name.starts_with(name)))
        .unwrap_or_else(|| panic!("no scenario {name}"));
    let outcome = scenario.run(&env);
    outcome.eprint();
    Some(outcome)
}

/// Why this user cannot get a user namespace with a range of uids, if it cannot.
pub fn missing() -> Option<String> {
    let (user, why) = userns_unavailable()?;
    Some(format!(
        "not root, and the scenarios need root: running as {user}, they re-run themselves as root of a user \
         namespace, which needs {why}; or run them as root"
    ))
}

/// The calling user's name, and what a user namespace with a range of uids
/// (`unshare --map-auto`) still lacks, if anything: shared by the scenario
/// tests and the conformance runner, which re-run themselves in one.
pub fn userns_unavailable() -> Option<(String, String)> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let has_newuidmap = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/bin".into(), "/usr/sbin".into()])
            .any(|d| d.join("newuidmap").is_file())
    });
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    let (subuid, subgid) = (read("/etc/subuid"), read("/etc/subgid"));
    let listed = |text: &str| {
        text.lines().any(|l| {
            l.split(':')
                .next()
                .is_some_and(|who| who == user || who == uid.to_string())
        })
    };
    let why = match (has_newuidmap, listed(&subuid) && listed(&subgid)) {
        (true, true) => return None,
        (false, _) => "Debian's uidmap (newuidmap; as root: apt-get install uidmap)".to_string(),
        (true, false) => {
            let (first, last) = free_subid_range(&[&subuid, &subgid]);
            format!(
                "a range for {user} in /etc/subuid and /etc/subgid \
                 (as root: usermod --add-subuids {first}-{last} --add-subgids {first}-{last} {user})"
            )
        }
    };
    Some((user, why))
}

/// A range of 65536 ids above every range already given out in these
/// `/etc/subuid`-format files, starting no lower than `useradd`'s first
/// (100000), so the suggestion never overlaps another user's range.
pub fn free_subid_range(files: &[&str]) -> (u64, u64) {
    const FIRST: u64 = 100_000;
    const COUNT: u64 = 65_536;
    let end = files
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| {
            let mut fields = line.trim().split(':').skip(1);
            let start: u64 = fields.next()?.parse().ok()?;
            let count: u64 = fields.next()?.parse().ok()?;
            start.checked_add(count)
        })
        .fold(FIRST, u64::max);
    // Keep ranges aligned to 65536 like useradd's, for readability.
    let first = if end <= FIRST {
        FIRST
    } else {
        end.div_ceil(COUNT).saturating_mul(COUNT)
    };
    (first, first.saturating_add(COUNT - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggested_subid_range_overlaps_no_existing_one() {
        assert_eq!(free_subid_range(&["", ""]), (100_000, 165_535));
        // useradd's first user: 100000:65536. The old hint, 100000-165535, overlapped it.
        let first_user = "alice:100000:65536\n";
        assert_eq!(free_subid_range(&[first_user, first_user]), (196_608, 262_143));
        let odd = "bob:300000:1000\n# comment\nbroken line\ncarol:x:y\n";
        assert_eq!(free_subid_range(&[first_user, odd]), (327_680, 393_215));
        assert_eq!(
            free_subid_range(&["big:18446744073709551000:65536\n"]),
            (100_000, 165_535)
        );
    }

    /// The re-run never recurses: inside its namespace a non-root test fails.
    #[test]
    fn never_reruns_inside_the_namespace() {
        let err = rerun_as_root("t", true).unwrap_err();
        assert!(err.contains("inside the user namespace"), "{err}");
    }
}
