//! A node's CNI directories in a scratch dir, and primary configs written
//! from each CNI's published templates (shared by the install_* tests).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Parser;
use istio_cni_agent::config::InstallSettings;
use istio_cni_agent::install::Installer;
use istio_cni_agent::metrics::Metrics;
use testkit::Scratch;

pub mod agent;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: InstallSettings,
}

/// Conf dir, bin dirs, run dir and a kubelet-style service-account dir.
pub struct Node {
    pub scratch: Scratch,
    pub conf: PathBuf,
    pub bin: PathBuf,
    pub src: PathBuf,
    pub run: PathBuf,
    pub sa: PathBuf,
}

pub const TOKEN: &str = "service_account_token_string";
pub const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUTest\n-----END CERTIFICATE-----\n";

/// The settings for a node laid out under `root` (see [`Node`]).
pub fn settings_at(root: &Path) -> InstallSettings {
    let mut s = Cli::try_parse_from(["agent"]).unwrap().settings;
    s.mounted_cni_net_dir = root.join("etc/cni/net.d");
    s.cni_bin_dir = root.join("opt/cni/bin");
    s.cni_bin_source_dir = root.join("image/opt/cni/bin");
    s.cni_agent_run_dir = root.join("var/run/istio-cni");
    s.service_account_dir = root.join("serviceaccount");
    s.kubernetes_service_host = "10.96.0.1".into();
    s.kubernetes_service_port = "443".into();
    s.exclude_namespaces = "kube-system".into();
    s.pod_namespace = "istio-system".into();
    s
}

