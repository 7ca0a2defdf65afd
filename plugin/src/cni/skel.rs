//! The CNI entry point, like libcni's `skel`: validate the environment for
//! the command, parse and version-check the config, dispatch, and turn every
//! outcome into stdout (a result, nothing, or an error document) and an exit
//! code. Logs never go to stdout.

use std::io::Read;

use super::config::{NetConf, valid_name};
use super::error::{CniError, Code};
use super::result::CniResult;
use super::version::{CURRENT, Family, at_least, check_supported, version_reply};
use crate::cni::args::{self, K8sArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// The runtime's request, from `CNI_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub args: String,
    pub path: String,
    /// `CNI_NETNS_OVERRIDE`: skip the "netns is the plugin's own" check.
    pub netns_override: bool,
}

impl Request {
    /// Reads the variables through `lookup`. `Ok(None)` when `CNI_COMMAND`
    /// is unset (the binary was run by hand).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Request>, CniError> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let Some(command) = get("CNI_COMMAND") else {
            return Ok(None);
        };
        let command = Command::parse(&command)
            .ok_or_else(|| CniError::new(Code::InvalidEnvironment, format!("unknown CNI_COMMAND: {command}")))?;
        let needs: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Gc | Command::Status => &["CNI_PATH"],
            Command::Version => &[],
        };
        let missing: Vec<&str> = needs.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let request = Request {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args: get("CNI_ARGS").unwrap_or_default(),
            path: get("CNI_PATH").unwrap_or_default(),
            netns_override: matches!(get("CNI_NETNS_OVERRIDE").as_deref(), Some("1" | "true" | "TRUE")),
        };
        if needs.contains(&"CNI_CONTAINERID") && !valid_name(&request.container_id) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "invalid CNI_CONTAINERID {:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                    request.container_id
                ),
            ));
        }
        if needs.contains(&"CNI_IFNAME") {
            check_ifname(&request.ifname)?;
        }
        Ok(Some(request))
    }

    /// The Kubernetes pod identity from `CNI_ARGS`.
    pub fn k8s_args(&self) -> Result<K8sArgs, CniError> {
        args::parse(&self.args)
            .map_err(|e| CniError::new(Code::InvalidEnvironment, format!("failed to load args: {}", e.msg)))
    }
}

fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!("invalid CNI_IFNAME {name:?}: 1-15 characters, no '/', ':' or spaces, not '.' or '..'"),
        ));
    }
    Ok(())
}

/// The most bytes of network config read from stdin. The runtime sends one
/// plugin's config with its `runtimeConfig` and `prevResult`: a few KiB,
/// tens for a pod with many networks. 1 MiB is far above that and keeps a
/// hostile stdin from costing more than a few MiB of memory.
pub const MAX_STDIN: u64 = 1 << 20;

/// Reads the network config from `input`: at most [`MAX_STDIN`] + 1 bytes,
/// and an error when there is more.
pub fn read_config(input: impl Read) -> Result<Vec<u8>, CniError> {
    let mut bytes = Vec::new();
    input
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CniError::new(Code::Io, format!("reading the network config from stdin: {e}")))?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(CniError::new(
            Code::Io,
            format!("network config on stdin is larger than {MAX_STDIN} bytes"),
        ));
    }
    Ok(bytes)
}

/// The plugin's work behind the protocol.
pub trait Handler {
    /// ADD for a chained plugin: program the pod, or decide to leave it; the
    /// result printed is always the previous plugin's.
    fn add(&mut self, request: &Request, conf: &NetConf, prev: Option<&CniResult>) -> Result<(), CniError>;
    /// STATUS when the config opts into it (`status_check: true`).
    fn status(&mut self, conf: &NetConf) -> Result<(), CniError>;
    /// Whether `netns` is the plugin's own network namespace (libcni's code 8).
    fn is_own_netns(&self, netns: &str) -> bool;
}

/// What to write to stdout and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stdout: String,
    pub exit_code: i32,
}

impl Reply {
    fn ok(stdout: String) -> Reply {
        Reply { stdout, exit_code: 0 }
    }

    fn error(e: &CniError, version: &str) -> Reply {
        Reply {
            stdout: e.to_json(version),
            exit_code: 1,
        }
    }
}

/// Runs one CNI invocation.
pub fn dispatch(request: &Request, stdin: &[u8], handler: &mut dyn Handler) -> Reply {
    if request.command == Command::Version {
        return Reply::ok(version_reply());
    }
    let conf = match NetConf::parse(stdin) {
        Ok(conf) => conf,
        Err(e) => return Reply::error(&e, CURRENT),
    };
    let version = conf.cni_version.clone();
    match run(request, &conf, handler) {
        Ok(stdout) => Reply::ok(stdout),
        Err(e) => Reply::error(
            &e,
            if check_supported(&version).is_ok() {
                &version
            } else {
                CURRENT
            },
        ),
    }
}

