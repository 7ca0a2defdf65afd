//! Failure reasons people can act on, and the details under them.
//!
//! A reason is one line of at most [`REASON_MAX`] characters saying what was
//! expected and what was seen (`pod default/hello not Running after 30s:
//! init container istio-validation exited 126 (3 restarts); no ISTIO_OUTPUT
//! chain in the pod netns`). Everything longer goes into titled details: a
//! unified diff of the expected and the actual rules, the failing containers'
//! logs (current and previous), events counted instead of repeated, CNI
//! config diffs, logs without terminal colour codes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use istio_cni::capture::NodeEnv;
use istio_cni::cli::{Backend, RenderError, RenderOptions, render_manifest};
use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::{Api, ListParams};

use crate::scenario::{Record, Stop};

/// The longest reason line.
pub const REASON_MAX: usize = 200;

/// The chain every sidecar redirect has.
const OUTPUT_CHAIN: &str = "ISTIO_OUTPUT";

/// `text` on one line (whitespace runs become one space), cut to `max`
/// characters with `…`.
pub fn cap(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` without terminal escape sequences (colours, cursor moves): log
/// lines as a reader sees them on a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            // CSI: parameters and intermediates up to a final byte in @..~.
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ST (ESC \).
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // Other escapes: intermediates (space to `/`), then one final character.
            Some(_) => {
                while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// A unified diff of `expected` and `actual` (empty when equal), with
/// `labels` as the `---`/`+++` names.
pub fn unified_diff(expected: &str, actual: &str, labels: (&str, &str)) -> String {
    if expected == actual {
        return String::new();
    }
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(3)
        .header(labels.0, labels.1)
        .to_string()
}

// ---- pods --------------------------------------------------------------------

/// What one container is doing, when that is not simply "ready", e.g.
/// `init container istio-validation exited 126 (3 restarts)`.
fn container_state(kind: &str, c: &ContainerStatus) -> Option<String> {
    let state = c.state.as_ref();
    let terminated = state.and_then(|s| s.terminated.as_ref());
    let waiting = state.and_then(|s| s.waiting.as_ref());
    let last_exit = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    let restarts = match c.restart_count {
        0 => String::new(),
        1 => " (1 restart)".to_owned(),
        n => format!(" ({n} restarts)"),
    };
    let name = &c.name;
    let what = match (terminated, waiting) {
        // A finished init container that succeeded is what it should be.
        (Some(t), _) if kind == "init container" && t.exit_code == 0 => return None,
        (Some(t), _) => format!("exited {}", t.exit_code),
        (None, Some(w)) => match (last_exit, w.reason.as_deref()) {
            // Waiting because it is not its turn yet says nothing new.
            (None, Some("PodInitializing")) => return None,
            (Some(code), _) => format!("exited {code}"),
            (None, Some(reason)) => format!("waiting ({reason})"),
            (None, None) => "waiting".to_owned(),
        },
        (None, None) if c.ready => return None,
        // Restarted after a failure: the failure is what to read.
        (None, None) => match last_exit {
            Some(code) => format!("exited {code}, running again"),
            None => "running, not ready".to_owned(),
        },
    };
    Some(format!("{kind} {name} {what}{restarts}"))
}

/// One line on a pod that is not what a check wanted: its phase when not
/// Running and every container that is not fine, with exit codes and
/// restart counts.
pub fn pod_state(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("unknown");
    let mut parts = Vec::new();
    let inits = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    parts.extend(inits.iter().filter_map(|c| container_state("init container", c)));
    let apps = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    parts.extend(apps.iter().filter_map(|c| container_state("container", c)));
    if parts.is_empty() || phase != "Running" {
        parts.insert(0, format!("phase {phase}"));
    }
    if let Some(msg) = status.and_then(|s| s.message.as_deref()).filter(|m| !m.is_empty()) {
        parts.push(msg.to_owned());
    }
    parts.join("; ")
}

/// The names of `pod`'s containers that failed or are not ready (init
/// containers first): whose logs explain the failure.
pub fn failing_containers(pod: &Pod) -> Vec<String> {
    let status = pod.status.as_ref();
    let inits = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    let apps = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    inits
        .iter()
        .filter_map(|c| container_state("init container", c).map(|_| c.name.clone()))
        .chain(
            apps.iter()
                .filter_map(|c| container_state("container", c).map(|_| c.name.clone())),
        )
        .collect()
}

/// Waits until `ns/name` satisfies `ok` (`what` says what that is, e.g.
/// `Running`), recording the wait; on timeout fails with one line on the
/// pod's state and its rules, and leaves the details in `record`.
pub fn wait_pod(
    cluster: &Cluster,
    record: &mut Record,
    (ns, name): (&str, &str),
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Pod) -> bool,
) -> Result<Pod, Stop> {
    record.waiting_for(format!("{ns}/{name} {what}"));
    let api: Api<Pod> = Api::namespaced(cluster.client(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let last = cluster.block_on(api.get_opt(name));
        if let Ok(Some(pod)) = &last
            && ok(pod)
        {
            return Ok(pod.clone());
        }
        if Instant::now() > deadline {
            let seen = match last {
                Ok(Some(pod)) => {
                    let rules = rules_check(cluster, record, &pod);
                    explain_pod(cluster, record, &pod);
                    let state = pod_state(&pod);
                    match rules {
                        Some(rules) => format!("{state}; {rules}"),
                        None => state,
                    }
                }
                Ok(None) => "the pod does not exist".to_owned(),
                Err(e) => format!("reading it: {e}"),
            };
            let secs = timeout.as_secs_f64();
            return Err(Stop::Fail(cap(
                &format!("pod {ns}/{name} not {what} after {secs}s: {seen}"),
                REASON_MAX,
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The failing containers' logs (current and previous) and the pod's events,
/// counted, as details.
pub fn explain_pod(cluster: &Cluster, record: &mut Record, pod: &Pod) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for container in failing_containers(pod) {
        for (which, log) in [
            ("current", cluster.pod_logs(ns, name, &container)),
            ("previous", cluster.previous_pod_logs(ns, name, &container)),
        ] {
            let text = match log {
                Ok(text) if text.trim().is_empty() => "(empty)".to_owned(),
                Ok(text) => strip_ansi(&text),
                Err(e) => format!("(no log: {e})"),
            };
            record.diag(format!("log of {container} ({ns}/{name}, {which})"), text);
        }
    }
    record.diag(format!("events of {ns}/{name}"), pod_events(cluster, ns, Some(name)));
}

/// The events in `ns` (of `pod` only, when given), identical ones counted:
/// `12× Warning BackOff pod/hello: Back-off restarting failed container`.
pub fn pod_events(cluster: &Cluster, ns: &str, pod: Option<&str>) -> String {
    match cluster.block_on(Api::<Event>::namespaced(cluster.client(), ns).list(&ListParams::default())) {
        Ok(list) => {
            let events = list
                .items
                .iter()
                .filter(|e| pod.is_none_or(|p| e.involved_object.name.as_deref() == Some(p)));
            let text = aggregate_events(events);
            if text.is_empty() { "(none)".to_owned() } else { text }
        }
        Err(e) => format!("(listing events: {e})"),
    }
}

/// Identical events (type, reason, object, message) as one line with their
/// total count, in order of first appearance.
pub fn aggregate_events<'e>(events: impl IntoIterator<Item = &'e Event>) -> String {
    let mut seen: Vec<(String, i64)> = Vec::new();
    for e in events {
        let object = format!(
            "{}/{}",
            e.involved_object
                .kind
                .as_deref()
                .unwrap_or("object")
                .to_ascii_lowercase(),
            e.involved_object.name.as_deref().unwrap_or_default()
        );
        let line = format!(
            "{} {} {object}: {}",
            e.type_.as_deref().unwrap_or("Normal"),
            e.reason.as_deref().unwrap_or_default(),
            e.message.as_deref().unwrap_or_default().trim()
        );
        let count = i64::from(e.count.unwrap_or(1).max(1));
        match seen.iter_mut().find(|(l, _)| *l == line) {
            Some((_, n)) => *n += count,
            None => seen.push((line, count)),
        }
    }
    seen.iter().map(|(line, n)| format!("{n}× {line}\n")).collect()
}

// ---- rules -------------------------------------------------------------------

/// Why there is no expected rule set for a pod.
#[derive(Debug, thiserror::Error)]
pub enum ExpectedRulesError {
    #[error("encoding the pod: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("istio-cni render: {0}")]
    Render(#[source] RenderError),
    /// Running the scratch netns's `iptables-nft-restore`; `what` says which step.
    #[error("{what}: {source}")]
    Restore {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the rendered rules into a scratch netns: {stderr}")]
    Load { stderr: String },
}

/// What `istio-cni render` programs for `pod` (iptables, IPv4), in
/// `iptables-save`'s form: loaded into a scratch netns and saved back.
/// Empty when the plugin leaves the pod alone.
pub fn expected_rules(pod: &Pod) -> Result<String, ExpectedRulesError> {
    let restore = |what| move |source| ExpectedRulesError::Restore { what, source };
    let manifest = serde_json::to_string(pod).map_err(ExpectedRulesError::Encode)?;
    let opts = RenderOptions {
        ipv6: false,
        backend: Backend::Iptables,
        node: NodeEnv::default(),
    };
    let rendered = render_manifest(&manifest, &opts).map_err(ExpectedRulesError::Render)?;
    if !rendered.lines().any(|l| l.starts_with('*')) {
        return Ok(String::new());
    }
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", "iptables-nft-restore && iptables-nft-save"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(restore("unshare --net iptables-nft-restore"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rendered.as_bytes())
            .map_err(restore("feeding iptables-nft-restore"))?;
    }
    let out = child.wait_with_output().map_err(restore("iptables-nft-restore"))?;
    if !out.status.success() {
        return Err(ExpectedRulesError::Load {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(normalize_save(&String::from_utf8_lossy(&out.stdout)))
}

/// An `iptables-save` dump without what differs between two equal rule
/// sets: comments, counters, and tables that hold no rule.
pub fn normalize_save(save: &str) -> String {
    crate::save::tables(save)
        .into_iter()
        .filter(|t| t.rules)
        .map(|t| t.text)
        .collect()
}

/// Compares `pod`'s netns with the rules `istio-cni render` gives it; adds
/// the unified diff (or why there is none) to `record` and returns what is
/// wrong in a few words (`no ISTIO_OUTPUT chain in the pod netns`), `None`
/// when the rules are as expected.
pub fn rules_check(cluster: &Cluster, record: &mut Record, pod: &Pod) -> Option<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let actual = match cluster.iptables_save(ns, name) {
        Ok(save) => normalize_save(&save),
        Err(e) => {
            record.diag(format!("rules of {ns}/{name}"), format!("(could not read them: {e})"));
            return Some("its netns could not be read".to_owned());
        }
    };
    let expected = match expected_rules(pod) {
        Ok(rules) => rules,
        Err(e) => {
            record.diag(
                format!("rules in the netns of {ns}/{name}"),
                format!("(no expected set: {e})\n{actual}"),
            );
            return (!actual.contains(OUTPUT_CHAIN)).then(|| format!("no {OUTPUT_CHAIN} chain in the pod netns"));
        }
    };
    let diff = unified_diff(
        &expected,
        &actual,
        ("expected (istio-cni render)", "actual (iptables-save in the pod netns)"),
    );
    if diff.is_empty() {
        record.diag(
            format!("rules diff of {ns}/{name} (none)"),
            format!("the pod netns holds exactly the expected rules:\n{actual}"),
        );
        return None;
    }
    record.diag(format!("rules diff of {ns}/{name}: expected vs actual"), diff);
    let want_chain = expected.contains(OUTPUT_CHAIN);
    let has_chain = actual.contains(OUTPUT_CHAIN);
    Some(match (want_chain, has_chain) {
        (true, false) => format!("no {OUTPUT_CHAIN} chain in the pod netns"),
        (false, true) => "ISTIO rules in the netns of a pod the plugin must skip".to_owned(),
        _ => "the pod netns rules differ from the expected".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;

    #[test]
    fn cap_keeps_one_line_within_the_limit() {
        assert_eq!(cap("a\n  b\tc", 10), "a b c");
        let long = "x".repeat(300);
        let capped = cap(&long, REASON_MAX);
        assert_eq!(capped.chars().count(), REASON_MAX);
        assert!(capped.ends_with('…'));
    }

    #[test]
    fn ansi_sequences_go_text_stays() {
        let log =
            "\u{1b}[2m2025-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}]0;title\u{7}installed ünï\u{1b}(B";
        assert_eq!(strip_ansi(log), "2025-01-01T00:00:00Z  INFO installed ünï");
        assert_eq!(strip_ansi("plain\n"), "plain\n");
    }

    fn status(json: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "status": json
        }))
        .unwrap()
    }

    #[test]
    fn a_crash_looping_validation_is_named_with_its_exit_code_and_restarts() {
        let pod = status(serde_json::json!({
            "phase": "Pending",
            "initContainerStatuses": [{
                "name": "istio-validation", "image": "proxyv2", "imageID": "", "ready": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 126, "reason": "Error"}}
            }],
            "containerStatuses": [{
                "name": "hello", "image": "app", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}
            }]
        }));
        assert_eq!(
            pod_state(&pod),
            "phase Pending; init container istio-validation exited 126 (3 restarts)"
        );
        assert_eq!(failing_containers(&pod), ["istio-validation"]);
        let running = status(serde_json::json!({
            "phase": "Running",
            "initContainerStatuses": [{
                "name": "istio-validation", "image": "", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0}}
            }],
            "containerStatuses": [{
                "name": "proxy", "image": "", "imageID": "", "ready": false, "restartCount": 1,
                "state": {"running": {}}
            }]
        }));
        assert_eq!(pod_state(&running), "container proxy running, not ready (1 restart)");
        // Sampled while the failing init container runs once more.
        let again = status(serde_json::json!({
            "phase": "Pending",
            "initContainerStatuses": [{
                "name": "istio-validation", "image": "", "imageID": "", "ready": false, "restartCount": 5,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 126}}
            }]
        }));
        assert_eq!(
            pod_state(&again),
            "phase Pending; init container istio-validation exited 126, running again (5 restarts)"
        );
        assert_eq!(pod_state(&status(serde_json::json!({}))), "phase unknown");
    }

    #[test]
    fn identical_events_are_counted_once() {
        let event = |reason: &str, msg: &str, count: Option<i32>| Event {
            type_: Some("Warning".into()),
            reason: Some(reason.into()),
            message: Some(msg.into()),
            count,
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("hello".into()),
                ..ObjectReference::default()
            },
            ..Event::default()
        };
        let mut events: Vec<Event> = (0..11)
            .map(|_| event("BackOff", "Back-off restarting failed container", None))
            .collect();
        events.insert(1, event("Failed", "exit 126", Some(2)));
        events.push(event("BackOff", "Back-off restarting failed container", Some(1)));
        assert_eq!(
            aggregate_events(&events),
            "12× Warning BackOff pod/hello: Back-off restarting failed container\n\
             2× Warning Failed pod/hello: exit 126\n"
        );
    }

    #[test]
    fn saves_compare_without_counters_comments_or_empty_tables() {
        let save = "# Generated by iptables-nft-save\n*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n\
                    *nat\n:PREROUTING ACCEPT [3:180]\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n# Completed\n";
        assert_eq!(
            normalize_save(save),
            "*nat\n:PREROUTING ACCEPT\n:ISTIO_OUTPUT -\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"
        );
        let diff = unified_diff("*nat\n-A X\nCOMMIT\n", "*nat\nCOMMIT\n", ("want", "got"));
        assert!(diff.starts_with("--- want\n+++ got\n"), "{diff}");
        assert!(diff.contains("\n-A X\n") || diff.contains("\n--A X\n"), "{diff}");
        assert_eq!(unified_diff("same\n", "same\n", ("a", "b")), "");
    }
}
