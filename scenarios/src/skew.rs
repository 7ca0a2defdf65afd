//! The `skew/...` scenarios: our agent and plugin against the pods and node
//! configs other versions produce (docs/repair.md#version-skew).
//!
//! **Version choice: x = 1.29, so N±1 is 1.28 / 1.29 / 1.30.** The plugin
//! matches Istio HEAD as of after 1.29: its config keys are 1.29's (the
//! newest, `enable_ambient_detection_retry`) and it already has 1.30's
//! CNI-side behaviour (interface-name annotations validated, failing ADD on
//! a bad one). Istio supports CNI 1.x with control planes 1.x-1…1.x+1, so
//! the injected shapes of 1.28 (oldest with native sidecars by default,
//! `istio-ca-crl`, GOMAXPROCS divisor "0"), 1.29 (divisor "1") and 1.30
//! (GOMAXPROCS gone, test hub) are the window.
//!
//! * `skew/istio-1.<v>/<shape>` (v ∈ 1.28, 1.29, 1.30; shapes in
//!   [`fixtures::POD_SHAPES`]): agent installed, the injected pod reaches
//!   Running with validation passing the first time, and the rules in its
//!   netns equal `istio-cni render` of the same pod.
//! * `skew/conflist/istio-1.<v>` (v ∈ 1.20, 1.23, 1.27, 1.29): the node's
//!   conflist holds the `istio-cni` entry Istio's installer v wrote (docs/repair.md#entries-per-version);
//!   the agent replaces it in place (one istio-cni entry, ours, last; every
//!   other byte kept), a meshed pod works, and uninstall leaves the primary's
//!   config without any istio-cni entry.
//! * `skew/release/previous-plugin` (a stable name, whichever ref it
//!   builds): our previous release's plugin with the current agent. The ref
//!   is `$ISTIO_CNI_SKEW_REF`, else the previous tag (`git describe --tags
//!   --abbrev=0`, or of `HEAD^` when HEAD itself is tagged), else — a clone
//!   without tags, which is every fresh clone — the pinned commit
//!   [`PREVIOUS_RELEASE`], so it never skips. Its `istio-cni` is built once per commit into
//!   `$XDG_CACHE_HOME/istio-cni-rs/builds/<sha>/` (else `~/.cache/...`):
//!   `git archive <sha>` unpacked to `src/`, then `cargo build -p istio-cni
//!   --offline` (online if the lockfile needs more) with `CARGO_TARGET_DIR`
//!   `target/` there; then only `istio-cni` is kept (sources and the
//!   ~0.5 GB target dir are removed) and reused while present. A cold build
//!   takes minutes (3.6 min for v0.1.0 on a loaded 2-core machine); the
//!   scenario notes how long and whether `--offline` sufficed.
//!
//! Meaningful release pairings: the agent of N installs the plugin of N-1
//! (the agent's image carries the old binary: a half-rolled image, or the
//! window (docs/repair.md#entries-per-version) where binaries are copied before the config is rewritten,
//! held open) — the old plugin must read the new agent's entry and program
//! the same rules. The reverse, plugin N with an entry our agent wrote at
//! N-1, does not exist for v0.1.0: that release had no agent, so the
//! entries a plugin of N meets from before are Istio's installers' —
//! exactly `skew/conflist/*`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use istio_cni::capture::NodeEnv;
use istio_cni::cli::{Backend, RenderOptions, render_manifest};
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use serde_json::Value;

use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::error::Context;
use crate::fixtures::{self, CONFLIST_VERSIONS, POD_SHAPES, POD_VERSIONS};
use crate::race::{
    NODE, app_restarts, create, has_rules, manifest, netns_rules, pod_summary, running, validation_exits, wait,
    wait_pod,
};
use crate::scenario::{Record, Scenario, Step, Stop, skip};
use crate::system::Install;

