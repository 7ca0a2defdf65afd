//! The k3s backend: k3s (flannel as the primary CNI) in Docker containers, driven by `docker run`.
//!
//! One server container and optional agent containers on a Docker network
//! of their own, from the pinned `rancher/k3s` image: privileged, with
//! tmpfs `/run`, the API server published on `127.0.0.1`, traefik off and
//! flannel's VXLAN backend. k3s keeps its CNI config and plugins in
//! non-standard places; [`CNI_PATHS_IN_DOCKER`] are the ones the agent must use.
//!
//! A testcontainers-modules based implementation (its `K3s` module) is the
//! follow-up; this plan does the same with the Docker CLI.

use std::time::Duration;

use super::StartError;
use super::docker::DockerNodes;
use super::env::PlanEnv;
use super::exec::{self, TeardownGuard};
use super::images::{self, ImageBuild};
use super::kind::validate_name;
use super::plan::{self, Cmd, Plan, Step, path_arg};
use super::preflight::{self, Tool, path_lookup};
use super::versions;

/// Where a platform keeps CNI configs and plugins, and the Istio Helm `platform` value for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CniPaths {
    /// The CNI config directory on the node (Helm `cniConfDir`).
    pub conf_dir: &'static str,
    /// The CNI plugin directory on the node (Helm `cniBinDir`).
    pub bin_dir: &'static str,
    /// Istio's Helm `global.platform` for it.
    pub helm_platform: &'static str,
}

/// k3s in the `rancher/k3s` image, as this backend (and k3d) runs it: plugins in `/bin`.
pub const CNI_PATHS_IN_DOCKER: CniPaths = CniPaths {
    conf_dir: "/var/lib/rancher/k3s/agent/etc/cni/net.d",
    bin_dir: "/bin",
    helm_platform: "k3d",
};

/// k3s installed on a host: plugins in `/var/lib/rancher/k3s/data/cni` (since October 2024;
/// `data/current/bin` before).
pub const CNI_PATHS_ON_HOST: CniPaths = CniPaths {
    conf_dir: "/var/lib/rancher/k3s/agent/etc/cni/net.d",
    bin_dir: "/var/lib/rancher/k3s/data/cni",
    helm_platform: "k3s",
};

/// What k3s cluster to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sSpec {
    /// Names the Docker network and prefixes the containers.
    pub name: String,
    /// Agent (worker) containers besides the server.
    pub agents: u32,
    /// The API server port, the same inside the container and on `127.0.0.1`.
    pub api_port: u16,
    /// Images built on the host and imported into every node.
    pub images: Vec<ImageBuild>,
    /// Never delete the containers (also `KEEP_CLUSTER=1`).
    pub keep: bool,
    /// How long to wait for the nodes to become ready.
    pub ready_timeout: Duration,
}

impl K3sSpec {
    /// A server and one agent on API port 6550, building the test image.
    pub fn new(name: impl Into<String>) -> K3sSpec {
        K3sSpec {
            name: name.into(),
            agents: 1,
            api_port: 6550,
            images: vec![ImageBuild::test_image()],
            keep: false,
            ready_timeout: Duration::from_secs(300),
        }
    }

    /// The tools the plan runs.
    pub fn required_tools(&self) -> Vec<Tool> {
        vec![Tool::Docker, Tool::Kubectl]
    }

    fn server(&self) -> String {
        format!("{}-server", self.name)
    }

    fn agent_names(&self) -> Vec<String> {
        (1..=self.agents).map(|n| format!("{}-agent-{n}", self.name)).collect()
    }

    fn nodes(&self) -> Vec<String> {
        std::iter::once(self.server()).chain(self.agent_names()).collect()
    }

    fn keep(&self, env: &PlanEnv) -> bool {
        self.keep || env.keep_cluster
    }

    /// The join token: a fixed, test-only secret derived from the name.
    fn token(&self) -> String {
        format!("istio-cni-kind-{}", self.name)
    }
}

