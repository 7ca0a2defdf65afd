//! The install pass against real primaries' configs: goldens of the chained
//! file, idempotence, byte-exact uninstall, selection (invalid files, twins,
//! a late primary), entries left by older Istio versions, user edits, file
//! modes, the kubeconfig and token rotation.

mod install_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use install_common::*;
use istio_cni_agent::config::InstallSettings;
use istio_cni_agent::install::{InstallError, Installer, STANDALONE_FILE, uninstall};
use istio_cni_agent::metrics::{InstallResult, Metrics};
use rstest::rstest;

/// Installs into `file`, snapshots the result, then checks idempotence
/// (same pass, restarted agent), the plugin's view, and that both cleanup and
/// a crash-time `uninstall` give back the original bytes.
#[rstest]
#[case::calico("calico", "10-calico.conflist", CALICO)]
#[case::cilium("cilium", "05-cilium.conflist", CILIUM)]
#[case::flannel("flannel", "10-flannel.conflist", FLANNEL)]
#[case::kindnet("kindnet", "10-kindnet.conflist", KINDNET)]
#[case::bridge_conf("bridge_conf", "10-bridge.conf", BRIDGE_CONF)]
#[case::multus("multus", "00-multus.conf", MULTUS)]
#[case::weave("weave", "10-weave.conflist", WEAVE)]
#[case::aws_vpc("aws_vpc", "10-aws.conflist", AWS_VPC)]
#[case::k3s_flannel("k3s_flannel", "10-flannel.conflist", K3S_FLANNEL)]
fn golden(#[case] label: &str, #[case] file: &str, #[case] original: &str) {
    let node = Node::with_primary(label, file, original);
    let mut installer = node.installed();
    let result_name = if file.ends_with(".conf") {
        format!("{file}list")
    } else {
        file.to_string()
    };
    assert_eq!(
        node.conf_files(),
        std::slice::from_ref(&result_name),
        "a .conf becomes a .conflist, nothing else appears"
    );
    node.assert_chosen(&installer, &result_name);
    let installed = node.read(&result_name);
    insta::assert_snapshot!(format!("golden_{label}"), node.redact(&installed));

    // Every byte of the original survives, in order: for a list the result
    // is the original with one insertion; a .conf is embedded verbatim.
    if file.ends_with(".conflist") {
        let inserted = installed.len() - original.len();
        let at = (0..original.len())
            .find(|&i| original.as_bytes()[i] != installed.as_bytes()[i])
            .unwrap();
        assert_eq!(&installed[..at], &original[..at]);
        assert_eq!(&installed[at + inserted..], &original[at..]);
    } else {
        assert!(installed.contains(original.trim_end()));
    }
    let conf = plugin_view(&installed);
    assert_eq!(conf.exclude_namespaces, ["kube-system"]);
    assert_eq!(conf.agent_run_dir, node.run);
    assert_eq!(conf.pod_namespace, "istio-system");
    let list: serde_json::Value = serde_json::from_str(&installed).unwrap();
    let primary: serde_json::Value = serde_json::from_str(original).unwrap();
    match primary.get("cniVersion") {
        Some(v) => assert_eq!(&list["cniVersion"], v, "the primary's cniVersion is kept"),
        None => assert_eq!(list["cniVersion"], "0.3.1"),
    }

    installer.check_valid().unwrap();
    installer.install_all().unwrap();
    assert_eq!(node.read(&result_name), installed, "install twice == install once");
    node.installed();
    assert_eq!(node.read(&result_name), installed, "a restarted agent changes nothing");

    installer.cleanup().unwrap();
    assert_eq!(node.conf_files(), [file]);
    assert_eq!(node.read(file), original, "cleanup restores the original bytes");
    assert!(!node.bin.join("istio-cni").exists());
    assert!(
        node.bin.join("istio-iptables").exists(),
        "only istio-cni is removed, as Istio"
    );
    assert!(!node.run.join("istio-cni-kubeconfig").exists());
    assert!(!node.run.join("istio-cni-install-state.json").exists());

    // The agent dies (no cleanup); `istio-cni-agent uninstall` restores from the state file.
    node.installed();
    assert_eq!(node.read(&result_name), installed);
    let report = uninstall(&node.settings()).unwrap();
    assert_eq!(report.restored, [node.conf.join(file)], "{report}");
    assert_eq!(node.read(file), original);
    assert_eq!(node.conf_files(), [file]);
    let again = uninstall(&node.settings()).unwrap();
    assert_eq!(again.to_string(), "nothing to clean up");
}

