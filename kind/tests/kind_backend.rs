//! The kind, k3s and existing backends: generated configs and plans (insta
//! snapshots, in every build), preflight messages, the plan runner on
//! ordinary commands, and — with `--features kind` — the real thing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use insta::assert_snapshot;
use istio_cni_kind::backend::env::{Arch, PlanEnv};
use istio_cni_kind::backend::exec::{self, ExecError};
use istio_cni_kind::backend::existing::{self, ExistingSpec, KubeContext, KubeconfigError};
use istio_cni_kind::backend::images::{self, ImageBuild};
use istio_cni_kind::backend::k3s::{self, K3sSpec};
use istio_cni_kind::backend::kind::{self, KindSpec, PrimaryCni};
use istio_cni_kind::backend::plan::{Cmd, Plan, Step, quote};
use istio_cni_kind::backend::preflight::{MissingTools, Tool, preflight};
use istio_cni_kind::backend::versions::{self, KubeVersion};

const REPO: &str = "/src/istio-cni-rs";

fn env() -> PlanEnv {
    PlanEnv::fixed(REPO)
}

fn spec() -> KindSpec {
    KindSpec::new("istio-cni")
}

// ---- cluster configs ----

#[test]
fn config_per_cni_and_worker_count() {
    for cni in PrimaryCni::ALL {
        for workers in [1, 2] {
            let config = kind::cluster_config(&spec().with_cni(cni).with_workers(workers));
            assert_snapshot!(format!("config_{cni}_{workers}_workers"), config);
        }
    }
}

#[test]
fn config_per_kubernetes_version() {
    for version in KubeVersion::all() {
        let config = kind::cluster_config(&spec().with_version(version));
        assert_snapshot!(format!("config_kubernetes_{version}"), config);
    }
}

#[test]
fn config_is_valid_yaml_with_the_pinned_image_on_every_node() {
    for cni in PrimaryCni::ALL {
        let spec = spec().with_cni(cni).with_workers(3).with_version(KubeVersion::V1_32);
        let value: serde_yaml::Value = serde_yaml::from_str(&kind::cluster_config(&spec)).expect("parses");
        assert_eq!(value["kind"], "Cluster");
        assert_eq!(value["apiVersion"], "kind.x-k8s.io/v1alpha4");
        let nodes = value["nodes"].as_sequence().expect("nodes");
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0]["role"], "control-plane");
        for node in nodes {
            assert_eq!(node["image"].as_str(), Some(KubeVersion::V1_32.kind_image()));
        }
        let networking = &value["networking"];
        assert_eq!(
            networking["disableDefaultCNI"].as_bool().unwrap_or(false),
            cni != PrimaryCni::Kindnet
        );
        assert_eq!(networking["podSubnet"].as_str(), Some(cni.pod_subnet()));
        assert_eq!(networking["kubeProxyMode"].as_str(), Some(cni.kube_proxy_mode()));
    }
}

#[test]
fn versions_table_is_pinned_by_digest_and_parses() {
    let all: Vec<KubeVersion> = KubeVersion::all().collect();
    assert_eq!(
        all,
        [
            KubeVersion::V1_31,
            KubeVersion::V1_32,
            KubeVersion::V1_33,
            KubeVersion::V1_34
        ]
    );
    for version in all {
        assert!(
            version
                .kind_image()
                .starts_with(&format!("kindest/node:{version}@sha256:"))
        );
        assert_eq!(
            version.kind_image().len(),
            "kindest/node:@sha256:".len() + version.version().len() + 64
        );
        let minor = version
            .version()
            .trim_start_matches('v')
            .rsplit_once('.')
            .map(|(minor, _)| minor);
        assert_eq!(minor.and_then(|minor| minor.parse().ok()), Some(version));
        assert_eq!(version.version().parse(), Ok(version));
    }
    assert_eq!("v1.33".parse(), Ok(KubeVersion::V1_33));
    let error = "1.30".parse::<KubeVersion>().expect_err("1.30 is not pinned");
    assert_eq!(
        error.to_string(),
        "unsupported Kubernetes version \"1.30\": supported are v1.31.12, v1.32.8, v1.33.4, v1.34.0 \
         (add a row to backend::versions::NODE_IMAGES)"
    );
    assert!(
        "1.33.9".parse::<KubeVersion>().is_err(),
        "only the pinned patch version"
    );
    assert_eq!(KubeVersion::default(), KubeVersion::V1_34);
}