/// Every `skew/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for v in POD_VERSIONS {
        for shape in POD_SHAPES {
            out.push(Scenario::new(
                format!("skew/istio-{v}/{shape}"),
                format!("Istio {v}'s injected {shape} pod runs, validated first time, with exactly the rendered rules"),
                move |env, rec| injected_pod(env, rec, v, shape),
            ));
        }
    }
    for v in CONFLIST_VERSIONS {
        out.push(Scenario::new(
            format!("skew/conflist/istio-{v}"),
            format!("the istio-cni entry Istio {v}'s installer wrote is replaced in place; uninstall removes ours"),
            move |env, rec| conflist(env, rec, v),
        ));
    }
    out.push(Scenario::new(
        "skew/release/previous-plugin",
        "the current agent installing the previous release's plugin: a meshed pod gets the same rules, validation passes",
        |env, rec| {
            let (reference, from) = previous_ref();
            release_plugin(env, rec, &reference, from)
        },
    ));
    out
}

// ---- rules -----------------------------------------------------------------

/// `rendered` (iptables-restore input: `-I` inserts, marks in decimal)
/// loaded into a scratch netns and saved back, so both sides are in
/// `iptables-save`'s canonical form, produced by the same iptables.
fn canonical_save(rendered: &str) -> Result<String, Stop> {
    use std::io::Write;
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", "iptables-nft-restore && iptables-nft-save"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Stop::Fail(format!("unshare --net iptables-nft-restore: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rendered.as_bytes())
            .context("writing the pod to istio-cni render")?;
    }
    let out = child.wait_with_output().context("running istio-cni render")?;
    ensure!(
        out.status.success(),
        "loading the rendered rules into a scratch netns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The tables `render` writes (`*nat`, `*mangle`, ...).
fn tables(rendered: &str) -> Vec<String> {
    rendered
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .map(|t| t.trim().to_string())
        .collect()
}

/// Checks that pod `name`'s netns holds exactly what `istio-cni render`
/// prints for `yaml`, table by table.
fn rules_match_render(cluster: &Cluster, rec: &mut Record, name: &str, yaml: &str) -> Result<String, Stop> {
    let opts = RenderOptions {
        ipv6: false,
        backend: Backend::Iptables,
        node: NodeEnv::default(),
    };
    let rendered = render_manifest(yaml, &opts).map_err(|e| Stop::Fail(format!("istio-cni render: {e}")))?;
    let save = netns_rules(cluster, name)?;
    rec.diag("istio-cni render", rendered.clone());
    rec.diag("rules in the pod netns", save.clone());
    let tables = tables(&rendered);
    ensure!(!tables.is_empty(), "render printed no rules:\n{rendered}");
    let want_save = canonical_save(&rendered)?;
    for table in &tables {
        let (got, want) = (
            testkit::iptables::rules_by_chain(&save, table),
            testkit::iptables::rules_by_chain(&want_save, table),
        );
        ensure!(
            got == want,
            "{table} table differs from `istio-cni render`:\n  netns:  {got:?}\n  render: {want:?}"
        );
    }
    Ok(save)
}

// ---- injected pods ---------------------------------------------------------

fn injected_pod(env: &Env, rec: &mut Record, version: &str, shape: &str) -> Step {
    if !env.is_local() {
        return skip("reads the rules in the pod's netns: embedded cluster only");
    }
    let yaml = fixtures::pod_yaml(version, shape)?;
    let pod = fixtures::parse_pod(yaml)?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node ready");
    let agent = DaemonSetAgent::deploy(env, &cluster, &Install::defaults(), rec)?.leave();
    let result = (|| {
        create(&cluster, &pod)?;
        let running_pod = wait_pod(&cluster, &name, "Running", Duration::from_secs(30), running)
            .map_err(|e| with_validator_log(e, &cluster, &name))?;
        rec.mark("pod Running");
        ensure!(
            validation_exits(&running_pod) == (Some(0), None, 0),
            "validation passed the first time: {}",
            pod_summary(&running_pod)
        );
        ensure!(app_restarts(&running_pod) == 0, "{}", pod_summary(&running_pod));
        let save = rules_match_render(&cluster, rec, &name, yaml)?;
        // What sets the shapes apart reached the netns.
        match shape {
            "kubevirt" => ensure!(
                save.contains("-i net1"),
                "kubevirtInterfaces net1 not rerouted:\n{save}"
            ),
            "reroute-virtual" => ensure!(
                save.contains("-i net1") && save.contains("-i net2") && !save.contains("net9"),
                "reroute-virtual-interfaces must win over kubevirtInterfaces:\n{save}"
            ),
            "custom-uid" => ensure!(
                save.contains("--uid-owner 1234") && save.contains("--gid-owner 4321") && !save.contains("1337"),
                "the custom proxy uid/gid are excluded instead of 1337:\n{save}"
            ),
            "tproxy" => ensure!(save.contains("TPROXY"), "no TPROXY rules:\n{save}"),
            _ => {}
        }
        Ok(())
    })();
    rec.diag("agent log", agent.logs(&cluster, NODE));
    result
}

fn with_validator_log(e: Stop, cluster: &Cluster, pod: &str) -> Stop {
    match e {
        Stop::Fail(m) => Stop::Fail(format!(
            "{m}\nvalidator log:\n{}",
            cluster.pod_logs("default", pod, "istio-validation").unwrap_or_default()
        )),
        other => other,
    }
}

// ---- conflist entries of Istio's installers ---------------------------------

/// The span `[open, close]` of the top-level `"plugins"` array in a JSON
/// text (the brackets' byte offsets), skipping strings.
pub fn plugins_span(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let (mut depth, mut in_str, mut escaped) = (0i32, false, false);
    let mut key_start = None;
    let mut last_key: Option<&str> = None;
    let mut open = None;
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_str = false;
                    if let Some(s) = key_start.take() {
                        last_key = text.get(s..i);
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_str = true;
                if depth == 1 && open.is_none() {
                    key_start = Some(i + 1);
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if b == b'[' && depth == 2 && open.is_none() && last_key == Some("plugins") {
                    open = Some(i);
                }
            }
            b'}' | b']' => {
                if b == b']' && depth == 2 && open.is_some() {
                    return open.map(|o| (o, i));
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

/// `primary` with `entry` appended to its plugins, as an installer would
/// write it; returns the text and the offset where the entry's separator
/// starts (everything before it is the primary's own bytes).
fn with_entry(primary: &str, entry: &Value) -> Result<(String, usize), Stop> {
    let (_, close) =
        plugins_span(primary).ok_or_else(|| Stop::Fail("the primary config has no plugins list".into()))?;
    let last = primary[..close].trim_end().len();
    let entry = serde_json::to_string_pretty(entry)
        .context("the istio-cni entry")?
        .replace('\n', "\n    ");
    let text = format!("{},\n    {entry}{}", &primary[..last], &primary[last..]);
    Ok((text, last))
}

/// Whether two files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> Result<bool, Stop> {
    let read = |p: &Path| std::fs::read(p).context(format!("reading {}", p.display()));
    Ok(read(a)? == read(b)?)
}

fn istio_entries(list: &Value) -> Vec<(usize, &Value)> {
    list["plugins"]
        .as_array()
        .map(|p| p.iter().enumerate().filter(|(_, e)| e["type"] == "istio-cni").collect())
        .unwrap_or_default()
}

fn conflist(env: &Env, rec: &mut Record, version: &str) -> Step {
    if !env.is_local() {
        return skip("writes the node's CNI config: embedded cluster only");
    }
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node ready");
    let node = cluster
        .local()?
        .node(NODE)
        .ok_or_else(|| Stop::Fail(format!("no {NODE}")))?;
    let file = std::fs::read_dir(node.conf_dir())
        .context(format!("listing {}", node.conf_dir().display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "conflist"))
        .ok_or_else(|| Stop::Fail("no primary conflist on the node".into()))?;
    let primary = std::fs::read_to_string(&file).context(format!("reading {}", file.display()))?;
    let (old, keep) = with_entry(&primary, &fixtures::conflist_entry(version)?)?;
    let suffix = &primary[keep..];

    // The agent meets the old installer's entry through its watch of the
    // config dir: the embedded kubelet runs the CNI chain for hostNetwork
    // pods too, so the agent's own pod could not start through an entry
    // whose installer (kubeconfig, binary) is gone. What the agent writes
    // is the same either way: its own entry in place of the old one.
    let agent = DaemonSetAgent::deploy(env, &cluster, &Install::defaults(), rec)?;
    let result = (|| {
        let installed = std::fs::read_to_string(&file).context(format!("reading {}", file.display()))?;
        let list: Value = serde_json::from_str(&installed).context(format!("{} as JSON", file.display()))?;
        let ours = istio_entries(&list)
            .first()
            .map(|(_, e)| (*e).clone())
            .ok_or_else(|| Stop::Fail(format!("no istio-cni entry after the rollout:\n{installed}")))?;
        std::fs::write(&file, &old).context(format!("writing {}", file.display()))?;
        rec.diag(format!("conflist as Istio {version}'s installer left it"), old.clone());
        rec.mark(format!("Istio {version} entry in the conflist"));
        // Ours again (equal to the old one where an installer wrote the same).
        let text = wait("our entry in the conflist again", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&file).context(format!("reading {}", file.display()))?;
            let list: Value = serde_json::from_str(&text).unwrap_or_default();
            let back = istio_entries(&list).iter().any(|(_, e)| **e == ours);
            Ok(back.then_some(text))
        })?;
        rec.mark("agent replaced the entry");
        rec.diag("conflist after the agent", text.clone());
        let list: Value = serde_json::from_str(&text).context(format!("{} as JSON", file.display()))?;
        let entries = istio_entries(&list);
        let plugins = list["plugins"].as_array().map_or(0, Vec::len);
        ensure!(entries.len() == 1, "exactly one istio-cni entry: {entries:?}");
        let (at, ours) = entries[0];
        ensure!(at + 1 == plugins, "ours is last ({at} of {plugins})");
        for stale in ["log_level", "kubernetes", "log_uds_address", "cni_event_address"] {
            ensure!(
                ours.get(stale).is_none(),
                "the old installer's {stale:?} survived: {ours}"
            );
        }
        ensure!(
            text.starts_with(&primary[..keep]),
            "the primary's bytes before the entry changed"
        );
        ensure!(
            text.trim_end().ends_with(suffix.trim_end()),
            "the bytes after the plugins changed"
        );

        let pod = fixtures::pod("1.29", "native")?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        create(&cluster, &pod)?;
        let p = wait_pod(&cluster, &name, "Running", Duration::from_secs(30), running)?;
        rec.mark("meshed pod Running");
        ensure!(validation_exits(&p) == (Some(0), None, 0), "{}", pod_summary(&p));
        ensure!(has_rules(&netns_rules(&cluster, &name)?), "no rules in {name}");
        Ok(())
    })();
    let log = agent.logs(NODE);
    let result = result.and_then(|()| {
        // Back to the nodes' files from before the agent: the primary alone.
        agent.uninstall(rec)?;
        let after = std::fs::read_to_string(&file).context(format!("reading {}", file.display()))?;
        rec.diag("conflist after uninstall", after.clone());
        let list: Value = serde_json::from_str(&after).context(format!("{} as JSON", file.display()))?;
        ensure!(istio_entries(&list).is_empty(), "an istio-cni entry is left:\n{after}");
        // The old installer's entry must not come back (its binary is gone):
        // what is restored is the primary alone, byte for byte.
        ensure!(
            after == primary,
            "uninstall did not restore the primary's bytes:\n{after}\n--- primary:\n{primary}"
        );
        Ok(())
    });
    rec.diag("agent log", log);
    result
}

// ---- our previous release ----------------------------------------------------

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(repo_dir()).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The previous release when no tag says so: the last commit before the
/// agent crate was added (`v0.1.0` was the plugin alone, without an agent).
/// A fresh clone carries no tags, so without this pin the release pairing
/// could not run on one.
pub const PREVIOUS_RELEASE: &str = "f2a4d970ebb72e4192c73560ffccd544f856b061";

/// The previous release to build and where that choice came from:
/// `$ISTIO_CNI_SKEW_REF`, else the newest tag before HEAD, else
/// [`PREVIOUS_RELEASE`].
pub fn previous_ref() -> (String, &'static str) {
    if let Ok(r) = std::env::var("ISTIO_CNI_SKEW_REF")
        && !r.is_empty()
    {
        return (r, "$ISTIO_CNI_SKEW_REF");
    }
    match previous_tag() {
        Some(tag) => (tag, "the newest tag before HEAD"),
        None => (PREVIOUS_RELEASE.to_string(), "the pinned commit (no tag in this clone)"),
    }
}

/// The newest tag before HEAD, if the clone has tags.
fn previous_tag() -> Option<String> {
    let tag = git(&["describe", "--tags", "--abbrev=0"])?;
    let head = git(&["rev-parse", "HEAD"])?;
    if git(&["rev-parse", &format!("{tag}^{{commit}}")]).as_deref() == Some(head.as_str()) {
        return git(&["describe", "--tags", "--abbrev=0", "HEAD^"]);
    }
    Some(tag)
}

/// `$XDG_CACHE_HOME/istio-cni-rs/builds` (else `~/.cache/...`).
pub fn build_cache() -> Result<PathBuf, Stop> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").ok_or_else(|| Stop::Fail("neither XDG_CACHE_HOME nor HOME is set".into()))?,
        )
        .join(".cache"),
    };
    Ok(base.join("istio-cni-rs").join("builds"))
}

