//! `istio-cni-cluster`: an embedded cluster for kubectl.
//!
//! `up` starts one in the foreground, prints its kubeconfig and tears it
//! all down on Ctrl-C or SIGTERM (as an ordinary user, in a user namespace it
//! enters itself, its API server still reachable from the user's shells); `down` stops one started elsewhere (for
//! example in the background with `&`); `node add|remove|list` change and
//! show its nodes through the control socket `up` listens on.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use istio_cni_kind::cluster::control::{self, Answer, Request};
use istio_cni_kind::cluster::userns::{self, Mapping};
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::ImageTable;
use istio_cni_kind::node::{Layout, NodeTaint};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Parser)]
#[command(
    name = "istio-cni-cluster",
    version,
    about = "An embedded Kubernetes cluster made of Linux namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster in the foreground; Ctrl-C tears it down.
    Up {
        /// Cluster name (for `down`).
        #[arg(long, default_value = "istio-cni")]
        name: String,
        /// Number of nodes (at least 1: pods need a node to run on).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        nodes: u32,
        /// Primary CNI on every node.
        #[arg(long, value_enum, default_value_t = Cni::Ptp)]
        cni: Cni,
        /// Write the primary CNI config as a single .conf.
        #[arg(long)]
        single_conf: bool,
        /// CNI directory layout of the nodes: default, gke, k3s, k3d, microk8s, minikube, openshift.
        #[arg(long, default_value = "default")]
        layout: Layout,
        /// Taints every node registers with, as kubelet's flag: key=value:Effect,key:Effect.
        #[arg(long, value_name = "TAINTS", value_parser = parse_taints)]
        register_with_taints: Option<Taints>,
        /// Run image REF from EXECUTABLE (its entrypoint); repeatable; before the built-in images.
        #[arg(long = "image", value_name = "REF=EXECUTABLE")]
        images: Vec<String>,
    },
    /// Stop a cluster started by `up`.
    Down {
        #[arg(long, default_value = "istio-cni")]
        name: String,
    },
    /// Add, remove or list the nodes of a cluster started by `up`.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
        /// The cluster (`up --name`).
        #[arg(long, global = true, default_value = "istio-cni")]
        cluster: String,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Add a node; it is Ready when this returns.
    Add {
        /// Its name (default: the next free node-N).
        name: Option<String>,
        /// Taints it registers with: key=value:Effect,key:Effect.
        #[arg(long, value_name = "TAINTS", value_parser = parse_taints)]
        register_with_taints: Option<Taints>,
        /// Labels it registers with: key=value,key=value.
        #[arg(long, value_name = "LABELS", value_parser = parse_labels)]
        node_labels: Option<std::collections::BTreeMap<String, String>>,
    },
    /// Remove a node: its pods are deleted, then the node.
    Remove { name: String },
    /// List the nodes.
    List,
}

/// A `--register-with-taints` list (one value, so clap keeps it whole).
#[derive(Clone)]
struct Taints(Vec<NodeTaint>);

fn parse_taints(list: &str) -> Result<Taints, String> {
    NodeTaint::parse_list(list).map(Taints).map_err(|e| e.to_string())
}

fn parse_labels(list: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("label {l:?}: expected key=value"))
        })
        .collect()
}

#[derive(Clone, Copy, ValueEnum)]
enum Cni {
    Bridge,
    Ptp,
    Macvlan,
    Ipvlan,
}

/// Where `up` records its pid and kubeconfig for `down` and for users: a
/// per-user place (`$XDG_RUNTIME_DIR`, else `~/.cache`), never a directory
/// shared between users.
fn state_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("istio-cni-cluster").join(name)
}

/// The workspace binaries next to this one serve as images: the agent's
/// (ours and Istio's `install-cni`), Istio's `proxyv2` and sample app,
/// mesh-probe and istio-cni; then the `--image` entries, which come first.
/// This run's agent image directory: per process, removed when `up` returns.
fn agent_image_dir(state: &std::path::Path) -> PathBuf {
    state.join(format!("agent-image-{}", std::process::id()))
}

