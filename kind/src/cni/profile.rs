//! Primary CNI configurations, shaped like the ones real distributions ship:
//! bridge (`10-bridge.conflist`, the containernetworking example), ptp
//! (`10-kindnet.conflist`: kindnet's ptp + host-local + portmap), macvlan and
//! ipvlan (on the node's uplink), each with host-local IPAM over the node's
//! pod CIDR and optional chained `portmap`, `tuning` and `bandwidth`.
//!
//! macvlan/ipvlan pods cannot reach their own node's uplink address (the
//! kernel does not switch between a master and its macvlan/ipvlan children),
//! and their default route points at the pod CIDR's `.1`, which nothing
//! answers on: they suit single-node plugin tests, not cross-node traffic.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value, json};

use super::json::pretty;

/// A primary CNI plugin setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `bridge` (`cni0`, gateway on the bridge).
    Bridge,
    /// `ptp` (one veth per pod, kindnet's shape).
    Ptp,
    /// `macvlan` in bridge mode on the node's uplink.
    Macvlan,
    /// `ipvlan` in L2 mode on the node's uplink.
    Ipvlan,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 4] = [Profile::Bridge, Profile::Ptp, Profile::Macvlan, Profile::Ipvlan];

    /// Whether this kernel can create the profile's links. Only ipvlan
    /// (CONFIG_IPVLAN) is ever missing; it is probed in a throwaway netns.
    pub fn kernel_supports(self) -> bool {
        if self != Profile::Ipvlan {
            return true;
        }
        std::process::Command::new("unshare")
            .args([
                "--net",
                "sh",
                "-c",
                "ip link add v0 type veth peer name v1 && ip link add link v0 name iv0 type ipvlan mode l2",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The main plugin's `type`.
    pub fn plugin_type(self) -> &'static str {
        match self {
            Profile::Bridge => "bridge",
            Profile::Ptp => "ptp",
            Profile::Macvlan => "macvlan",
            Profile::Ipvlan => "ipvlan",
        }
    }

    /// The default network (and file base) name: `bridge`, `kindnet`,
    /// `macvlan`, `ipvlan`.
    pub fn network_name(self) -> &'static str {
        match self {
            Profile::Ptp => "kindnet",
            other => other.plugin_type(),
        }
    }

    /// Chained plugins a distribution ships with it (kindnet: portmap).
    pub fn default_chain(self) -> Vec<ChainedPlugin> {
        match self {
            Profile::Ptp => vec![ChainedPlugin::Portmap],
            _ => Vec::new(),
        }
    }

    /// Whether the profile needs a master interface in the node netns.
    pub fn needs_master(self) -> bool {
        matches!(self, Profile::Macvlan | Profile::Ipvlan)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plugin_type())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bridge" => Ok(Profile::Bridge),
            "ptp" | "kindnet" => Ok(Profile::Ptp),
            "macvlan" => Ok(Profile::Macvlan),
            "ipvlan" => Ok(Profile::Ipvlan),
            _ => Err(format!(
                "unknown CNI profile {s:?}; expected bridge, ptp, macvlan or ipvlan"
            )),
        }
    }
}

/// A plugin chained after the primary one.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainedPlugin {
    /// `portmap` with the `portMappings` capability.
    Portmap,
    /// `tuning`, setting the given sysctls in the pod netns.
    Tuning {
        /// sysctl name → value.
        sysctl: BTreeMap<String, String>,
    },
    /// `bandwidth` with the `bandwidth` capability and optional static limits
    /// (bits per second / bits).
    Bandwidth {
        /// `ingressRate`.
        ingress_rate: Option<u64>,
        /// `ingressBurst`.
        ingress_burst: Option<u64>,
        /// `egressRate`.
        egress_rate: Option<u64>,
        /// `egressBurst`.
        egress_burst: Option<u64>,
    },
}

