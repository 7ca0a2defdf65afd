//! The `snapshot/<set>/<backend>/<family>` scenarios on the embedded cluster:
//! one cluster per backend × family with every annotation set's pod on it,
//! each scenario's rules checked against `istio-cni render` (in the scenario)
//! and pinned as one reviewed insta snapshot named after the scenario.

use istio_cni_scenarios::catalog;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::scenario::{Outcome, Verdict};
use istio_cni_scenarios::snapshot::{self, Family, RuleBackend};

/// `snapshot/<set>/<backend>/<family>` → `<set>__<backend>__<family>`
/// (file `snapshot__<set>__<backend>__<family>.snap`).
fn snapshot_name(scenario: &str) -> String {
    scenario.trim_start_matches("snapshot/").replace('/', "__")
}

fn env() -> Env {
    Env::new(Target::Local).unwrap_or_else(|e| panic!("locating the binaries: {e}"))
}

/// Pins every passed outcome, then fails with every failure at once.
fn check(outcomes: &[Outcome]) {
    let mut failures = Vec::new();
    for outcome in outcomes {
        match &outcome.verdict {
            Verdict::Pass => {
                for note in &outcome.record.notes {
                    eprintln!("NOTE: {}: {note}", outcome.name);
                }
                let text = snapshot::snapshot_of(outcome).unwrap_or_else(|| panic!("{}: no snapshot", outcome.name));
                insta::assert_snapshot!(snapshot_name(&outcome.name), text);
            }
            // Only a rootless run skips (a uid outside its user namespace).
            Verdict::Skip(reason) if reason.contains("is not mapped in this user namespace") => {
                eprintln!("SKIP: {}: {reason}", outcome.name)
            }
            Verdict::Skip(reason) => failures.push(format!("{} skipped: {reason}", outcome.name)),
            Verdict::Fail(_) => failures.push(format!("{:?}", outcome.verdict)),
        }
    }
    for outcome in outcomes.iter().filter(|o| matches!(o.verdict, Verdict::Fail(_))) {
        // Prints the first failure with its diagnostics.
        outcome.assert_passed();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[rstest::rstest]
fn matrix(
    #[values(RuleBackend::IptablesLegacy, RuleBackend::IptablesNft, RuleBackend::Nft)] backend: RuleBackend,
    #[values(Family::Ipv4, Family::Ipv6)] family: Family,
) {
    if !istio_cni_scenarios::harness::as_root(&format!("snapshot/*/{}/{}", backend.name(), family.name())) {
        return;
    }
    let sets = snapshot::load_sets(&snapshot::sets_dir()).unwrap_or_else(|e| panic!("{e}"));
    let start = std::time::Instant::now();
    let outcomes = snapshot::run_matrix(&env(), backend, family, &sets);
    eprintln!(
        "snapshot/*/{}/{}: {} pods in {:?}",
        backend.name(),
        family.name(),
        outcomes.len(),
        start.elapsed()
    );
    assert_eq!(outcomes.len(), sets.len());
    check(&outcomes);
}

/// A scenario run alone (as `--filter snapshot/<set>/nft` does) gives the
/// same snapshot as in its matrix.
#[test]
fn one_scenario_alone() {
    if !istio_cni_scenarios::harness::as_root("snapshot/tproxy/nft/ipv6 alone") {
        return;
    }
    let chosen = catalog::filter(catalog::all(), "snapshot/tproxy/nft/");
    let names: Vec<&str> = chosen.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["snapshot/tproxy/nft/ipv4", "snapshot/tproxy/nft/ipv6"]);
    let env = env();
    let outcome = chosen[1].run(&env);
    check(std::slice::from_ref(&outcome));
}