/// The plan that brings the k3s cluster up.
pub fn plan(spec: &K3sSpec, env: &PlanEnv) -> Plan {
    let dir = env.cluster_dir(&spec.name);
    let kubeconfig = dir.join("kubeconfig");
    let port = spec.api_port.to_string();
    let server = spec.server();
    let mut steps = plan::docker_preamble(&spec.required_tools());
    steps.insert(
        1,
        Step::Note(format!(
            "CNI paths on the nodes: conf {}, bin {} (Istio Helm global.platform={})",
            CNI_PATHS_IN_DOCKER.conf_dir, CNI_PATHS_IN_DOCKER.bin_dir, CNI_PATHS_IN_DOCKER.helm_platform
        )),
    );
    steps.push(Step::MakeDir(dir.clone()));
    let images = images::all_images(&spec.images, env);
    for image in &images {
        steps.extend(image.build_steps(env, &dir));
    }
    steps.push(Cmd::new("docker", ["network", "create", &spec.name]).step("a network for the nodes"));
    let token = format!("K3S_TOKEN={}", spec.token());
    let mut run_server = node_args(&server, &spec.name);
    run_server.extend(["-p".to_string(), format!("127.0.0.1:{port}:{port}")]);
    run_server.extend(["-e".to_string(), token.clone(), versions::K3S_IMAGE.to_string()]);
    run_server.extend(
        [
            "server",
            "--https-listen-port",
            &port,
            "--tls-san",
            "127.0.0.1",
            "--tls-san",
            &server,
            "--disable",
            "traefik",
        ]
        .map(String::from),
    );
    run_server.push("--flannel-backend=vxlan".to_string());
    steps.push(Cmd::new("docker", run_server).step(format!("start the k3s server ({})", versions::K3S_IMAGE)));
    for agent in spec.agent_names() {
        let mut run_agent = node_args(&agent, &spec.name);
        run_agent.extend([
            "-e".to_string(),
            format!("K3S_URL=https://{server}:{port}"),
            "-e".to_string(),
            token.clone(),
        ]);
        run_agent.extend([versions::K3S_IMAGE.to_string(), "agent".to_string()]);
        steps.push(Cmd::new("docker", run_agent).step(format!("start agent {agent}")));
    }
    steps.push(Step::WaitFor {
        probe: Cmd::new("docker", ["exec", &server, "test", "-s", "/etc/rancher/k3s/k3s.yaml"]),
        timeout: spec.ready_timeout,
        purpose: "the server wrote its kubeconfig".to_string(),
    });
    steps.push(
        Cmd::new(
            "docker",
            [
                "cp",
                &format!("{server}:/etc/rancher/k3s/k3s.yaml"),
                &path_arg(&kubeconfig),
            ],
        )
        .step(format!("copy it out (it points at https://127.0.0.1:{port})")),
    );
    steps.extend(plan::ready_steps(
        &kubeconfig,
        spec.ready_timeout,
        format!("every node Ready ({} nodes, flannel up)", 1 + spec.agents),
    ));
    for image in &images {
        for node in spec.nodes() {
            steps.push(
                Cmd::new(
                    "docker",
                    ["exec", "-i", &node, "ctr", "-n", "k8s.io", "images", "import", "-"],
                )
                .stdin_from(Cmd::new("docker", ["save", &image.tag]))
                .step(format!("import {} into {node}", image.tag)),
            );
        }
    }
    steps.push(Step::Note(format!(
        "on failure: container logs into {}",
        path_arg(&dir.join("logs"))
    )));
    steps.push(Step::Note(drop_note(spec, env)));
    Plan {
        title: format!(
            "k3s cluster {} in Docker: flannel (vxlan), 1 server + {} agent{}",
            spec.name,
            spec.agents,
            if spec.agents == 1 { "" } else { "s" }
        ),
        steps,
    }
}

/// `docker run` arguments every node shares.
fn node_args(container: &str, network: &str) -> Vec<String> {
    [
        "run",
        "-d",
        "--name",
        container,
        "--hostname",
        container,
        "--network",
        network,
        "--privileged",
    ]
    .into_iter()
    .chain(["--tmpfs", "/run", "--tmpfs", "/var/run"])
    .map(String::from)
    .collect()
}

fn drop_note(spec: &K3sSpec, env: &PlanEnv) -> String {
    if spec.keep(env) {
        format!(
            "on drop: containers kept (KEEP_CLUSTER=1); remove them with the teardown plan of {}",
            spec.name
        )
    } else {
        format!(
            "on drop: docker rm -f {}; docker network rm {}",
            spec.nodes().join(" "),
            spec.name
        )
    }
}

/// The plan that removes the cluster (on drop).
pub fn teardown_plan(spec: &K3sSpec, env: &PlanEnv) -> Plan {
    let steps = if spec.keep(env) {
        vec![Step::Note(drop_note(spec, env))]
    } else {
        let mut rm = vec!["rm".to_string(), "-f".to_string()];
        rm.extend(spec.nodes());
        vec![
            Cmd::new("docker", rm).step("remove the node containers"),
            Cmd::new("docker", ["network", "rm", &spec.name]).step("remove their network"),
        ]
    };
    Plan {
        title: format!("tear down k3s cluster {}", spec.name),
        steps,
    }
}

/// The plan run on failure: every container's log, and the pods as the server sees them.
pub fn failure_plan(spec: &K3sSpec, env: &PlanEnv) -> Plan {
    let logs = env.cluster_dir(&spec.name).join("logs");
    let mut steps = vec![Step::MakeDir(logs.clone())];
    for node in spec.nodes() {
        steps.push(
            Cmd::new("docker", ["logs", &node])
                .output_to(logs.join(format!("{node}.log")))
                .step(format!("log of {node}")),
        );
    }
    steps.push(
        Cmd::new(
            "docker",
            ["exec", &spec.server(), "kubectl", "get", "pods", "-A", "-o", "wide"],
        )
        .output_to(logs.join("pods.txt"))
        .step("pods, as the server sees them"),
    );
    Plan {
        title: format!("collect the logs of k3s cluster {}", spec.name),
        steps,
    }
}

/// Check the name and the tools (at once), then run [`plan`]; on failure
/// collect logs and remove what was started (unless kept). The containers
/// are removed on drop unless kept.
pub fn start(spec: &K3sSpec, env: &PlanEnv) -> Result<DockerNodes, StartError> {
    validate_name(&spec.name)?;
    preflight::preflight("k3s", &spec.required_tools(), path_lookup)?;
    preflight::engine("k3s", "docker")?;
    let cluster = DockerNodes::new(
        "k3s",
        spec.name.clone(),
        &env.cluster_dir(&spec.name),
        spec.nodes(),
        failure_plan(spec, env),
        TeardownGuard::new(teardown_plan(spec, env), !spec.keep(env)),
    );
    if let Err(error) = exec::run_plan(&plan(spec, env)) {
        let logs = cluster.export_logs().ok();
        return Err(StartError::Step {
            error: Box::new(error),
            logs,
        });
    }
    Ok(cluster)
}