// ---- kind plans ----

#[test]
fn plan_kindnet_default() {
    let plan = kind::plan(&spec(), &env());
    assert!(
        !plan.to_string().contains("agent/Dockerfile"),
        "no agent Dockerfile, no agent image"
    );
    assert_snapshot!("plan_kindnet_default", plan.to_string());
}

#[test]
fn plan_per_primary_cni() {
    for cni in [PrimaryCni::Calico, PrimaryCni::Cilium, PrimaryCni::Flannel] {
        let plan = kind::plan(&spec().with_cni(cni).with_workers(2), &env());
        assert_snapshot!(format!("plan_{cni}"), plan.to_string());
    }
}

#[test]
fn plan_reuses_the_cluster_named_by_kind_cluster_name() {
    let env = PlanEnv {
        kind_cluster_name: Some("dev".to_string()),
        ..env()
    };
    let text = kind::plan(&spec(), &env).to_string();
    assert!(text.contains("kind get clusters | grep -qxF dev || kind create cluster --name dev"));
    assert_snapshot!("plan_reuse_kind_cluster_name", text);
}

#[test]
fn plan_keep_cluster() {
    let env = PlanEnv {
        keep_cluster: true,
        ..env()
    };
    assert_snapshot!("plan_keep_cluster", kind::plan(&spec(), &env).to_string());
}

#[test]
fn plan_with_agent_dockerfile() {
    let env = PlanEnv {
        agent_dockerfile: Some(PathBuf::from("agent/Dockerfile")),
        ..env()
    };
    let text = kind::plan(&spec(), &env).to_string();
    assert!(text.contains(&format!(
        "docker build -t istio-cni-rs/agent:dev -f {REPO}/agent/Dockerfile {REPO}\n"
    )));
    assert!(text.contains("kind load docker-image istio-cni-rs/agent:dev --name istio-cni"));
    assert_snapshot!("plan_with_agent_dockerfile", text);
}

#[test]
fn plan_orders_builds_before_the_cluster_and_loads_after_readiness() {
    let env = PlanEnv {
        agent_dockerfile: Some(PathBuf::from("agent/Dockerfile")),
        ..env()
    };
    let plan = kind::plan(&spec().with_cni(PrimaryCni::Calico), &env);
    let position = |needle: &str| {
        plan.steps
            .iter()
            .position(|step| step.to_string().contains(needle))
            .unwrap_or_else(|| panic!("{needle}"))
    };
    assert!(position("docker info") < position("docker build"));
    assert!(position("docker build") < position("kind create cluster"));
    assert!(position("kind create cluster") < position("projectcalico/calico"));
    assert!(position("projectcalico/calico") < position("condition=Ready"));
    assert!(position("condition=Ready") < position("kind load docker-image"));
}

#[test]
fn teardown_and_failure_plans() {
    assert_snapshot!("teardown", kind::teardown_plan(&spec(), &env()).to_string());
    let keep = PlanEnv {
        keep_cluster: true,
        ..env()
    };
    let kept = kind::teardown_plan(&spec(), &keep);
    assert!(
        kept.steps.iter().all(|step| matches!(step, Step::Note(_))),
        "a kept cluster is never deleted"
    );
    assert_snapshot!("teardown_keep_cluster", kept.to_string());
    let reuse = PlanEnv {
        kind_cluster_name: Some("dev".to_string()),
        ..env()
    };
    assert_snapshot!("teardown_reused", kind::teardown_plan(&spec(), &reuse).to_string());
    assert_snapshot!("failure_export_logs", kind::failure_plan(&spec(), &env()).to_string());
}