impl ChainedPlugin {
    /// The plugin's `type`.
    pub fn plugin_type(&self) -> &'static str {
        match self {
            ChainedPlugin::Portmap => "portmap",
            ChainedPlugin::Tuning { .. } => "tuning",
            ChainedPlugin::Bandwidth { .. } => "bandwidth",
        }
    }

    fn to_json(&self) -> Value {
        match self {
            ChainedPlugin::Portmap => json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ChainedPlugin::Tuning { sysctl } => json!({"type": "tuning", "sysctl": sysctl}),
            ChainedPlugin::Bandwidth {
                ingress_rate,
                ingress_burst,
                egress_rate,
                egress_burst,
            } => {
                let mut obj = Map::new();
                obj.insert("type".into(), json!("bandwidth"));
                obj.insert("capabilities".into(), json!({"bandwidth": true}));
                for (key, value) in [
                    ("ingressRate", ingress_rate),
                    ("ingressBurst", ingress_burst),
                    ("egressRate", egress_rate),
                    ("egressBurst", egress_burst),
                ] {
                    if let Some(v) = value {
                        obj.insert(key.into(), json!(v));
                    }
                }
                Value::Object(obj)
            }
        }
    }
}

/// The file shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfFormat {
    /// A `.conflist` (plugins array).
    #[default]
    List,
    /// A single-plugin `.conf` (no chaining possible).
    Single,
}

/// Everything needed to write one node's primary CNI config.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Which plugin.
    pub profile: Profile,
    /// `.conflist` or `.conf`.
    pub format: ConfFormat,
    /// `cniVersion` (default `1.0.0`, the newest Debian's plugins support).
    pub cni_version: String,
    /// Network name (default: [`Profile::network_name`]).
    pub network_name: String,
    /// File name prefix (default `10`).
    pub priority: String,
    /// The node's pod CIDR, e.g. `10.251.0.0/24` (an IPv6 CIDR makes an
    /// IPv6 single-stack network).
    pub pod_cidr: String,
    /// A second, IPv6 pod CIDR for dual-stack pods (host-local's second range).
    pub pod_cidr_v6: Option<String>,
    /// host-local's `dataDir` (keep it under the node's tree); omitted when
    /// `None`, which makes host-local use the host's `/var/lib/cni/networks`.
    pub ipam_data_dir: Option<PathBuf>,
    /// The uplink for macvlan/ipvlan (default `eth0`).
    pub master: String,
    /// Interface MTU, when set.
    pub mtu: Option<u32>,
    /// bridge: the bridge device name (default `cni0`).
    pub bridge_name: String,
    /// bridge/ptp: `ipMasq` (default false: pod-to-pod keeps source IPs).
    pub ip_masq: bool,
    /// Chained plugins, in order.
    pub chain: Vec<ChainedPlugin>,
}

/// A generated config file.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedConfig {
    /// File name, e.g. `10-kindnet.conflist`.
    pub file_name: String,
    /// The document.
    pub json: Value,
}

impl GeneratedConfig {
    /// The file contents: pretty JSON with sorted keys and a final newline.
    pub fn text(&self) -> String {
        pretty(&self.json)
    }

    /// Writes the file into `dir` atomically (temporary file + rename) and
    /// returns its path.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(&self.file_name);
        let tmp = dir.join(format!(".{}.tmp", self.file_name));
        std::fs::write(&tmp, self.text())?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

impl ProfileConfig {
    /// A profile over `pod_cidr` with the distribution defaults.
    pub fn new(profile: Profile, pod_cidr: impl Into<String>) -> Self {
        Self {
            profile,
            format: ConfFormat::List,
            cni_version: "1.0.0".to_owned(),
            network_name: profile.network_name().to_owned(),
            priority: "10".to_owned(),
            pod_cidr: pod_cidr.into(),
            pod_cidr_v6: None,
            ipam_data_dir: None,
            master: "eth0".to_owned(),
            mtu: None,
            bridge_name: "cni0".to_owned(),
            ip_masq: false,
            chain: profile.default_chain(),
        }
    }

    /// Writes a single-plugin `.conf` (drops the chain).
    pub fn single_conf(mut self) -> Self {
        self.format = ConfFormat::Single;
        self.chain.clear();
        self
    }

    /// Sets the format.
    pub fn format(mut self, format: ConfFormat) -> Self {
        self.format = format;
        if format == ConfFormat::Single {
            self.chain.clear();
        }
        self
    }

    /// Sets `cniVersion`.
    pub fn cni_version(mut self, version: impl Into<String>) -> Self {
        self.cni_version = version.into();
        self
    }

    /// Sets the network name.
    pub fn network_name(mut self, name: impl Into<String>) -> Self {
        self.network_name = name.into();
        self
    }

    /// Sets the file-name priority prefix.
    pub fn priority(mut self, priority: impl Into<String>) -> Self {
        self.priority = priority.into();
        self
    }

