//! End-to-end tests of `istio-cni validate` (the istio-validation probe).
//!
//! Each case runs the real binary inside a fresh network namespace created by
//! `unshare --net` (as root) or `unshare --user --map-root-user --net`
//! (unprivileged). One `sh -c` script per case brings up `lo`, adds an
//! interface with an address (so a host IP exists), optionally loads Istio's
//! default pod nat rules with an `*tables-restore` command, and execs the
//! probe: as uid/gid 1337 through `setpriv` when root, or as the namespace's
//! root (and rules that capture uid/gid 0) in a user namespace.
//!
//! Without root or user namespaces, or when a tool is missing, a case prints
//! `SKIP: <reason>` to stderr and passes, unless
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`, in which case it panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_istio-cni");
const PASSED: &str = "Validation passed, iptables rules established";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit status of the case script when its setup (not the probe) failed.
const SETUP_FAILED: i32 = 97;

/// The init container's exact argument list (docs/repair.md#arguments).
const ISTIO_ARGS: &[&str] = istio_cni::validate::ISTIO_INJECTED_ARGS;

/// Istio's default sidecar pod rules (REDIRECT mode), iptables-restore format,
/// with placeholders for the owner, loopback addresses and capture ports.
const RULES_TEMPLATE: &str = "\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports @OUT_PORT@
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports @IN_PORT@
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp --dport 15020 -j RETURN
-A ISTIO_OUTPUT -p udp --dport 15020 -j RETURN
-A ISTIO_OUTPUT -o lo -s @INBOUND_PASSTHROUGH@ -j RETURN
-A ISTIO_OUTPUT -o lo ! -d @LOCALHOST@ -p tcp ! --dport 15008 -m owner --uid-owner @UID@ -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner @UID@ -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner @UID@ -j RETURN
-A ISTIO_OUTPUT -o lo ! -d @LOCALHOST@ -p tcp ! --dport 15008 -m owner --gid-owner @GID@ -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner @GID@ -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner @GID@ -j RETURN
-A ISTIO_OUTPUT -d @LOCALHOST@ -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";

/// The case script. Positional parameters are the probe's arguments; the
/// rest comes from the environment (see [`Case::run`]).
const SCRIPT: &str = r#"
fail() { echo "setup: $*" >&2; exit 97; }
ip link set lo up || fail "ip link set lo up"
if [ -n "$HOST_ADDR" ]; then
  ip link add d0 type dummy 2>/dev/null \
    || ip link add d0 type veth peer name d1 \
    || fail "cannot create a dummy or veth interface"
  ip addr add $HOST_ADDR dev d0 || fail "ip addr add $HOST_ADDR dev d0"
  ip link set d0 up || fail "ip link set d0 up"
fi
if [ -n "$LO_EXTRA" ]; then
  ip addr add "$LO_EXTRA" dev lo || fail "ip addr add $LO_EXTRA dev lo"
fi
if [ -n "$RESTORE" ]; then
  command -v "$RESTORE" >/dev/null 2>&1 || fail "$RESTORE not found"
  printf '%s' "$RULES" | "$RESTORE" --noflush || fail "$RESTORE --noflush failed"
fi
if [ -n "$RUN_AS" ]; then
  command -v setpriv >/dev/null 2>&1 || fail "setpriv not found"
  exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --clear-groups "$PROBE_BIN" validate "$@"
fi
exec "$PROBE_BIN" validate "$@"
"#;

/// How namespaces are created on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Real root: `unshare --net`, probe runs as uid/gid 1337.
    Root,
    /// `unshare --user --map-root-user --net`: only uid 0 exists inside, so
    /// the rules capture uid/gid 0 and the probe runs as that.
    UserNs,
}

fn skip(reason: &str) {
    if std::env::var("ISTIO_CNI_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("ISTIO_CNI_REQUIRE_PRIVILEGED=1 but the test would skip: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

fn works(args: &[&str]) -> bool {
    Command::new("unshare")
        .args(args)
        .arg("true")
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn mode() -> Result<Mode, String> {
    if nix::unistd::geteuid().is_root() {
        if works(&["--net"]) {
            return Ok(Mode::Root);
        }
        return Err("running as root but `unshare --net` failed (util-linux missing?)".into());
    }
    if works(&["--user", "--map-root-user", "--net"]) {
        return Ok(Mode::UserNs);
    }
    Err("not root and unprivileged user namespaces are unavailable \
         (`unshare --user --map-root-user --net` failed)"
        .into())
}

/// A copy (hard link when possible) of the binary in a world-readable
/// directory, so uid 1337 can execute it whatever the target dir's modes.
struct ProbeBinary {
    dir: PathBuf,
    path: PathBuf,
}

impl ProbeBinary {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "istio-cni-validate-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let path = dir.join("istio-cni");
        if std::fs::hard_link(BIN, &path).is_err() {
            std::fs::copy(BIN, &path).expect("copy binary");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod binary");
        Self { dir, path }
    }
}

impl Drop for ProbeBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// One probe run in a fresh network namespace.
struct Case<'a> {
    family: Family,
    /// Add a non-loopback address (otherwise there is no host IP).
    host_addr: bool,
    /// `*tables-restore` command to load the rules with, if any.
    restore: Option<&'a str>,
    /// Run the probe as the uid/gid the rules capture.
    as_proxy: bool,
    /// Inbound capture port the rules redirect to.
    in_port: u16,
    /// Extra environment for the probe.
    env: &'a [(&'a str, &'a str)],
    /// Probe arguments after `validate`.
    args: &'a [&'a str],
}

impl Default for Case<'_> {
    fn default() -> Self {
        Self {
            family: Family::V4,
            host_addr: true,
            restore: None,
            as_proxy: true,
            in_port: 15006,
            env: &[],
            args: ISTIO_ARGS,
        }
    }
}

struct Run {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

impl Case<'_> {
    /// Runs the case and hands the run to `check`; a skipped case (already
    /// reported) checks nothing.
    fn check(&self, check: impl FnOnce(&Run)) {
        if let Some(run) = self.run() {
            check(&run);
        }
    }

    /// Runs the case; `None` means it was skipped (already reported).
    fn run(&self) -> Option<Run> {
        let mode = match mode() {
            Ok(m) => m,
            Err(reason) => {
                skip(&reason);
                return None;
            }
        };
        let owner = match mode {
            Mode::Root => "1337",
            Mode::UserNs => "0",
        };
        let (localhost, passthrough, host_addr, lo_extra) = match self.family {
            Family::V4 => ("127.0.0.1/32", "127.0.0.6/32", "10.1.0.2/24", ""),
            Family::V6 => ("::1/128", "::6/128", "fd00::2/64 nodad", "::6/128"),
        };
        let rules = RULES_TEMPLATE
            .replace("@UID@", owner)
            .replace("@GID@", owner)
            .replace("@LOCALHOST@", localhost)
            .replace("@INBOUND_PASSTHROUGH@", passthrough)
            .replace("@OUT_PORT@", "15001")
            .replace("@IN_PORT@", &self.in_port.to_string());
        let run_as = if mode == Mode::Root && self.as_proxy {
            "1337"
        } else {
            ""
        };

        let bin = ProbeBinary::new();
        let mut cmd = Command::new("unshare");
        if mode == Mode::UserNs {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args(["--net", "sh", "-c", SCRIPT, "sh"])
            .args(self.args)
            .env_clear()
            .env("PATH", PATH)
            .env("PROBE_BIN", &bin.path)
            .env("HOST_ADDR", if self.host_addr { host_addr } else { "" })
            .env("LO_EXTRA", lo_extra)
            .env("RESTORE", self.restore.unwrap_or(""))
            .env("RULES", &rules)
            .env("RUN_AS", run_as)
            .envs(self.env.iter().copied())
            .stdin(Stdio::null());
        if mode == Mode::UserNs {
            // iptables-legacy cannot open /run/xtables.lock without real root.
            cmd.env("XTABLES_LOCKFILE", bin.dir.join("xtables.lock"));
        }
        let started = Instant::now();
        let out: Output = cmd.output().expect("spawn unshare");
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- probe stderr ({elapsed:?}, {:?}) ---\n{stderr}", out.status);
        if out.status.code() == Some(SETUP_FAILED) {
            skip(&format!(
                "namespace setup failed: {}",
                stderr.lines().last().unwrap_or("")
            ));
            return None;
        }
        drop(bin);
        Some(Run {
            code: out.status.code(),
            stderr,
            elapsed,
        })
    }
}

fn assert_passed(run: &Run) {
    assert_eq!(run.code, Some(0), "probe should pass:\n{}", run.stderr);
    assert!(run.stderr.contains(PASSED), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
}

/// The probe failed after `timeout`, and its message names `detail` (what
/// it probed, or why that cannot work).
fn assert_timed_out(run: &Run, timeout: Duration, detail: &str) {
    assert_eq!(run.code, Some(126), "probe should fail:\n{}", run.stderr);
    assert!(!run.stderr.contains(PASSED), "{}", run.stderr);
    for needle in [
        "validation failed",
        "not ready for Istio",
        "validation timeout",
        "repair",
        detail,
    ] {
        assert!(run.stderr.contains(needle), "missing {needle:?}:\n{}", run.stderr);
    }
    assert!(
        run.elapsed >= timeout - Duration::from_millis(100),
        "returned before the timeout: {:?}",
        run.elapsed
    );
    assert!(
        run.elapsed < timeout + Duration::from_secs(3),
        "took too long: {:?}",
        run.elapsed
    );
}

const FAST_FAIL: &[&str] = &["-p", "15001", "-z", "15006", "-u", "1337", "--probe-timeout", "2s"];

/// Without rules the probe times out (after [`FAST_FAIL`]'s 2s) probing the
/// family's inbound passthrough address.
fn fails_without_rules(family: Family, passthrough: &str) {
    Case {
        family,
        args: FAST_FAIL,
        ..Case::default()
    }
    .check(|run| assert_timed_out(run, Duration::from_secs(2), passthrough));
}

/// With Istio's IPv4 rules loaded by `restore` the probe passes.
fn passes_with_rules(restore: &str) {
    Case {
        restore: Some(restore),
        ..Case::default()
    }
    .check(assert_passed);
}

#[test]
fn fails_with_126_when_no_rules_are_programmed() {
    fails_without_rules(Family::V4, "127.0.0.6:15002");
}

#[test]
fn istio_args_with_timeout_from_environment() {
    // The full injected list, with the timeout from PROBE_TIMEOUT (as
    // proxyMetadata would set it).
    Case {
        env: &[("PROBE_TIMEOUT", "1500ms")],
        ..Case::default()
    }
    .check(|run| assert_timed_out(run, Duration::from_millis(1500), "within 1.5s"));
}

#[test]
fn passes_with_iptables_nft_rules() {
    passes_with_rules("iptables-nft-restore");
}

#[test]
fn passes_with_iptables_legacy_rules() {
    passes_with_rules("iptables-legacy-restore");
}

#[test]
fn passes_with_ipv6_rules() {
    Case {
        family: Family::V6,
        restore: Some("ip6tables-nft-restore"),
        ..Case::default()
    }
    .check(|run| {
        assert_passed(run);
        assert!(run.stderr.contains("[::6]:15002"), "{}", run.stderr);
    });
}

#[test]
fn ipv6_fails_without_rules() {
    fails_without_rules(Family::V6, "[::6]:15002");
}

#[test]
fn honours_a_custom_inbound_capture_port() {
    Case {
        restore: Some("iptables-nft-restore"),
        in_port: 16006,
        args: &["istio-iptables", "-p", "15001", "-z", "16006", "-u", "1337"],
        ..Case::default()
    }
    .check(assert_passed);
}

#[test]
fn fails_when_not_running_as_the_proxy_user() {
    if mode() == Ok(Mode::UserNs) {
        // Only uid 0 exists in the user namespace, and it is the captured one.
        eprintln!("note: needs a second uid; not applicable in a user namespace");
        return;
    }
    Case {
        restore: Some("iptables-nft-restore"),
        as_proxy: false,
        args: FAST_FAIL,
        ..Case::default()
    }
    .check(|run| assert_timed_out(run, Duration::from_secs(2), "uid 0"));
}

#[test]
fn no_usable_local_ip_exits_1() {
    Case {
        host_addr: false,
        ..Case::default()
    }
    .check(|run| {
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(run.stderr.contains("no usable local IP"), "{}", run.stderr);
        assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
    });
}

fn run_plain(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(Path::new(BIN))
        .arg("validate")
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run istio-cni")
}

#[test]
fn unknown_flag_exits_2() {
    let out = run_plain(&["istio-iptables", "-p", "15001", "--frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--frobnicate"), "{stderr}");
}

#[test]
fn bad_values_exit_2_and_bad_environment_exits_1() {
    let out = run_plain(&["--probe-timeout", "5"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing unit"), "{stderr}");

    let out = run_plain(&["-p", "15001"], &[("PROBE_TIMEOUT", "soon")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PROBE_TIMEOUT"), "{stderr}");
}

#[test]
fn help_explains_that_no_rules_are_written() {
    let out = run_plain(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("never writes"), "{stdout}");
    assert!(stdout.contains("--probe-timeout"), "{stdout}");
}