#[test]
fn required_tools_follow_the_cni() {
    let tools = |cni| spec().with_cni(cni).required_tools();
    assert_eq!(tools(PrimaryCni::Kindnet), [Tool::Docker, Tool::Kind, Tool::Kubectl]);
    assert_eq!(tools(PrimaryCni::Calico), [Tool::Docker, Tool::Kind, Tool::Kubectl]);
    assert_eq!(
        tools(PrimaryCni::Cilium),
        [Tool::Docker, Tool::Kind, Tool::Kubectl, Tool::Helm]
    );
    assert_eq!(
        tools(PrimaryCni::Flannel),
        [Tool::Docker, Tool::Kind, Tool::Kubectl, Tool::Curl, Tool::Tar]
    );
}

#[test]
fn names_and_nodes() {
    assert_eq!(
        kind::node_names("c", 3),
        ["c-control-plane", "c-worker", "c-worker2", "c-worker3"]
    );
    assert!(KindSpec::new("istio-cni.e2e-1").validate().is_ok());
    for bad in ["", "Istio", "-x", "a_b", "a b", &"x".repeat(51)] {
        let error = KindSpec::new(bad).validate().expect_err(bad);
        assert!(
            error.to_string().starts_with(&format!("invalid cluster name {bad:?}")),
            "{error}"
        );
    }
    assert_eq!("Calico".parse(), Ok(PrimaryCni::Calico));
    assert_eq!(
        "weave".parse::<PrimaryCni>(),
        Err("unknown primary CNI \"weave\": expected one of kindnet, calico, cilium, flannel".to_string())
    );
}

#[test]
fn test_image_dockerfile() {
    let dockerfile = images::test_image_dockerfile(&["istio-cni".to_string(), "mesh-probe".to_string()]);
    assert!(dockerfile.contains(&format!("FROM {}\n", versions::TEST_IMAGE_BASE)));
    assert_snapshot!("test_image_dockerfile", dockerfile);
    assert_eq!(
        ImageBuild::test_image().recipe,
        images::Recipe::Binaries {
            binaries: vec!["istio-cni".into(), "mesh-probe".into()],
            dockerfile
        }
    );
}

// ---- existing backend ----

fn kube_context() -> KubeContext {
    KubeContext {
        kubeconfig: PathBuf::from("/home/dev/.kube/staging.yaml"),
        context: "staging".to_string(),
        server: "https://10.0.0.1:6443".to_string(),
    }
}

#[test]
fn existing_plan_has_no_create_or_delete() {
    let spec = ExistingSpec {
        images: vec![ImageBuild::test_image()],
        ..ExistingSpec::new("unused")
    };
    let text = existing::plan(&kube_context(), &spec, &env()).to_string();
    for word in ["create", "delete", "docker"] {
        assert!(
            !text.lines().any(|line| !line.starts_with('#') && line.contains(word)),
            "{word} in\n{text}"
        );
    }
    assert_snapshot!("existing_plan", text);
}