/// How a cache miss was built.
#[derive(Debug, Clone, Copy)]
pub struct Built {
    pub took: Duration,
    /// `--offline` was enough (the registry cache had every crate).
    pub offline: bool,
}

/// `istio-cni` built from commit `sha`, from the cache or built now;
/// returns the binary and, when it was built now, how.
pub fn plugin_at(sha: &str) -> Result<(PathBuf, Option<Built>), Stop> {
    let dir = build_cache()?.join(sha);
    let bin = dir.join("istio-cni");
    if bin.exists() {
        return Ok((bin, None));
    }
    let start = Instant::now();
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).context(format!("creating {}", src.display()))?;
    let archive = Command::new("git")
        .arg("-C")
        .arg(repo_dir())
        .args(["archive", "--format=tar", sha])
        .output()
        .context("running git archive")?;
    ensure!(
        archive.status.success(),
        "git archive {sha}: {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let tar = dir.join("src.tar");
    std::fs::write(&tar, &archive.stdout).context(format!("writing {}", tar.display()))?;
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .output()
        .context("running tar")?;
    let _ = std::fs::remove_file(&tar);
    ensure!(
        untar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&untar.stderr)
    );

    let target = dir.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = |offline: bool| -> Result<std::process::Output, Stop> {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&src)
            .args(["build", "-p", "istio-cni", "--bin", "istio-cni"])
            .env("CARGO_TARGET_DIR", &target)
            // Smaller, faster to link; only the binary matters.
            .env("CARGO_PROFILE_DEV_DEBUG", "0");
        if offline {
            cmd.arg("--offline");
        }
        Ok(cmd.output().context("running cargo build")?)
    };
    let mut out = build(true)?;
    let offline = out.status.success();
    if !offline {
        out = build(false)?;
    }
    ensure!(
        out.status.success(),
        "cargo build of istio-cni at {sha}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Copy then rename: a concurrent reader never sees half a binary.
    let partial = dir.join("istio-cni.partial");
    std::fs::copy(target.join("debug").join("istio-cni"), &partial)
        .context(format!("copying the built istio-cni to {}", partial.display()))?;
    std::fs::rename(&partial, &bin).context(format!("renaming to {}", bin.display()))?;
    // Only the binary is reused: drop the sources and the ~0.5 GB target dir.
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(&target);
    Ok((
        bin,
        Some(Built {
            took: start.elapsed(),
            offline,
        }),
    ))
}