#[test]
fn invalid_files_are_skipped() {
    let node = Node::new("invalid");
    let bad = [
        ("00-non_json.conf", "This is not JSON\n"),
        (
            "01-bad_minikube.conf",
            "{\"cniVersion\": \"0.3.1\", \"name\": \"bridge\", \"bridge\": \"mybridge\"}\n",
        ),
        (
            "02-noname.conflist",
            "{\"cniVersion\": \"0.3.1\", \"plugins\": [{\"type\": \"calico\"}]}\n",
        ),
        (
            "03-noplugins.conflist",
            "{\"cniVersion\": \"0.3.1\", \"name\": \"k8s-pod-network\", \"pugins\": [{\"type\": \"calico\"}]}\n",
        ),
        ("04-empty.conf", ""),
        ("05-istio-cni-kubeconfig", "apiVersion: v1\n"),
    ];
    for (name, text) in bad {
        node.write(name, text);
    }
    node.write("06-calico.conflist", CALICO);
    node.write("07-bridge.conf", BRIDGE_CONF);
    let installer = node.installed();
    node.assert_chosen(&installer, "06-calico.conflist");
    for (name, text) in bad {
        assert_eq!(node.read(name), text, "{name} untouched");
    }
    assert_eq!(node.read("07-bridge.conf"), BRIDGE_CONF);
    plugin_view(&node.read("06-calico.conflist"));
}

#[test]
fn byte_order_picks_the_first_file() {
    let node = Node::new("order");
    node.write("a-bridge.conf", BRIDGE_CONF);
    node.write("Z-calico.conflist", CALICO);
    let installer = node.installed();
    node.assert_chosen(&installer, "Z-calico.conflist");
    assert_eq!(node.read("a-bridge.conf"), BRIDGE_CONF);
}

#[test]
fn conf_name_twins_resolve_both_ways() {
    // CNI_CONF_NAME names the .conf, only the .conflist exists: that one is used.
    let node = Node::with_primary("twin-list", "00-calico.conflist", CALICO);
    let mut s = node.settings();
    s.cni_conf_name = "00-calico.conf".into();
    let mut installer = node.installer_with(s);
    installer.install_all().unwrap();
    assert_eq!(node.conf_files(), ["00-calico.conflist"]);
    plugin_view(&node.read("00-calico.conflist"));

    // CNI_CONF_NAME names the .conflist, only the .conf exists: converted and renamed.
    let node = Node::with_primary("twin-conf", "00-minikube_cni.conf", BRIDGE_CONF);
    let mut s = node.settings();
    s.cni_conf_name = "00-minikube_cni.conflist".into();
    let mut installer = node.installer_with(s.clone());
    installer.install_all().unwrap();
    assert_eq!(node.conf_files(), ["00-minikube_cni.conflist"]);
    installer.check_valid().unwrap();
    installer.cleanup().unwrap();
    assert_eq!(node.conf_files(), ["00-minikube_cni.conf"]);
    assert_eq!(node.read("00-minikube_cni.conf"), BRIDGE_CONF);
}

#[test]
fn both_twins_present_is_refused_without_touching_either() {
    let node = Node::new("both-twins");
    node.write("10-x.conf", BRIDGE_CONF);
    node.write("10-x.conflist", CALICO);
    let metrics = Metrics::new();
    let mut installer = Installer::new(node.settings(), "info".into(), metrics.clone());
    let err = installer.install_all().unwrap_err().to_string();
    assert!(
        err.starts_with("create CNI config file: ") && err.contains("both"),
        "{err}"
    );
    assert_eq!(node.read("10-x.conf"), BRIDGE_CONF);
    assert_eq!(node.read("10-x.conflist"), CALICO);
    assert_eq!(metrics.install_count(InstallResult::CREATE_CNI_CONFIG_FAILURE), 1);
}