fn images(entries: &[String], state: &std::path::Path) -> Result<ImageTable, String> {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let (agent, plugin) = (dir.join("istio-cni-agent"), dir.join("istio-cni"));
    let table = ImageTable::istio(dir.join("istio-cni"), dir.join("mesh-probe"));
    // The agent image as a directory (agent + plugin, as agent/Dockerfile
    // lays it out) where both binaries are here; else the agent alone.
    let table = if agent.is_file() && plugin.is_file() {
        let agent_image = agent_image_dir(state);
        table
            .with_agent_dir(&agent_image, &agent, &plugin)
            .map_err(|e| format!("laying out the agent image in {}: {e}", agent_image.display()))?
    } else {
        table.with_agent(agent)
    };
    let table = table.add("istio-cni", dir.join("istio-cni"), &[]);
    entries
        .iter()
        .try_fold(table, |table, entry| table.add_entry(entry).map_err(|e| e.to_string()))
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .init();
    let code = match Cli::parse().command {
        Command::Up {
            name,
            nodes,
            cni,
            single_conf,
            layout,
            register_with_taints,
            images,
        } => {
            let settings = |api_listener, images| Settings {
                nodes,
                cni,
                single_conf,
                layout,
                node_taints: register_with_taints.map(|t| t.0).unwrap_or_default(),
                images,
                api_listener,
            };
            match rootless() {
                Err(e) => {
                    eprintln!("istio-cni-cluster: {e}");
                    1
                }
                Ok(api_listener) => match self::images(&images, &state_dir(&name)) {
                    Ok(table) => {
                        let code = up(&name, settings(api_listener, table));
                        // Whatever happened, this run's image dir goes, and the
                        // state dir too when nothing else is in it.
                        let state = state_dir(&name);
                        let _ = std::fs::remove_dir_all(agent_image_dir(&state));
                        let _ = std::fs::remove_dir(&state);
                        let _ = state.parent().map(std::fs::remove_dir);
                        code
                    }
                    Err(e) => {
                        eprintln!("istio-cni-cluster: {e}");
                        2
                    }
                },
            }
        }
        Command::Down { name } => down(&name),
        Command::Node { command, cluster } => node(&cluster, command),
    };
    std::process::exit(code);
}

/// As an ordinary user, enter a user, network and mount namespace of our
/// own, with the API server's loopback listener bound first, here, in the
/// user's network namespace: the kubeconfig's address then works from the
/// user's other shells too. As root, nothing (`None`).
fn rootless() -> Result<Option<Arc<TcpListener>>, String> {
    if nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("binding the API server's listener on 127.0.0.1: {e}"))?;
    match userns::enter() {
        Ok(Mapping::Subordinate { .. }) => {}
        Ok(Mapping::Single { why }) => eprintln!(
            "istio-cni-cluster: only your own uid and gid exist in the cluster's user namespace ({why}); pods that run as other users fail"
        ),
        Err(e) => {
            return Err(format!(
                "entering a user namespace: {e}\nistio-cni-cluster: as an ordinary user the embedded cluster needs unprivileged user namespaces (sysctl user.max_user_namespaces > 0); else run it as root"
            ));
        }
    }
    Ok(Some(Arc::new(listener)))
}

/// What `up` builds.
struct Settings {
    nodes: u32,
    cni: Cni,
    single_conf: bool,
    layout: Layout,
    node_taints: Vec<NodeTaint>,
    images: ImageTable,
    api_listener: Option<Arc<TcpListener>>,
}