#[test]
fn existing_plan_pushes_images_to_a_registry() {
    let spec = ExistingSpec {
        images: vec![ImageBuild::test_image()],
        registry: Some("registry.internal:5000/istio-cni/".to_string()),
        ..ExistingSpec::new("unused")
    };
    let env = PlanEnv {
        agent_dockerfile: Some(PathBuf::from("agent/Dockerfile")),
        ..env()
    };
    assert_eq!(spec.required_tools(&env), [Tool::Kubectl, Tool::Docker]);
    assert_snapshot!(
        "existing_plan_registry",
        existing::plan(&kube_context(), &spec, &env).to_string()
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("kind_backend")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: kind-lab
  context:
    cluster: lab
    user: admin
current-context: kind-lab
users:
- name: admin
  user:
    token: abc
";

#[test]
fn existing_validates_the_kubeconfig() {
    let dir = scratch("existing");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };

    let good = write("good", KUBECONFIG);
    assert_eq!(
        existing::validate(&good),
        Ok(KubeContext {
            kubeconfig: good.clone(),
            context: "kind-lab".to_string(),
            server: "https://127.0.0.1:6443".to_string()
        })
    );

    let missing = dir.join("missing");
    assert_eq!(
        existing::validate(&missing),
        Err(KubeconfigError::Missing(missing.clone()))
    );

    // The file (not written when None) and how its refusal begins; `{}`
    // stands for its path. Only the parser's own words follow the cut.
    let refused: [(&str, Option<String>, &str); 5] = [
        ("missing", None, "kubeconfig {} does not exist"),
        (
            "invalid",
            Some("clusters: [ {".into()),
            "kubeconfig {} is not a valid kubeconfig: ",
        ),
        (
            "empty",
            Some(String::new()),
            "kubeconfig {} has no current-context (set one with `kubectl config use-context NAME`)",
        ),
        (
            "unknown",
            Some(KUBECONFIG.replace("current-context: kind-lab", "current-context: prod")),
            "kubeconfig {}: current-context \"prod\" is not one of its contexts (kind-lab)",
        ),
        (
            "serverless",
            Some(KUBECONFIG.replace("    server: https://127.0.0.1:6443\n", "")),
            "kubeconfig {}: context \"kind-lab\" names cluster \"lab\", which is missing or has no server",
        ),
    ];
    for (name, text, begins) in refused {
        let path = match text {
            Some(text) => write(name, &text),
            None => dir.join(name),
        };
        let message = existing::validate(&path).expect_err(name).to_string();
        let begins = begins.replace("{}", &path.display().to_string());
        assert!(message.starts_with(&begins), "{name}: {message}");
    }
}

// ---- k3s backend ----

#[test]
fn k3s_plans() {
    let spec = K3sSpec::new("istio-cni-k3s");
    let text = k3s::plan(&spec, &env()).to_string();
    assert!(text.contains("--privileged --tmpfs /run --tmpfs /var/run"));
    assert!(text.contains(
        "server --https-listen-port 6550 --tls-san 127.0.0.1 --tls-san istio-cni-k3s-server --disable traefik \
         --flannel-backend=vxlan"
    ));
    assert_snapshot!("k3s_plan", text);
    assert_snapshot!("k3s_teardown", k3s::teardown_plan(&spec, &env()).to_string());
    assert_snapshot!("k3s_failure", k3s::failure_plan(&spec, &env()).to_string());
    assert_eq!(
        k3s::CNI_PATHS_IN_DOCKER.conf_dir,
        "/var/lib/rancher/k3s/agent/etc/cni/net.d"
    );
    assert_eq!(k3s::CNI_PATHS_ON_HOST.bin_dir, "/var/lib/rancher/k3s/data/cni");
}

// ---- preflight ----

#[test]
fn preflight_with_an_empty_path_names_every_tool_and_how_to_install_it() {
    let error = preflight("kind", &spec().required_tools(), |_| None).expect_err("nothing is on PATH");
    assert_eq!(
        error,
        MissingTools {
            backend: "kind",
            missing: vec![Tool::Docker, Tool::Kind, Tool::Kubectl]
        }
    );
    assert_eq!(
        error.to_string(),
        "the kind backend needs docker, kind, kubectl on PATH; install:
  - docker: a Docker engine and its CLI, https://docs.docker.com/engine/install/ (Debian: apt-get install docker.io); \
the daemon must be running and usable by this user
  - kind: v0.30.0, a release binary from https://github.com/kubernetes-sigs/kind/releases/tag/v0.30.0 or \
`go install sigs.k8s.io/kind@v0.30.0`
  - kubectl: https://kubernetes.io/docs/tasks/tools/ (Debian: apt-get install kubernetes-client)
(only the real-cluster tests, behind `--features kind`, need them; the cluster configs and plans are \
snapshot-tested in every build)"
    );
}

#[test]
fn preflight_names_only_what_is_missing() {
    let lookup = |program: &str| (program == "docker" || program == "kubectl").then(|| PathBuf::from("/usr/bin"));
    let error = preflight("kind", &spec().with_cni(PrimaryCni::Cilium).required_tools(), lookup).expect_err("kind");
    assert_eq!(error.missing, [Tool::Kind, Tool::Helm]);
    assert!(
        error
            .to_string()
            .starts_with("the kind backend needs kind, helm on PATH; install:\n  - kind: v0.30.0")
    );
    assert_eq!(preflight("kind", &[Tool::Docker], lookup), Ok(()));
}

// ---- rendering and the runner ----

#[test]
fn shell_quoting() {
    assert_eq!(
        quote("kindest/node:v1.34.0@sha256:ab"),
        "kindest/node:v1.34.0@sha256:ab"
    );
    assert_eq!(quote("{{.ServerVersion}}"), "'{{.ServerVersion}}'");
    assert_eq!(quote("it's"), r"'it'\''s'");
    assert_eq!(quote(""), "''");
}

#[test]
fn runner_feeds_stdin_pipes_and_redirects() {
    let dir = scratch("runner");
    let echoed = exec::run(
        &Cmd::new("cat", Vec::<String>::new()).stdin_text("one\ntwo\n"),
        Duration::from_secs(10),
    )
    .expect("cat");
    assert_eq!(echoed.stdout, "one\ntwo\n");

    let piped = Cmd::new("wc", ["-l"]).stdin_from(Cmd::new("printf", ["a\\nb\\nc\\n"]));
    assert_eq!(
        exec::run(&piped, Duration::from_secs(10)).expect("pipe").stdout.trim(),
        "3"
    );

    let file = dir.join("out").join("log.txt");
    exec::run(
        &Cmd::new("sh", ["-c", "echo out; echo err >&2"]).output_to(&file),
        Duration::from_secs(10),
    )
    .expect("redirect");
    assert_eq!(std::fs::read_to_string(&file).expect("log"), "out\nerr\n");

    match exec::run(
        &Cmd::new("sh", ["-c", "echo bad input >&2; exit 3"]),
        Duration::from_secs(10),
    ) {
        Err(ExecError::Failed { stderr, status, .. }) => {
            assert_eq!(stderr, "bad input\n");
            assert_eq!(status.code(), Some(3));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let upstream_fails = Cmd::new("cat", Vec::<String>::new()).stdin_from(Cmd::new("false", Vec::<String>::new()));
    assert!(
        matches!(exec::run(&upstream_fails, Duration::from_secs(10)), Err(ExecError::Failed { program, .. }) if program == "false")
    );

    let started = Instant::now();
    let slow = exec::run(&Cmd::new("sleep", ["30"]), Duration::from_millis(200));
    assert!(matches!(slow, Err(ExecError::Timeout { .. })), "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let missing = exec::run(
        &Cmd::new("istio-cni-kind-no-such-tool", Vec::<String>::new()),
        Duration::from_secs(1),
    );
    assert!(matches!(missing, Err(ExecError::Spawn { .. })));
}

#[test]
fn runner_runs_a_plan_in_order_and_reports_the_failed_step() {
    let dir = scratch("plan");
    let source = dir.join("bin");
    std::fs::write(&source, "binary").expect("write");
    let staged = dir.join("context");
    let marker = dir.join("marker");
    let plan = Plan {
        title: "test".to_string(),
        steps: vec![
            Step::Note("nothing".to_string()),
            Step::MakeDir(staged.clone()),
            Step::Stage {
                files: vec![source],
                dir: staged.clone(),
                purpose: "stage".to_string(),
            },
            Cmd::new("touch", [marker.display().to_string()]).step_unless(
                "skipped: the probe lists the line",
                Cmd::new("printf", ["a\\nready\\n"]),
                "ready",
            ),
            Step::WaitFor {
                probe: Cmd::new("true", Vec::<String>::new()),
                timeout: Duration::from_secs(5),
                purpose: "immediately".to_string(),
            },
            Cmd::new("sh", ["-c", "echo nope >&2; exit 1"]).step("this one fails"),
            Cmd::new("touch", [marker.display().to_string()]).step("never reached"),
        ],
    };
    let error = exec::run_plan(&plan).expect_err("step 6 fails");
    assert_eq!(std::fs::read_to_string(staged.join("bin")).expect("staged"), "binary");
    assert!(!marker.exists(), "skipped and never reached");
    assert_eq!(error.number, 6);
    assert_eq!(
        error.to_string(),
        "step 6 (this one fails) failed: `sh` failed (exit status: 1):\nnope\n  the step: sh -c 'echo nope >&2; exit 1'"
    );
}

#[test]
fn detected_env_reads_the_variables_and_the_agent_dockerfile() {
    let env = PlanEnv::detect_workspace();
    assert!(env.repo_root.join("Cargo.toml").is_file());
    assert_eq!(
        env.agent_dockerfile.is_some(),
        env.repo_root.join("agent/Dockerfile").is_file()
    );
    assert_eq!(
        env.kind_cluster_name,
        std::env::var("KIND_CLUSTER_NAME").ok().filter(|n| !n.trim().is_empty())
    );
    assert!(matches!(env.arch, Arch::Amd64 | Arch::Arm64));
}

/// A Docker CLI whose engine does not answer is refused at once, with what
/// the CLI said; one that reports a server version passes.
#[test]
fn a_docker_cli_without_an_engine_is_refused_saying_why() {
    use std::os::unix::fs::PermissionsExt;

    use istio_cni_kind::backend::preflight::engine;

    let dir = std::env::temp_dir().join(format!("istio-cni-fake-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    };
    let down = script(
        "docker-down",
        "echo 'Client: 28.2.2'; echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1",
    );
    let up = script("docker-up", "echo 28.2.2");
    let silent = script("docker-silent", "exit 0");

    let started = Instant::now();
    let error = engine("kind", &down).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = error.to_string();
    assert!(
        message.starts_with("the kind backend needs a running Docker engine"),
        "{message}"
    );
    assert!(message.contains("Cannot connect to the Docker daemon"), "{message}");
    assert!(message.contains("systemctl start docker"), "{message}");
    assert_eq!(engine("kind", &up), Ok(()));
    assert!(
        engine("k3s", &silent)
            .unwrap_err()
            .to_string()
            .contains("no server version")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the real backend (needs docker and kind) ----

/// Preflight against this machine's PATH: where docker or kind is missing it
/// answers at once with the install message, and never runs or pulls anything.
#[cfg(feature = "kind")]
#[test]
fn preflight_on_the_real_path_fails_fast_without_docker_or_kind() {
    use istio_cni_kind::backend::preflight::path_lookup;

    let started = Instant::now();
    let result = preflight("kind", &spec().required_tools(), path_lookup);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "preflight only searches PATH"
    );
    let absent = |program| path_lookup(program).is_none();
    if absent("docker") || absent("kind") || absent("kubectl") {
        let error = result.expect_err("a tool is missing");
        let message = error.to_string();
        assert!(message.starts_with("the kind backend needs "), "{message}");
        for tool in &error.missing {
            assert!(message.contains(&format!("  - {}: ", tool.program())), "{message}");
        }
        assert!(!message.contains("go install") || absent("kind"));
    } else {
        assert_eq!(result, Ok(()));
    }
}

/// A kindnet cluster, brought up and torn down. Without docker or kind the
/// backend must refuse at once with the preflight message.
#[cfg(feature = "kind")]
#[test]
fn kind_cluster_lifecycle() {
    use istio_cni_kind::backend::StartError;
    use istio_cni_kind::backend::preflight::path_lookup;

    let spec = KindSpec::new("istio-cni-kind-e2e").with_images(Vec::new());
    let env = PlanEnv::detect_workspace();
    let have_tools = preflight("kind", &spec.required_tools(), path_lookup).is_ok();
    let started = Instant::now();
    let result = kind::start(&spec, &env);
    if !have_tools {
        match result {
            Err(StartError::Tools(missing)) => {
                assert!(started.elapsed() < Duration::from_secs(1));
                eprintln!("kind e2e not run on this machine:\n{missing}");
            }
            other => panic!("expected the preflight error, got {other:?}"),
        }
        return;
    }
    let cluster = result.unwrap_or_else(|error| panic!("kind cluster did not come up: {error}"));
    assert!(cluster.kubeconfig().is_file());
    istio_cni_kind::backend::apply(
        cluster.name(),
        cluster.kubeconfig(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-cni-kind-e2e\n",
    )
    .unwrap_or_else(|error| panic!("apply failed: {error}"));
    let conflist = exec::run(
        &Cmd::new(
            "docker",
            ["exec", "istio-cni-kind-e2e-worker", "ls", kind::CNI_CONF_DIR],
        ),
        Duration::from_secs(30),
    )
    .expect("list the worker's CNI conf dir");
    assert!(
        conflist.stdout.contains(PrimaryCni::Kindnet.primary_conflist()),
        "{}",
        conflist.stdout
    );
}

// ---- one Cluster API over the backends ----

/// `Cluster::create` with the kind backend checks the tools before anything
/// runs: on a machine without kind (or docker, kubectl) it fails at once,
/// naming what to install.
#[test]
fn cluster_create_with_the_kind_backend_fails_fast_without_its_tools() {
    use istio_cni_kind::backend::StartError;
    use istio_cni_kind::backend::preflight::path_lookup;
    use istio_cni_kind::cluster::{Cluster, ClusterError, ClusterSpec, Target};

    if preflight("kind", &spec().required_tools(), path_lookup).is_ok() {
        eprintln!("NOTE: docker, kind and kubectl are installed: the real kind tests (--features kind) cover this");
        return;
    }
    let started = Instant::now();
    let result = Cluster::create(ClusterSpec {
        target: Target::kind(),
        nodes: 2,
        ..ClusterSpec::default()
    });
    let took = started.elapsed();
    let Err(error) = result else {
        panic!("created a kind cluster without its tools");
    };
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let message = error.to_string();
    assert!(matches!(&error, ClusterError::Start(StartError::Tools(_))), "{error:?}");
    assert!(message.starts_with("the kind backend needs "), "{message}");
    if path_lookup("kind").is_none() {
        assert!(message.contains("  - kind: v0.30.0"), "{message}");
        assert!(message.contains("go install sigs.k8s.io/kind@"), "{message}");
    }
}

/// Settings only the local backend can honour are refused, not ignored; an
/// unusable kubeconfig fails before anything runs.
#[test]
fn cluster_create_refuses_what_a_remote_backend_cannot_do() {
    use istio_cni_kind::cluster::{Cluster, ClusterError, ClusterSpec, Target};
    use istio_cni_kind::cni::Profile;

    let error = Cluster::create(ClusterSpec {
        target: Target::kind(),
        profile: Profile::Bridge,
        ..ClusterSpec::default()
    })
    .err()
    .expect("refused");
    assert!(
        matches!(&error, ClusterError::LocalOnly { target: "kind", .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "creating the cluster: profile Bridge applies to the local backend only; the kind cluster's CNI and paths are its own"
    );
    let error = Cluster::create(ClusterSpec {
        target: Target::existing("/nonexistent/kubeconfig"),
        ..ClusterSpec::default()
    })
    .err()
    .expect("refused");
    assert_eq!(error.to_string(), "kubeconfig /nonexistent/kubeconfig does not exist");
    assert_eq!(Target::default(), Target::Local);
    assert_eq!(
        [Target::Local, Target::kind(), Target::k3s(), Target::existing("k")].map(|b| b.name()),
        ["local", "kind", "k3s", "existing"]
    );
}