    /// Adds an IPv6 range: every pod gets an address from both CIDRs.
    pub fn dual_stack(mut self, pod_cidr_v6: impl Into<String>) -> Self {
        self.pod_cidr_v6 = Some(pod_cidr_v6.into());
        self
    }

    /// Sets host-local's `dataDir`.
    pub fn ipam_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ipam_data_dir = Some(dir.into());
        self
    }

    /// Sets the macvlan/ipvlan master.
    pub fn master(mut self, master: impl Into<String>) -> Self {
        self.master = master.into();
        self
    }

    /// Sets the MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Sets `ipMasq` (bridge, ptp).
    pub fn ip_masq(mut self, on: bool) -> Self {
        self.ip_masq = on;
        self
    }

    /// Replaces the chained plugins.
    pub fn chain(mut self, chain: Vec<ChainedPlugin>) -> Self {
        self.chain = chain;
        self
    }

    /// Appends a chained plugin.
    pub fn with(mut self, plugin: ChainedPlugin) -> Self {
        self.chain.push(plugin);
        self
    }

    /// The file name: `<priority>-<network name>.conflist` or `.conf`.
    pub fn file_name(&self) -> String {
        let ext = match self.format {
            ConfFormat::List => "conflist",
            ConfFormat::Single => "conf",
        };
        format!("{}-{}.{ext}", self.priority, self.network_name)
    }

    fn ipam(&self) -> Value {
        let mut ipam = Map::new();
        ipam.insert("type".into(), json!("host-local"));
        let cidrs: Vec<&String> = std::iter::once(&self.pod_cidr).chain(&self.pod_cidr_v6).collect();
        let ranges: Vec<Value> = cidrs.iter().map(|c| json!([{"subnet": c}])).collect();
        // A default route per family the pod has an address in.
        let routes: Vec<Value> = cidrs
            .iter()
            .map(|c| json!({"dst": if c.contains(':') { "::/0" } else { "0.0.0.0/0" }}))
            .collect();
        ipam.insert("ranges".into(), json!(ranges));
        ipam.insert("routes".into(), json!(routes));
        if let Some(dir) = &self.ipam_data_dir {
            ipam.insert("dataDir".into(), json!(dir.to_string_lossy()));
        }
        Value::Object(ipam)
    }

    /// The primary plugin's object (without `name`/`cniVersion`).
    fn main_plugin(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("type".into(), json!(self.profile.plugin_type()));
        match self.profile {
            Profile::Bridge => {
                p.insert("bridge".into(), json!(self.bridge_name));
                p.insert("isGateway".into(), json!(true));
                p.insert("ipMasq".into(), json!(self.ip_masq));
                p.insert("hairpinMode".into(), json!(true));
            }
            Profile::Ptp => {
                p.insert("ipMasq".into(), json!(self.ip_masq));
            }
            Profile::Macvlan => {
                p.insert("master".into(), json!(self.master));
                p.insert("mode".into(), json!("bridge"));
            }
            Profile::Ipvlan => {
                p.insert("master".into(), json!(self.master));
                p.insert("mode".into(), json!("l2"));
            }
        }
        if let Some(mtu) = self.mtu {
            p.insert("mtu".into(), json!(mtu));
        }
        p.insert("ipam".into(), self.ipam());
        p
    }