fn run(request: &Request, conf: &NetConf, handler: &mut dyn Handler) -> Result<String, CniError> {
    check_supported(&conf.cni_version)?;
    let version = conf.cni_version.as_str();
    let needs = |min: &str, what: &str| {
        if at_least(version, min).unwrap_or(false) {
            Ok(())
        } else {
            Err(CniError::new(
                Code::IncompatibleVersion,
                format!("config version does not allow {what}"),
            ))
        }
    };
    let own_netns = |netns: &Option<String>| match netns {
        Some(ns) if !request.netns_override && handler.is_own_netns(ns) => Err(CniError::new(
            Code::InvalidNetns,
            format!("CNI_NETNS {ns} is the plugin's own network namespace"),
        )
        .with_details("the runtime must run the plugin in the host netns and pass the pod's netns")),
        _ => Ok(()),
    };
    match request.command {
        Command::Add => {
            own_netns(&request.netns)?;
            let family = Family::of(version).unwrap_or(Family::V100);
            let prev = conf
                .prev_result
                .as_ref()
                .map(|p| CniResult::decode(p, version))
                .transpose()?;
            handler.add(request, conf, prev.as_ref())?;
            Ok(prev.unwrap_or_else(|| CniResult::empty(family)).print(version))
        }
        // DEL removes nothing: the rules live and die with the pod's netns.
        Command::Del => Ok(String::new()),
        Command::Check => needs("0.4.0", "CHECK").map(|_| String::new()),
        Command::Gc => needs("1.1.0", "GC").map(|_| String::new()),
        Command::Status => {
            needs("1.1.0", "STATUS")?;
            if conf.status_check {
                handler.status(conf)?;
            }
            Ok(String::new())
        }
        Command::Version => Ok(version_reply()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        adds: Vec<(String, Option<usize>)>,
        fail_add: Option<CniError>,
        ready: bool,
    }

    impl Handler for Fake {
        fn add(&mut self, r: &Request, _: &NetConf, prev: Option<&CniResult>) -> Result<(), CniError> {
            self.adds
                .push((r.container_id.clone(), prev.map(|p| p.addresses().len())));
            self.fail_add.clone().map_or(Ok(()), Err)
        }
        fn status(&mut self, _: &NetConf) -> Result<(), CniError> {
            if self.ready {
                Ok(())
            } else {
                Err(CniError::new(Code::NotAvailable, "istio-cni node agent is not ready"))
            }
        }
        fn is_own_netns(&self, netns: &str) -> bool {
            netns == "/proc/self/ns/net"
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Result<Option<Request>, CniError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Request::from_env(|k| map.get(k).cloned())
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn request(command: &str) -> Request {
        let mut pairs = add_env();
        pairs[0].1 = command;
        env(&pairs).unwrap().unwrap()
    }

    fn conf(version: &str) -> Vec<u8> {
        json!({"cniVersion": version, "name": "k8s-pod-network", "type": "istio-cni"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn no_command_means_cli() {
        assert_eq!(env(&[]).unwrap(), None);
    }

    #[test]
    fn missing_and_invalid_environment_is_code_4_naming_the_variables() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(e.msg, "required env variables [CNI_NETNS,CNI_IFNAME,CNI_PATH] missing");
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().msg,
            "unknown CNI_COMMAND: FROB"
        );
        let mut bad_id = add_env();
        bad_id[1].1 = "-c1";
        assert_eq!(env(&bad_id).unwrap_err().code, 4);
        let mut bad_if = add_env();
        bad_if[3].1 = "eth0/x";
        assert_eq!(env(&bad_if).unwrap_err().code, 4);
        // DEL does not need a netns; GC and STATUS only the path.
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x")
            ])
            .is_ok()
        );
        assert!(env(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn add_prints_the_prev_result_in_the_config_version() {
        let mut fake = Fake::default();
        let stdin = json!({"cniVersion": "0.4.0", "name": "net", "type": "istio-cni", "prevResult": {
            "cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}], "dns": {}}});
        let reply = dispatch(&request("ADD"), stdin.to_string().as_bytes(), &mut fake);
        assert_eq!(reply.exit_code, 0, "{}", reply.stdout);
        let out: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
        assert_eq!(out, stdin["prevResult"]);
        assert_eq!(fake.adds, vec![("c1".to_string(), Some(1))]);
    }

    #[test]
    fn add_without_prev_result_prints_a_bare_result() {
        let reply = dispatch(&request("ADD"), &conf("1.0.0"), &mut Fake::default());
        assert_eq!(reply, Reply::ok("{\n    \"cniVersion\": \"1.0.0\"\n}".into()));
    }

    #[test]
    fn handler_errors_become_error_documents_on_stdout() {
        let mut fake = Fake {
            fail_add: Some(CniError::new(Code::Internal, "pod default/web: API unreachable")),
            ..Default::default()
        };
        let reply = dispatch(&request("ADD"), &conf("1.0.0"), &mut fake);
        assert_eq!(reply.exit_code, 1);
        let out: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
        assert_eq!(out["code"], 999);
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(out["msg"].as_str().unwrap().contains("API unreachable"));
    }

    #[test]
    fn config_errors_get_codes_6_7_and_1() {
        let code = |stdin: &[u8]| {
            let reply = dispatch(&request("ADD"), stdin, &mut Fake::default());
            assert_eq!(reply.exit_code, 1);
            serde_json::from_str::<serde_json::Value>(&reply.stdout).unwrap()["code"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(code(b"{not json"), 6);
        assert_eq!(code(br#"{"cniVersion": "1.0.0"}"#), 7);
        assert_eq!(code(&conf("2.0.0")), 1);
    }

    #[test]
    fn check_gc_and_status_need_their_versions() {
        let mut fake = Fake {
            ready: true,
            ..Default::default()
        };
        assert_eq!(
            dispatch(&request("CHECK"), &conf("0.4.0"), &mut fake),
            Reply::ok(String::new())
        );
        assert_eq!(dispatch(&request("CHECK"), &conf("0.3.1"), &mut fake).exit_code, 1);
        assert_eq!(
            dispatch(&request("GC"), &conf("1.1.0"), &mut fake),
            Reply::ok(String::new())
        );
        assert_eq!(dispatch(&request("GC"), &conf("1.0.0"), &mut fake).exit_code, 1);
        assert_eq!(dispatch(&request("STATUS"), &conf("1.0.0"), &mut fake).exit_code, 1);
        assert_eq!(
            dispatch(&request("DEL"), &conf("0.3.1"), &mut fake),
            Reply::ok(String::new())
        );
        assert!(fake.adds.is_empty());
    }

    #[test]
    fn status_is_success_unless_opted_in() {
        let mut fake = Fake::default();
        assert_eq!(
            dispatch(&request("STATUS"), &conf("1.1.0"), &mut fake),
            Reply::ok(String::new())
        );
        let opted = json!({"cniVersion": "1.1.0", "name": "net", "status_check": true}).to_string();
        let reply = dispatch(&request("STATUS"), opted.as_bytes(), &mut fake);
        assert_eq!(reply.exit_code, 1);
        assert!(reply.stdout.contains("\"code\": 50"), "{}", reply.stdout);
        fake.ready = true;
        assert_eq!(dispatch(&request("STATUS"), opted.as_bytes(), &mut fake).exit_code, 0);
    }

    #[test]
    fn the_plugins_own_netns_is_refused_before_any_work() {
        let mut pairs = add_env();
        pairs[2].1 = "/proc/self/ns/net";
        let req = env(&pairs).unwrap().unwrap();
        let mut fake = Fake::default();
        let reply = dispatch(&req, &conf("1.0.0"), &mut fake);
        assert_eq!(reply.exit_code, 1);
        assert!(reply.stdout.contains("\"code\": 8"), "{}", reply.stdout);
        assert!(fake.adds.is_empty());
    }

    #[test]
    fn stdin_is_read_up_to_one_byte_past_the_limit() {
        let limit = MAX_STDIN as usize;
        assert_eq!(read_config(&vec![b' '; limit][..]).unwrap().len(), limit);
        let mut endless = std::io::repeat(b' ');
        let e = read_config(&mut endless).unwrap_err();
        assert_eq!(e.code, 5);
        assert_eq!(e.msg, "network config on stdin is larger than 1048576 bytes");
        // Exactly one byte past the limit was taken from the stream.
        let mut input = std::io::Cursor::new(vec![b' '; limit + 10]);
        assert!(read_config(&mut input).is_err());
        assert_eq!(input.position(), limit as u64 + 1);
    }

    #[test]
    fn version_ignores_stdin() {
        let reply = dispatch(&request("VERSION"), b"garbage", &mut Fake::default());
        assert_eq!(reply.exit_code, 0);
        assert!(reply.stdout.contains("\"supportedVersions\""));
    }
}