impl Node {
    pub fn new(label: &str) -> Node {
        let scratch = Scratch::new(label);
        let s = settings_at(scratch.path());
        let node = Node {
            conf: s.mounted_cni_net_dir,
            bin: s.cni_bin_dir,
            src: s.cni_bin_source_dir,
            run: s.cni_agent_run_dir,
            sa: s.service_account_dir,
            scratch,
        };
        for d in [&node.conf, &node.bin, &node.src] {
            fs::create_dir_all(d).unwrap();
        }
        for (name, body) in [("istio-cni", "#!istio-cni v1\n"), ("istio-iptables", "#!iptables\n")] {
            fs::write(node.src.join(name), body).unwrap();
            fs::set_permissions(node.src.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        node.rotate_token(TOKEN, "2025_01_01_00_00_00.1");
        node
    }

    /// A node whose one primary config is `file`, holding `text`.
    pub fn with_primary(label: &str, file: &str, text: &str) -> Node {
        let node = Node::new(label);
        node.write(file, text);
        node
    }

    /// The kubelet's projected-volume layout: `..data -> ..<ts>`, `token -> ..data/token`;
    /// a new timestamped dir and an atomic `..data` swap per rotation.
    pub fn rotate_token(&self, token: &str, stamp: &str) {
        let ts = self.sa.join(format!("..{stamp}"));
        fs::create_dir_all(&ts).unwrap();
        fs::write(ts.join("token"), token).unwrap();
        fs::write(ts.join("ca.crt"), CA).unwrap();
        let tmp = self.sa.join("..data_tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).unwrap();
        fs::rename(&tmp, self.sa.join("..data")).unwrap();
        for f in ["token", "ca.crt"] {
            if fs::symlink_metadata(self.sa.join(f)).is_err() {
                std::os::unix::fs::symlink(format!("..data/{f}"), self.sa.join(f)).unwrap();
            }
        }
    }

    /// Istio's chart defaults for a sidecar install, pointed at this node.
    pub fn settings(&self) -> InstallSettings {
        settings_at(self.scratch.path())
    }

    pub fn installer(&self) -> Installer {
        self.installer_with(self.settings())
    }

    /// The installer after its first `install_all`, which must succeed.
    pub fn installed(&self) -> Installer {
        let mut installer = self.installer();
        installer.install_all().unwrap();
        installer
    }

    /// Asserts `installer` chose `file` as the primary config.
    pub fn assert_chosen(&self, installer: &Installer, file: &str) {
        assert_eq!(installer.current_path(), Some(self.conf.join(file).as_path()));
    }

    /// Uninstalls with `installer`; `file` must read `text` again.
    pub fn assert_restored(&self, installer: &mut Installer, file: &str, text: &str) {
        installer.cleanup().unwrap();
        assert_eq!(self.read(file), text, "{file} after the uninstall");
    }

    /// After an outside change to `file`: `check_valid` reports `complaint`,
    /// and `install_all` makes `file` read `want` again, valid once more.
    pub fn assert_reinstalled(&self, installer: &mut Installer, file: &str, complaint: &str, want: &str) {
        let err = installer.check_valid().unwrap_err().to_string();
        assert!(err.contains(complaint), "{err}");
        installer.install_all().unwrap();
        installer.check_valid().unwrap();
        assert_eq!(self.read(file), want, "{file} reinstalled");
    }

    pub fn installer_with(&self, settings: InstallSettings) -> Installer {
        Installer::new(settings, "info".into(), Metrics::new())
    }

    pub fn write(&self, name: &str, text: &str) {
        fs::write(self.conf.join(name), text).unwrap();
    }

    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.conf.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The conf dir's file names, sorted.
    pub fn conf_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.conf)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    pub fn mode(&self, path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Text with this node's scratch path replaced, for snapshots.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&*self.scratch.path().to_string_lossy(), "<node>")
    }
}

/// The plugin's view of our entry: what `istio-cni` parses on ADD, with the
/// `cniVersion`/`name` libcni injects from the list.
pub fn plugin_view(list_text: &str) -> istio_cni::cni::config::NetConf {
    let list: serde_json::Value = serde_json::from_str(list_text).unwrap();
    let plugins = list["plugins"].as_array().unwrap();
    let ours: Vec<_> = plugins.iter().filter(|p| p["type"] == "istio-cni").collect();
    assert_eq!(ours.len(), 1, "exactly one istio-cni entry: {list_text}");
    assert_eq!(
        plugins.last().unwrap()["type"],
        "istio-cni",
        "ours is last: {list_text}"
    );
    let mut conf = ours[0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    istio_cni::cni::config::NetConf::parse(conf.to_string().as_bytes()).unwrap()
}

/// Calico's `10-calico.conflist` as its installer renders it (mixed 4/6-space indentation).
pub const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "log_file_path": "/var/log/calico/cni/cni.log",
      "datastore_type": "kubernetes",
      "nodename": "worker-1",
      "mtu": 0,
      "ipam": {
          "type": "calico-ipam"
      },
      "policy": {
          "type": "k8s"
      },
      "kubernetes": {
          "kubeconfig": "/etc/cni/net.d/calico-kubeconfig"
      }
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": {"portMappings": true}
    },
    {
      "type": "bandwidth",
      "capabilities": {"bandwidth": true}
    }
  ]
}
"#;

/// Cilium's `05-cilium.conflist` (its 7-space plugin indentation included).
pub const CILIUM: &str = r#"{
  "cniVersion": "0.3.1",
  "name": "cilium",
  "plugins": [
    {
       "type": "cilium-cni",
       "enable-debug": false,
       "log-file": "/var/run/cilium/cilium-cni.log"
    }
  ]
}
"#;

/// Flannel's kube-flannel.yml `cni-conf.json`.
pub const FLANNEL: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
"#;

/// kind's kindnet `10-kindnet.conflist`: tabs, plugins at the key's column,
/// the `mtu` comma on its own line (Go template output).
pub const KINDNET: &str = "\n{\n\t\"cniVersion\": \"0.3.1\",\n\t\"name\": \"kindnet\",\n\t\"plugins\": [\n\t{\n\t\t\"type\": \"ptp\",\n\t\t\"ipMasq\": false,\n\t\t\"ipam\": {\n\t\t\t\"type\": \"host-local\",\n\t\t\t\"dataDir\": \"/run/cni-ipam-state\",\n\t\t\t\"routes\": [\n\t\t\t\t{ \"dst\": \"0.0.0.0/0\" }\n\t\t\t],\n\t\t\t\"ranges\": [\n\t\t\t\t[ { \"subnet\": \"10.244.0.0/24\" } ]\n\t\t\t]\n\t\t}\n\t\t,\n\t\t\"mtu\": 1500\n\t\t\n\t},\n\t{\n\t\t\"type\": \"portmap\",\n\t\t\"capabilities\": {\n\t\t\t\"portMappings\": true\n\t\t}\n\t}\n\t]\n}\n";

