//! The kind tier: `cargo test -p scenarios --features kind` runs
//! `cni/<cni>/chained` for every kind primary CNI on a real kind cluster
//! (docker, kind v0.30.0, kubectl; helm for cilium; curl and tar for
//! flannel) and a running Docker engine, one cluster at a time. On a machine
//! without them each case checks that the scenario fails at once naming
//! what is missing, and says it did not run.
#![cfg(feature = "kind")]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use istio_cni_kind::backend::kind::{KindSpec, PrimaryCni};
use istio_cni_kind::backend::preflight::{engine, path_lookup, preflight};
use istio_cni_scenarios::catalog;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::scenario::Verdict;
use rstest::rstest;

/// Every case uses the same cluster name: one at a time.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

#[rstest]
fn kind_cni_chained(#[values("kindnet", "calico", "cilium", "flannel")] cni: &str) {
    let _turn = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let name = format!("cni/{cni}/chained");
    let scenario = catalog::named(&name).unwrap_or_else(|| panic!("no scenario {name}"));
    let env = Env::new(Target::Kind { cni: cni.into() }).unwrap();
    assert!(
        scenario.runs_on(&env.target),
        "{name} is not planned on kind --cni {cni}"
    );

    let primary: PrimaryCni = cni.parse().unwrap();
    let spec = KindSpec {
        cni: primary,
        ..KindSpec::new("istio-cni")
    };
    let tools = preflight("kind", &spec.required_tools(), path_lookup)
        .map_err(|e| e.to_string())
        .and_then(|()| engine("kind", "docker").map_err(|e| e.to_string()));
    let started = Instant::now();
    let outcome = scenario.run(&env);
    if let Err(missing) = tools {
        match &outcome.verdict {
            Verdict::Fail(why) => assert!(why.contains("the kind backend needs"), "{why}"),
            other => panic!("{name} without its tools: expected the preflight failure, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the preflight must fail at once"
        );
        eprintln!("{name} not run on this machine:\n{missing}");
        return;
    }
    outcome.eprint();
    outcome.assert_passed();
}