#[test]
fn a_late_primary_is_waited_for() {
    let node = Node::new("delayed");
    let metrics = Metrics::new();
    let mut installer = Installer::new(node.settings(), "info".into(), metrics.clone());
    for _ in 0..2 {
        match installer.install_all() {
            Err(InstallError::NoPrimaryConfig { dir, reason }) => {
                assert_eq!(dir, node.conf);
                assert!(reason.contains("no valid networks found"), "{reason}");
            }
            other => panic!("expected NoPrimaryConfig, got {other:?}"),
        }
    }
    // Waiting is not a failure.
    assert_eq!(metrics.install_count(InstallResult::CREATE_CNI_CONFIG_FAILURE), 0);
    // Binaries and kubeconfig are already in place while we wait.
    assert!(node.bin.join("istio-cni").exists());
    assert!(node.run.join("istio-cni-kubeconfig").exists());
    node.write("calico.conflist", CALICO);
    installer.install_all().unwrap();
    plugin_view(&node.read("calico.conflist"));

    // A named file that appears late, with a list body under a .conf name (Istio's case 13).
    let node = Node::new("delayed-named");
    let mut s = node.settings();
    s.cni_conf_name = "missing_initially.conf".into();
    node.write("00-other.conflist", FLANNEL);
    let mut installer = node.installer_with(s);
    let err = installer.install_all().unwrap_err();
    assert!(
        err.to_string()
            .contains("missing_initially.conf (or its .conf/.conflist twin) does not exist yet"),
        "{err}"
    );
    node.write("missing_initially.conf", CALICO);
    installer.install_all().unwrap();
    assert_eq!(node.conf_files(), ["00-other.conflist", "missing_initially.conflist"]);
    assert_eq!(node.read("00-other.conflist"), FLANNEL);
    node.assert_restored(&mut installer, "missing_initially.conf", CALICO);
}

/// An Istio installer's entry, as written by each version (docs/repair.md#entries-per-version).
fn old_entry(version: &str) -> &'static str {
    match version {
        "1.20" => {
            r#"{"cniVersion": "0.3.1", "name": "istio-cni", "type": "istio-cni", "log_level": "debug", "log_uds_address": "/var/run/istio-cni/log.sock", "kubernetes": {"kubeconfig": "/etc/cni/net.d/ZZZ-istio-cni-kubeconfig", "cni_bin_dir": "/opt/cni/bin", "exclude_namespaces": ["istio-system", "kube-system"]}}"#
        }
        "1.23" => {
            r#"{"ambient_enabled": false, "cni_event_address": "/var/run/istio-cni/pluginevent.sock", "dns": {}, "ipam": {}, "kubernetes": {"exclude_namespaces": [""], "kubeconfig": "/etc/cni/net.d/ZZZ-istio-cni-kubeconfig"}, "log_uds_address": "/var/run/istio-cni/log.sock", "name": "istio-cni", "plugin_log_level": "info", "type": "istio-cni"}"#
        }
        "1.29" => {
            r#"{"ambient_enabled": false, "cni_agent_run_dir": "/var/run/istio-cni", "dns": {}, "enable_ambient_detection_retry": false, "enablement_selectors": [], "exclude_namespaces": ["kube-system"], "ipam": {}, "name": "istio-cni", "native_nftables": false, "plugin_log_level": "info", "pod_namespace": "istio-system", "type": "istio-cni"}"#
        }
        _ => unreachable!(),
    }
}