fn release_plugin(env: &Env, rec: &mut Record, reference: &str, from: &str) -> Step {
    if !env.is_local() {
        return skip("installs a locally built plugin on the node: embedded cluster only");
    }
    let sha = git(&["rev-parse", &format!("{reference}^{{commit}}")]).ok_or_else(|| {
        Stop::Fail(format!(
            "the previous release {reference} ({from}) is not a commit of {} (a shallow clone? fetch it, or set \
             ISTIO_CNI_SKEW_REF)",
            repo_dir().display()
        ))
    })?;
    rec.note(format!("previous release: {reference} ({from}), commit {sha}"));
    let (old_plugin, built) = plugin_at(&sha)?;
    match built {
        Some(b) => rec.note(format!(
            "release/{reference}: built istio-cni at {sha} in {:.1} s (cache miss, {})",
            b.took.as_secs_f64(),
            if b.offline {
                "offline"
            } else {
                "online: --offline failed"
            }
        )),
        None => rec.note(format!(
            "release/{reference}: istio-cni at {sha} reused from the build cache"
        )),
    }
    rec.mark(format!("plugin {reference} ready"));

    // The agent's image carries the old plugin: it installs that binary.
    let mixed = env.with_image_plugin(&old_plugin);
    let cluster = mixed.cluster(ClusterSpec::default())?;
    rec.mark("node ready");
    let agent = DaemonSetAgent::deploy(&mixed, &cluster, &Install::defaults(), rec)?.leave();
    rec.mark("agent (current) ready with the old plugin");
    let result = (|| {
        let node = cluster
            .local()?
            .node(NODE)
            .ok_or_else(|| Stop::Fail(format!("no {NODE}")))?;
        let installed = node.host_path(&manifest(&[])?.host_bin_dir()).join("istio-cni");
        ensure!(
            same_bytes(&installed, &old_plugin)?,
            "the node's istio-cni is not the {reference} build"
        );
        for (version, shape) in [("1.29", "classic"), ("1.29", "native")] {
            let yaml = fixtures::pod_yaml(version, shape)?;
            let pod = fixtures::parse_pod(yaml)?;
            let name = pod.metadata.name.clone().unwrap_or_default();
            create(&cluster, &pod)?;
            let p = wait_pod(&cluster, &name, "Running", Duration::from_secs(30), running)
                .map_err(|e| with_validator_log(e, &cluster, &name))?;
            rec.mark(format!("{name} Running"));
            ensure!(
                validation_exits(&p) == (Some(0), None, 0),
                "validation passed the first time: {}",
                pod_summary(&p)
            );
            rules_match_render(&cluster, rec, &name, yaml)?;
        }
        ensure!(
            same_bytes(&installed, &old_plugin)?,
            "the agent replaced the old plugin meanwhile"
        );
        Ok(())
    })();
    rec.diag("agent log", agent.logs(&cluster, NODE));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let names: Vec<String> = scenarios().into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"skew/istio-1.28/classic".to_string()));
        assert!(names.contains(&"skew/istio-1.30/tproxy".to_string()));
        assert!(names.contains(&"skew/conflist/istio-1.20".to_string()));
        assert!(names.contains(&"skew/release/previous-plugin".to_string()));
    }

    #[test]
    fn the_previous_release_is_always_named() {
        let (reference, from) = previous_ref();
        assert!(!reference.is_empty(), "{from}");
        // A clone without tags falls back to the pinned commit.
        if std::env::var_os("ISTIO_CNI_SKEW_REF").is_none() && previous_tag().is_none() {
            assert_eq!(reference, PREVIOUS_RELEASE);
        }
    }

    #[test]
    fn an_installer_entry_goes_after_the_primarys_bytes() {
        let primary = "{\n  \"cniVersion\": \"0.3.1\",\n  \"name\": \"k8s\",\n  \"plugins\": [\n    {\"type\": \"ptp\", \"x\": \"]\"}\n  ]\n}\n";
        let (open, close) = plugins_span(primary).unwrap();
        assert_eq!(&primary[open..=open], "[");
        assert_eq!(&primary[close..], "]\n}\n");
        let (text, keep) = with_entry(primary, &serde_json::json!({"type": "istio-cni"})).unwrap();
        let list: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(list["plugins"][1]["type"], "istio-cni");
        assert_eq!(&text[..keep], &primary[..keep]);
        assert!(text.ends_with(&primary[keep..]));
        assert_eq!(plugins_span("{\"name\": \"plugins\", \"x\": [1]}"), None);
    }

    #[test]
    fn tables_are_named_in_order() {
        assert_eq!(tables("* nat\nx\n*mangle\n"), ["nat", "mangle"]);
    }

    #[test]
    fn the_build_cache_follows_xdg() {
        let dir = build_cache().unwrap();
        assert!(dir.ends_with("istio-cni-rs/builds"), "{}", dir.display());
    }
}