/// minikube's bridge `.conf`, without cniVersion (Istio's `minikube_cni.conf`).
pub const BRIDGE_CONF: &str = r#"{
  "name": "rkt.kubernetes.io",
  "type": "bridge",
  "bridge": "mybridge",
  "mtu": 1460,
  "addIf": "true",
  "isGateway": true,
  "ipMasq": true,
  "ipam": {
    "type": "host-local",
    "subnet": "10.1.0.0/16",
    "gateway": "10.1.0.1",
    "routes": [
      {
        "dst": "0.0.0.0/0"
      }
    ]
  }
}
"#;

/// Multus (thin plugin) `00-multus.conf`: a single plugin whose delegate is a
/// whole list with its own `plugins` and `type` keys, which must not be touched.
pub const MULTUS: &str = r#"{
  "cniVersion": "0.3.1",
  "name": "multus-cni-network",
  "type": "multus",
  "capabilities": {"portMappings": true, "bandwidth": true},
  "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
  "delegates": [
    {
      "cniVersion": "0.3.1",
      "name": "k8s-pod-network",
      "plugins": [
        {"type": "calico", "datastore_type": "kubernetes", "ipam": {"type": "calico-ipam"}},
        {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}
      ]
    }
  ]
}
"#;

/// Weave Net's `10-weave.conflist` (4-space indent, cniVersion 0.3.0).
pub const WEAVE: &str = r#"{
    "cniVersion": "0.3.0",
    "name": "weave",
    "plugins": [
        {
            "name": "weave",
            "type": "weave-net",
            "hairpinMode": true
        },
        {
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true
        }
    ]
}
"#;

/// The AWS VPC CNI's `10-aws.conflist` (0.4.0, disableCheck, string numbers).
pub const AWS_VPC: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "aws-cni",
  "disableCheck": true,
  "plugins": [
    {
      "name": "aws-cni",
      "type": "aws-cni",
      "vethPrefix": "eni",
      "mtu": "9001",
      "podSGEnforcingMode": "strict",
      "pluginLogFile": "/var/log/aws-routed-eni/plugin.log",
      "pluginLogLevel": "DEBUG",
      "capabilities": {"io.kubernetes.cri.pod-annotations": true}
    },
    {
      "name": "egress-cni",
      "type": "egress-cni",
      "mtu": "9001",
      "enabled": "false",
      "randomizeSNAT": "prng",
      "nodeIP": "",
      "ipam": {
         "type": "host-local",
         "ranges": [[{"subnet": "fd00::ac:00/118"}]],
         "routes": [{"dst": "::/0"}],
         "dataDir": "/run/cni/v4pd/egress-v6-ipam"
      },
      "pluginLogFile": "/var/log/aws-routed-eni/egress-v6-plugin.log",
      "pluginLogLevel": "DEBUG"
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": true
    }
  ]
}
"#;

/// k3s's embedded flannel `10-flannel.conflist` (no space after colons, 1.0.0).
pub const K3S_FLANNEL: &str = r#"{
  "name":"cbr0",
  "cniVersion":"1.0.0",
  "plugins":[
    {
      "type":"flannel",
      "delegate":{
        "hairpinMode":true,
        "forceAddress":true,
        "isDefaultGateway":true
      }
    },
    {
      "type":"portmap",
      "capabilities":{
        "portMappings":true
      }
    },
    {
      "type":"firewall"
    },
    {
      "type":"bandwidth",
      "capabilities":{
        "bandwidth":true
      }
    }
  ]
}
"#;