#[rstest]
#[case::v1_20("1.20")]
#[case::v1_23("1.23")]
#[case::v1_29("1.29")]
fn entries_left_by_older_istio_are_replaced(#[case] version: &str) {
    let node = Node::new("old-entry");
    let entry = old_entry(version);
    // The old entry at the end (where Istio put it) and a duplicate in the middle (istio/istio#28258).
    let with_old = CALICO
        .replacen(
            "    {\n      \"type\": \"portmap\"",
            &format!("    {entry},\n    {{\n      \"type\": \"portmap\""),
            1,
        )
        .replacen(
            "{\"bandwidth\": true}\n    }\n",
            &format!("{{\"bandwidth\": true}}\n    }},\n    {entry}\n"),
            1,
        );
    assert_eq!(with_old.matches("\"type\": \"istio-cni\"").count(), 2, "{with_old}");
    node.write("10-calico.conflist", &with_old);
    let mut installer = node.installer();
    // Istio counts any istio-cni entry as valid; a stale one is not (docs/agent.md#stale-entries).
    installer.install_all().unwrap();
    let installed = node.read("10-calico.conflist");
    let conf = plugin_view(&installed);
    assert!(
        conf.has_agent_run_dir && conf.legacy_kubeconfig.is_none(),
        "{installed}"
    );
    // Removing the stale entries and appending ours gives the same file as a clean install.
    let clean = Node::with_primary("old-entry-clean", "10-calico.conflist", CALICO);
    clean.installed();
    assert_eq!(clean.redact(&clean.read("10-calico.conflist")), node.redact(&installed));
    // Uninstall does not bring a stale entry back: it would point at a deleted binary.
    node.assert_restored(&mut installer, "10-calico.conflist", CALICO);
}

#[test]
fn a_stale_entry_found_while_running_is_rewritten() {
    let node = Node::with_primary("stale-running", "10-calico.conflist", CALICO);
    let mut installer = node.installed();
    // A 1.29 agent on its way out rewrites the file with its own entry.
    let text = node.read("10-calico.conflist");
    let (without, _) = istio_cni_agent::install::conflist::remove_ours(&text).unwrap();
    let old = without.replacen(
        "{\"bandwidth\": true}\n    }",
        &format!("{{\"bandwidth\": true}}\n    }},{}", old_entry("1.29")),
        1,
    );
    node.write("10-calico.conflist", &old);
    node.assert_reinstalled(
        &mut installer,
        "10-calico.conflist",
        "differs from the desired one",
        &text,
    );
    node.assert_restored(&mut installer, "10-calico.conflist", CALICO);
}

#[test]
fn uninstall_after_a_user_edit_removes_only_our_entry() {
    let node = Node::with_primary("user-edit", "10-calico.conflist", CALICO);
    let mut installer = node.installed();
    let edit = |t: &str| {
        t.replacen(
            "\"log_level\": \"info\"",
            "\"log_level\": \"debug\",\n      \"mtu_note\": 1.50e3",
            1,
        )
    };
    node.write("10-calico.conflist", &edit(&node.read("10-calico.conflist")));
    node.assert_restored(&mut installer, "10-calico.conflist", &edit(CALICO));

    // The same through `uninstall` (state file, no agent memory), for a converted .conf.
    let node = Node::with_primary("user-edit-conf", "10-bridge.conf", BRIDGE_CONF);
    node.installed();
    let installed = node.read("10-bridge.conflist");
    let edited = installed.replacen("\"mtu\": 1460", "\"mtu\": 9000", 1);
    node.write("10-bridge.conflist", &edited);
    let report = uninstall(&node.settings()).unwrap();
    assert_eq!(report.entry_removed, [node.conf.join("10-bridge.conflist")], "{report}");
    assert_eq!(node.conf_files(), ["10-bridge.conflist"], "an edited list stays a list");
    let left = node.read("10-bridge.conflist");
    let (expected, _) = istio_cni_agent::install::conflist::remove_ours(&edited).unwrap();
    assert_eq!(left, expected);
    assert!(left.contains(&BRIDGE_CONF.trim_end().replacen("\"mtu\": 1460", "\"mtu\": 9000", 1)));
    assert!(!left.contains("istio-cni"));
}

#[test]
fn uninstall_without_state_still_removes_the_entry() {
    // The run dir is tmpfs: after a reboot the state is gone.
    let node = Node::with_primary("no-state", "10-calico.conflist", CALICO);
    node.installed();
    fs::remove_file(node.run.join("istio-cni-install-state.json")).unwrap();
    let report = uninstall(&node.settings()).unwrap();
    assert_eq!(report.entry_removed, [node.conf.join("10-calico.conflist")], "{report}");
    assert_eq!(node.read("10-calico.conflist"), CALICO);
    assert!(report.deleted.contains(&node.bin.join("istio-cni")), "{report}");
}

