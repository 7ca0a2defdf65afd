//! The `cni/...` scenarios on the embedded cluster: every local primary
//! profile × install mode (see `istio_cni_scenarios::cni`). Needs root
//! (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use istio_cni_kind::testing::privileged;
use istio_cni_scenarios::catalog;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::scenario::Verdict;
use rstest::rstest;

#[rstest]
fn cni(
    #[values("bridge", "ptp", "macvlan", "ipvlan")] profile: &str,
    #[values("chained", "single-conf", "standalone")] mode: &str,
) {
    let name = format!("cni/{profile}/{mode}");
    if !privileged(&name) {
        return;
    }
    let scenario = catalog::all()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"));
    let env = Env::new(Target::Local).unwrap();
    let outcome = scenario.run(&env);
    eprintln!("{name}: {:?} in {:?}", outcome.verdict, outcome.duration);
    for mark in &outcome.record.timeline {
        eprintln!("  {:>8.1?} {}", mark.at, mark.what);
    }
    if let Verdict::Skip(reason) = &outcome.verdict {
        // Only ipvlan may skip, and only where the kernel lacks it.
        assert!(profile == "ipvlan", "{name} skipped: {reason}");
    }
    outcome.assert_passed();
}

#[test]
fn kind_scenarios_skip_on_the_local_backend() {
    let env = Env::local_for_tests();
    for scenario in catalog::filter(catalog::all(), "cni/*/chained") {
        if ["kindnet", "calico", "cilium", "flannel"]
            .iter()
            .any(|c| scenario.name == format!("cni/{c}/chained"))
        {
            assert!(
                matches!(scenario.run(&env).verdict, Verdict::Skip(_)),
                "{}",
                scenario.name
            );
        }
    }
}
