//! `istio-cni-cluster`: an embedded cluster for kubectl.
//!
//! `up` starts one in the foreground, prints its kubeconfig and tears it
//! all down on Ctrl-C or SIGTERM; `down` stops one started elsewhere (for
//! example in the background with `&`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::ImageTable;
use istio_cni_kind::node::Layout;
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
    },
    /// Stop a cluster started by `up`.
    Down {
        #[arg(long, default_value = "istio-cni")]
        name: String,
    },
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

/// The workspace binaries next to this one serve as images.
fn images() -> ImageTable {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    ImageTable::new()
        .add("mesh-probe", dir.join("mesh-probe"), &[])
        .add("istio-cni", dir.join("istio-cni"), &[])
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
        } => up(&name, nodes, cni, single_conf, layout),
        Command::Down { name } => down(&name),
    };
    std::process::exit(code);
}

fn up(name: &str, nodes: u32, cni: Cni, single_conf: bool, layout: Layout) -> i32 {
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
        images: images(),
        ..ClusterSpec::default()
    };
    let cluster = match Cluster::create(spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("istio-cni-cluster: {e}");
            if !nix::unistd::geteuid().is_root() {
                eprintln!(
                    "istio-cni-cluster: the embedded cluster needs root, or run it inside `unshare --map-auto --map-root-user --net --mount`"
                );
            }
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
    println!("Ctrl-C (or `istio-cni-cluster down --name {name}`) tears it down.");
    cluster.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
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