#[test]
fn modes_are_kept_and_set() {
    let node = Node::with_primary("modes", "10-calico.conflist", CALICO);
    let primary = node.conf.join("10-calico.conflist");
    fs::set_permissions(&primary, fs::Permissions::from_mode(0o640)).unwrap();
    let mut installer = node.installed();
    assert_eq!(node.mode(&primary), 0o640);
    assert_eq!(node.mode(&node.run.join("istio-cni-kubeconfig")), 0o600);
    assert_eq!(node.mode(&node.bin.join("istio-cni")), 0o755);
    installer.cleanup().unwrap();
    assert_eq!(node.mode(&primary), 0o640);

    let node = Node::with_primary("modes-conf", "10-bridge.conf", BRIDGE_CONF);
    fs::set_permissions(node.conf.join("10-bridge.conf"), fs::Permissions::from_mode(0o604)).unwrap();
    let mut s = node.settings();
    s.kubeconfig_mode = 0o640;
    let mut installer = node.installer_with(s);
    installer.install_all().unwrap();
    assert_eq!(node.mode(&node.conf.join("10-bridge.conflist")), 0o604);
    assert_eq!(node.mode(&node.run.join("istio-cni-kubeconfig")), 0o640);
    installer.cleanup().unwrap();
    assert_eq!(node.mode(&node.conf.join("10-bridge.conf")), 0o604);
}

#[test]
fn standalone_writes_and_deletes_its_own_file() {
    let node = Node::with_primary("standalone", "10-calico.conflist", CALICO);
    let mut s = node.settings();
    s.chained_cni_plugin = false;
    let mut installer = node.installer_with(s.clone());
    installer.install_all().unwrap();
    let path = node.conf.join(STANDALONE_FILE);
    assert_eq!(installer.current_path(), Some(path.as_path()));
    insta::assert_snapshot!("standalone", node.redact(&node.read(STANDALONE_FILE)));
    assert_eq!(node.mode(&path), 0o600);
    assert_eq!(node.read("10-calico.conflist"), CALICO);
    installer.check_valid().unwrap();
    installer.cleanup().unwrap();
    assert_eq!(node.conf_files(), ["10-calico.conflist"]);

    // OpenShift: a user-defined name, group-readable.
    s.cni_conf_name = "istio-cni.conf".into();
    s.cni_conf_group_read = true;
    let mut installer = node.installer_with(s.clone());
    installer.install_all().unwrap();
    assert_eq!(node.mode(&node.conf.join("istio-cni.conf")), 0o640);
    // Someone else's file under our name is not ours to delete.
    node.write("istio-cni.conf", BRIDGE_CONF);
    assert!(installer.check_valid().unwrap_err().to_string().contains("modified"));
    let report = uninstall(&s).unwrap();
    assert_eq!(report.untouched.len(), 1, "{report}");
    assert_eq!(node.read("istio-cni.conf"), BRIDGE_CONF);
}

#[test]
fn invalid_json_in_the_chosen_file_is_a_clear_error_and_untouched() {
    let node = Node::new("bad-json");
    let broken = "{\n  \"name\": \"k8s-pod-network\",\n  \"plugins\": [\n    {\"type\": \"calico\"},\n  ]\n}\n";
    node.write("10-calico.conflist", broken);
    let mut s = node.settings();
    s.cni_conf_name = "10-calico.conflist".into();
    let metrics = Metrics::new();
    let mut installer = Installer::new(s, "info".into(), metrics.clone());
    let err = installer.install_all().unwrap_err().to_string();
    assert!(
        err.starts_with("create CNI config file: ") && err.contains("10-calico.conflist: not valid JSON"),
        "{err}"
    );
    assert_eq!(node.read("10-calico.conflist"), broken);
    assert_eq!(node.conf_files(), ["10-calico.conflist"], "no temp file left behind");
    assert_eq!(metrics.install_count(InstallResult::CREATE_CNI_CONFIG_FAILURE), 1);
}