fn up(name: &str, settings: Settings) -> i32 {
    let Settings {
        nodes,
        cni,
        single_conf,
        layout,
        node_taints,
        images,
        api_listener,
    } = settings;
    let dir = state_dir(name);
    if let Ok(pid) = std::fs::read_to_string(dir.join("pid"))
        && let Ok(pid) = pid.trim().parse::<i32>()
        && kill(Pid::from_raw(pid), None).is_ok()
    {
        eprintln!(
            "istio-cni-cluster: a cluster named {name:?} is already running (pid {pid}); stop it with `istio-cni-cluster down --name {name}`"
        );
        return 1;
    }
    let profile = match cni {
        Cni::Bridge => Profile::Bridge,
        Cni::Ptp => Profile::Ptp,
        Cni::Macvlan => Profile::Macvlan,
        Cni::Ipvlan => Profile::Ipvlan,
    };
    let started = Instant::now();
    let spec = ClusterSpec {
        nodes,
        profile,
        single_conf,
        layout,
        images,
        node_taints,
        api_listener,
        ..ClusterSpec::default()
    };
    let cluster = match Cluster::create(spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("istio-cni-cluster: {e}");
            return 1;
        }
    };
    let kubeconfig = dir.join("kubeconfig");
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::copy(cluster.kubeconfig_path(), &kubeconfig))
        .and_then(|_| std::fs::write(dir.join("pid"), std::process::id().to_string()));
    if let Err(e) = saved {
        eprintln!("istio-cni-cluster: writing {}: {e}", dir.display());
        return 1;
    }
    let api_url = match cluster.local() {
        Ok(local) => local.api().https_url(),
        Err(e) => {
            eprintln!("istio-cni-cluster: {e}");
            return 1;
        }
    };
    println!(
        "cluster {name:?} is up ({nodes} node(s), {:.1?}); API server {api_url}",
        started.elapsed(),
    );
    println!("kubeconfig: {}", kubeconfig.display());
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("`istio-cni-cluster node add|remove|list --cluster {name}` changes its nodes.");
    println!("Ctrl-C (or `istio-cni-cluster down --name {name}`) tears it down.");
    let socket = dir.join("control.sock");
    let listener = match control::listen(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("istio-cni-cluster: listening on {}: {e}", socket.display());
            return 1;
        }
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let serving = scope.spawn(|| control::serve(&listener, &cluster, &stop));
        cluster.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        });
        // Wake the accept loop so it sees the stop (a command in flight finishes first).
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&socket);
        let _ = serving.join();
    });
    println!("tearing down cluster {name:?}");
    let code = match cluster.delete() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("istio-cni-cluster: {e}");
            1
        }
    };
    // Last: `down` waits for this to know the teardown is complete.
    let _ = std::fs::remove_dir_all(&dir);
    code
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
    kill(pid, None).is_ok() && !matches!(state, Some("Z") | Some("X") | None)
}

/// `node add|remove|list`: asks the running cluster, prints its nodes.
fn node(cluster: &str, command: NodeCommand) -> i32 {
    let request = match command {
        NodeCommand::Add {
            name,
            register_with_taints,
            node_labels,
        } => Request::Add {
            name,
            taints: register_with_taints
                .map(|t| t.0)
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect(),
            labels: node_labels.unwrap_or_default(),
        },
        NodeCommand::Remove { name } => Request::Remove { name },
        NodeCommand::List => Request::List,
    };
    let socket = state_dir(cluster).join("control.sock");
    if !socket.exists() {
        eprintln!(
            "istio-cni-cluster: no cluster named {cluster:?} is running (no {}); start one with `istio-cni-cluster up --name {cluster}`",
            socket.display()
        );
        return 1;
    }
    match control::call(&socket, &request) {
        Ok(Answer::Nodes(rows)) => {
            println!(
                "{:<16} {:<28} {:<15} {:<18} TAINTS",
                "NAME", "STATUS", "INTERNAL-IP", "POD-CIDR"
            );
            for r in rows {
                let taints = if r.taints.is_empty() {
                    "<none>".to_string()
                } else {
                    r.taints.join(",")
                };
                println!(
                    "{:<16} {:<28} {:<15} {:<18} {taints}",
                    r.name, r.status, r.internal_ip, r.pod_cidr
                );
            }
            0
        }
        Ok(Answer::Error(e)) => {
            eprintln!("istio-cni-cluster: {e}");
            1
        }
        Err(e) => {
            eprintln!("istio-cni-cluster: {e}");
            1
        }
    }
}

fn down(name: &str) -> i32 {
    let dir = state_dir(name);
    let pid = match std::fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        Some(pid) => Pid::from_raw(pid),
        None => {
            eprintln!(
                "istio-cni-cluster: no cluster named {name:?} is running (no {})",
                dir.join("pid").display()
            );
            return 1;
        }
    };
    if kill(pid, Signal::SIGTERM).is_err() {
        eprintln!("istio-cni-cluster: cluster {name:?} (pid {pid}) is not running; removing its state");
        let _ = std::fs::remove_dir_all(&dir);
        return 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) && dir.join("pid").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) && dir.join("pid").exists() {
        eprintln!("istio-cni-cluster: cluster {name:?} (pid {pid}) did not stop within 30 s");
        return 1;
    }
    println!("cluster {name:?} is down");
    0
}