    /// Generates the file. Errors when a `.conf` is asked to chain plugins,
    /// or required fields are empty.
    pub fn generate(&self) -> Result<GeneratedConfig, String> {
        if self.pod_cidr.is_empty() {
            return Err("profile needs a pod CIDR".to_owned());
        }
        if self.profile.needs_master() && self.master.is_empty() {
            return Err(format!("{} needs a master interface", self.profile));
        }
        let json = match self.format {
            ConfFormat::Single => {
                if !self.chain.is_empty() {
                    let types: Vec<_> = self.chain.iter().map(ChainedPlugin::plugin_type).collect();
                    return Err(format!(
                        "a single-plugin .conf cannot chain {}; use a .conflist",
                        types.join(", ")
                    ));
                }
                let mut obj = self.main_plugin();
                obj.insert("cniVersion".into(), json!(self.cni_version));
                obj.insert("name".into(), json!(self.network_name));
                Value::Object(obj)
            }
            ConfFormat::List => {
                let mut plugins = vec![Value::Object(self.main_plugin())];
                plugins.extend(self.chain.iter().map(ChainedPlugin::to_json));
                json!({"cniVersion": self.cni_version, "name": self.network_name, "plugins": plugins})
            }
        };
        Ok(GeneratedConfig {
            file_name: self.file_name(),
            json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::NetworkConfigList;

    fn base(profile: Profile) -> ProfileConfig {
        ProfileConfig::new(profile, "10.251.0.0/24").ipam_data_dir("/cluster/node-0/var/lib/cni/networks")
    }

    #[test]
    fn snapshots_of_every_profile_and_format() {
        for profile in Profile::ALL {
            for single in [false, true] {
                let cfg = if single {
                    base(profile).single_conf()
                } else {
                    base(profile)
                };
                let generated = cfg.generate().unwrap();
                let name = format!("{}_{}", profile, if single { "conf" } else { "conflist" });
                insta::assert_snapshot!(name, format!("# {}\n{}", generated.file_name, generated.text()));
            }
        }
    }

    #[test]
    fn snapshot_of_a_full_chain_at_0_4_0() {
        let mut sysctl = BTreeMap::new();
        sysctl.insert("net.ipv4.conf.eth0.rp_filter".to_owned(), "0".to_owned());
        let generated = base(Profile::Bridge)
            .cni_version("0.4.0")
            .mtu(1400)
            .with(ChainedPlugin::Portmap)
            .with(ChainedPlugin::Tuning { sysctl })
            .with(ChainedPlugin::Bandwidth {
                ingress_rate: Some(1_000_000),
                ingress_burst: Some(100_000),
                egress_rate: None,
                egress_burst: None,
            })
            .generate()
            .unwrap();
        insta::assert_snapshot!(format!("# {}\n{}", generated.file_name, generated.text()));
    }

    #[test]
    fn file_names_follow_distributions() {
        let names: Vec<String> = Profile::ALL.iter().map(|p| base(*p).file_name()).collect();
        assert_eq!(
            names,
            [
                "10-bridge.conflist",
                "10-kindnet.conflist",
                "10-macvlan.conflist",
                "10-ipvlan.conflist"
            ]
        );
        assert_eq!(base(Profile::Macvlan).single_conf().file_name(), "10-macvlan.conf");
        assert_eq!(base(Profile::Ptp).priority("05").file_name(), "05-kindnet.conflist");
    }

    #[test]
    fn generated_files_load_as_lists() {
        for profile in Profile::ALL {
            let list = base(profile).generate().unwrap();
            let parsed = NetworkConfigList::from_list_bytes(list.text().as_bytes()).unwrap();
            assert_eq!(parsed.plugins[0].plugin_type, profile.plugin_type());
            let conf = base(profile).single_conf().generate().unwrap();
            let parsed = NetworkConfigList::from_conf_bytes(conf.text().as_bytes()).unwrap();
            assert_eq!(parsed.name, profile.network_name());
            assert_eq!(parsed.cni_version, "1.0.0");
        }
    }

    #[test]
    fn ipv6_and_dual_stack_ranges() {
        let v6 = ProfileConfig::new(Profile::Ptp, "fd0a:fb:0::/64").generate().unwrap();
        let ipam = &v6.json["plugins"][0]["ipam"];
        assert_eq!(ipam["ranges"], json!([[{"subnet": "fd0a:fb:0::/64"}]]));
        assert_eq!(ipam["routes"], json!([{"dst": "::/0"}]));
        let dual = base(Profile::Bridge).dual_stack("fd0a:fb:0::/64").generate().unwrap();
        let ipam = &dual.json["plugins"][0]["ipam"];
        assert_eq!(
            ipam["ranges"],
            json!([[{"subnet": "10.251.0.0/24"}], [{"subnet": "fd0a:fb:0::/64"}]])
        );
        assert_eq!(ipam["routes"], json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]));
    }

    #[test]
    fn single_conf_cannot_chain() {
        let err = base(Profile::Bridge)
            .single_conf()
            .with(ChainedPlugin::Portmap)
            .generate()
            .unwrap_err();
        assert!(err.contains("cannot chain portmap"), "{err}");
        assert!(ProfileConfig::new(Profile::Bridge, "").generate().is_err());
        assert!(
            base(Profile::Ipvlan)
                .master("")
                .generate()
                .unwrap_err()
                .contains("master")
        );
    }

    #[test]
    fn profile_names_parse() {
        assert_eq!("kindnet".parse::<Profile>().unwrap(), Profile::Ptp);
        assert_eq!("Bridge".parse::<Profile>().unwrap(), Profile::Bridge);
        assert!("calico".parse::<Profile>().is_err());
    }
}