#[test]
fn a_higher_priority_file_later_is_only_logged() {
    // Istio 1.27+ pinning: the first choice stays.
    let node = Node::with_primary("preempt", "10-calico.conflist", CALICO);
    let mut installer = node.installed();
    node.write("05-cilium.conflist", CILIUM);
    installer.check_valid().unwrap();
    installer.install_all().unwrap();
    assert_eq!(node.read("05-cilium.conflist"), CILIUM);
    assert!(!installer.is_cilium());
    // The pinned file removed: wait for it, do not jump to another file.
    fs::remove_file(node.conf.join("10-calico.conflist")).unwrap();
    assert!(
        installer
            .check_valid()
            .unwrap_err()
            .to_string()
            .contains("CNI config file removed")
    );
    assert!(matches!(
        installer.install_all(),
        Err(InstallError::NoPrimaryConfig { .. })
    ));
    assert_eq!(node.read("05-cilium.conflist"), CILIUM);
}

#[test]
fn a_primary_rewrite_is_detected_and_reinstalled() {
    let node = Node::with_primary("rewrite", "05-cilium.conflist", CILIUM);
    let mut installer = node.installed();
    assert!(installer.is_cilium());
    let installed = node.read("05-cilium.conflist");
    node.write("05-cilium.conflist", CILIUM);
    node.assert_reinstalled(&mut installer, "05-cilium.conflist", "istio-cni not found", &installed);
    node.assert_restored(&mut installer, "05-cilium.conflist", CILIUM);
}

#[test]
fn kubeconfig_golden_and_token_rotation() {
    let node = Node::with_primary("kubeconfig", "10-calico.conflist", CALICO);
    let mut installer = node.installed();
    let path = node.run.join("istio-cni-kubeconfig");
    insta::assert_snapshot!("kubeconfig_tls", fs::read_to_string(&path).unwrap());
    let targets = installer.watch_targets();
    assert!(
        targets.contains(&node.sa) && targets.contains(&node.conf),
        "{targets:?}"
    );
    assert!(targets.contains(&node.bin.join("istio-cni")), "{targets:?}");

    // The kubelet swaps `..data` to a new timestamped dir; the next pass rewrites the kubeconfig.
    node.rotate_token("rotated-token", "2025_01_01_01_00_00.2");
    installer.install_all().unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("    token: rotated-token\n"), "{text}");
    assert!(!text.contains(TOKEN));
    assert_eq!(node.mode(&path), 0o600);

    let mut s = node.settings();
    s.skip_tls_verify = true;
    s.kubernetes_service_host = "fd00::1".into();
    node.installer_with(s).install_all().unwrap();
    insta::assert_snapshot!("kubeconfig_skip_tls", fs::read_to_string(&path).unwrap());
}

#[test]
fn step_failures_are_counted_and_named() {
    let node = Node::with_primary("failures", "10-calico.conflist", CALICO);
    let metrics = Metrics::new();
    // The error of an install with `edit`ed settings, counted in `metrics`.
    let fails_with = |edit: &dyn Fn(&mut InstallSettings)| {
        let mut s = node.settings();
        edit(&mut s);
        let err = Installer::new(s, "info".into(), metrics.clone())
            .install_all()
            .unwrap_err();
        err.to_string()
    };
    let err = fails_with(&|s| s.cni_bin_source_dir = node.scratch.join("no-such-dir"));
    assert!(
        err.starts_with("copy binaries: read dir ") && err.contains("no-such-dir"),
        "{err}"
    );
    assert_eq!(metrics.install_count(InstallResult::COPY_BINARIES_FAILURE), 1);

    let err = fails_with(&|s| s.kubernetes_service_host.clear());
    assert_eq!(
        err,
        "write kubeconfig: KUBERNETES_SERVICE_HOST not set. Is this not running within a pod?"
    );
    let err = fails_with(&|s| s.kube_ca_file = node.scratch.join("missing-ca.crt").to_string_lossy().into_owned());
    assert!(
        err.starts_with("write kubeconfig: read ") && err.contains("missing-ca.crt"),
        "{err}"
    );
    assert_eq!(metrics.install_count(InstallResult::CREATE_KUBECONFIG_FAILURE), 2);
    assert_eq!(node.read("10-calico.conflist"), CALICO, "no entry without a kubeconfig");
}
