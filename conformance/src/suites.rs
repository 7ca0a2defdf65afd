//! Suites and selection: which items a run covers, by stable name.
//!
//! | suite | items |
//! |---|---|
//! | `cni` | the CNI-spec cases, named `spec/<case>` (`spec/add/prev-result[1.0.0]`) |
//! | `install` | the scenarios of `platform/*`, and every scenario with a name segment starting with `install` or `uninstall` (`cni/ptp/install`, `deploy/uninstall-restores`) |
//! | `lifecycle` | the agent's lifecycle: `upgrade/*`, `race/scale-out/*`, `race/job*` |
//! | `scenarios` | every scenario of `istio_cni_scenarios::catalog::all()` |
//! | `all` | `cni` and `scenarios` |
//!
//! `--filter PATTERN` (repeatable; an item is kept when any pattern
//! matches) matches the full name as a substring, with `*` wildcards
//! (`cni/*/chained`) — the catalog's own matcher.

use istio_cni_scenarios::catalog;
use istio_cni_scenarios::scenario::Scenario;

use crate::cases;
use crate::options::SuiteOptions;

/// The prefix of the CNI-spec cases' names.
pub const SPEC_PREFIX: &str = "spec/";

/// A suite on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteName {
    /// The CNI 1.1 plugin contract: `spec/*` (needs the plugin; root).
    Cni,
    /// Installation on each platform's paths: `platform/*` and the install/uninstall scenarios.
    Install,
    /// The agent's lifecycle: upgrades, a joining node's race, Jobs on a fresh node.
    Lifecycle,
    /// Every scenario of the catalog.
    Scenarios,
    /// `cni` and `scenarios`.
    All,
}

impl SuiteName {
    /// Whether the suite has the CNI-spec cases.
    pub fn has_spec(self) -> bool {
        matches!(self, SuiteName::Cni | SuiteName::All)
    }

    /// Whether the scenario `name` belongs to the suite.
    pub fn has_scenario(self, name: &str) -> bool {
        match self {
            SuiteName::Cni => false,
            SuiteName::Install => is_install(name),
            SuiteName::Lifecycle => is_lifecycle(name),
            SuiteName::Scenarios | SuiteName::All => true,
        }
    }
}

/// The `install` suite's rule: `platform/*`, or a name segment starting
/// with `install` or `uninstall`.
pub fn is_install(name: &str) -> bool {
    name.starts_with("platform/")
        || name
            .split('/')
            .any(|seg| seg.starts_with("install") || seg.starts_with("uninstall"))
}

/// The `lifecycle` suite's rule: `upgrade/*`, `race/scale-out/*`, `race/job*`.
pub fn is_lifecycle(name: &str) -> bool {
    name.starts_with("upgrade/") || name.starts_with("race/scale-out/") || name.starts_with("race/job")
}

/// Whether `name` is kept by `filters` (all when there is none).
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|p| catalog::matches(name, p))
}

/// The first pattern of `filters` that keeps none of `names`, with up to
/// three of `names` closest to it: a typo in a CI gate's `--filter` must not
/// run nothing and pass.
pub fn unmatched_filter(filters: &[String], names: &[String]) -> Option<(String, Vec<String>)> {
    let pattern = filters.iter().find(|p| !names.iter().any(|n| catalog::matches(n, p)))?;
    Some((pattern.clone(), closest(pattern, names, 3)))
}

/// Up to `n` of `names` closest to `pattern`: fewest edits to turn the
/// pattern (without its `*`) into some part of the name, then the shorter name.
pub fn closest(pattern: &str, names: &[String], n: usize) -> Vec<String> {
    let wanted: Vec<char> = pattern.chars().filter(|c| *c != '*').collect();
    let mut scored: Vec<(usize, usize, &String)> = names
        .iter()
        .map(|name| (substring_distance(&wanted, name), name.len(), name))
        .collect();
    scored.sort();
    let mut out: Vec<String> = Vec::new();
    for (_, _, name) in scored {
        if out.len() == n {
            break;
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// The edit distance from `pattern` to the closest substring of `text`
/// (free start and end in `text`): how far the pattern is from matching.
fn substring_distance(pattern: &[char], text: &str) -> usize {
    let text: Vec<char> = text.chars().collect();
    // prev[j]: distance of pattern[..i] to the best substring ending at text[..j].
    let mut prev = vec![0usize; text.len() + 1];
    for (i, pc) in pattern.iter().enumerate() {
        let mut cur = vec![i + 1; text.len() + 1];
        for (j, tc) in text.iter().enumerate() {
            let substitute = prev[j] + usize::from(pc != tc);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev.into_iter().min().unwrap_or(0)
}

/// One thing a run will do.
#[derive(Clone)]
pub enum Planned {
    /// A CNI-spec case: its bare name (`version/report`).
    Spec { case: String },
    /// A catalog scenario.
    Scenario(Scenario),
}

impl Planned {
    /// The stable full name.
    pub fn name(&self) -> String {
        match self {
            Planned::Spec { case } => format!("{SPEC_PREFIX}{case}"),
            Planned::Scenario(s) => s.name.clone(),
        }
    }

    /// One line on what it proves.
    pub fn summary(&self) -> String {
        match self {
            Planned::Spec { case } => spec_summary(case).to_owned(),
            Planned::Scenario(s) => s.summary.clone(),
        }
    }
}

/// The items of `suite` kept by `filters`: spec cases first (for `spec`
/// options `opts`), then the scenarios of `scenarios` in catalog order.
pub fn plan(suite: SuiteName, filters: &[String], opts: &SuiteOptions, scenarios: Vec<Scenario>) -> Vec<Planned> {
    let mut planned = Vec::new();
    if suite.has_spec() {
        planned.extend(
            cases::selected_names(opts)
                .into_iter()
                .map(|case| Planned::Spec { case })
                .filter(|p| selected(&p.name(), filters)),
        );
    }
    planned.extend(
        scenarios
            .into_iter()
            .filter(|s| suite.has_scenario(&s.name) && selected(&s.name, filters))
            .map(Planned::Scenario),
    );
    planned
}

/// What a spec case checks, by its area (the first name segment).
pub fn spec_summary(case: &str) -> &'static str {
    match case.split('/').next().unwrap_or_default() {
        "version" => "VERSION prints one JSON object with the supported versions",
        "env" => "a missing CNI_* variable is error code 4 naming it",
        "config" => "garbage, nameless or unsupported-version config is refused with its code",
        "add" => "ADD passes the primary's prevResult through in the version's format",
        "del" => "DEL is idempotent, also without a netns or prevResult",
        "check" => "CHECK after ADD succeeds; refused before 0.4.0",
        "status" => "STATUS answers from 1.1.0; refused before",
        "gc" => "GC keeps valid attachments; refused before 1.1.0",
        "tolerate" => "unknown config keys, CNI_ARGS and env are tolerated",
        "concurrency" => "parallel ADDs and DELs each return their own result",
        "chain" => "the whole chain through a libcni-faithful runner",
        "stdout" => "every invocation prints at most one JSON document",
        _ => "CNI 1.1 plugin contract",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenarios() -> Vec<Scenario> {
        [
            "cni/ptp/chained",
            "cni/bridge/install",
            "race/repairPods",
            "platform/k3s",
            "skew/istio-1.28/native-sidecar",
        ]
        .into_iter()
        .map(|n| Scenario::new(n, format!("proves {n}"), |_, _| Ok(())))
        .collect()
    }

    fn names(suite: SuiteName, filters: &[&str]) -> Vec<String> {
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let mut opts = SuiteOptions::new("/x/istio-cni");
        opts.versions = vec!["1.0.0".into()];
        plan(suite, &filters, &opts, scenarios())
            .iter()
            .map(Planned::name)
            .collect()
    }

    #[test]
    fn suites_select_their_items() {
        let all = names(SuiteName::All, &[]);
        assert_eq!(all[0], "spec/version/report");
        assert!(all.iter().any(|n| n == "race/repairPods"));
        assert!(names(SuiteName::Cni, &[]).iter().all(|n| n.starts_with("spec/")));
        assert_eq!(names(SuiteName::Install, &[]), ["cni/bridge/install", "platform/k3s"]);
        let scen = names(SuiteName::Scenarios, &[]);
        assert_eq!(scen.len(), 5);
        assert!(scen.iter().all(|n| !n.starts_with("spec/")));
        assert_eq!(all.len(), names(SuiteName::Cni, &[]).len() + 5);
    }

    #[test]
    fn filters_match_substrings_and_wildcards_across_everything() {
        assert_eq!(names(SuiteName::All, &["cni/*/chained"]), ["cni/ptp/chained"]);
        assert_eq!(
            names(SuiteName::All, &["spec/del/twice", "k3s"]),
            ["spec/del/twice[1.0.0]", "platform/k3s"]
        );
        assert!(names(SuiteName::All, &["no-such-thing"]).is_empty());
        assert_eq!(names(SuiteName::Scenarios, &["race/"]), ["race/repairPods"]);
    }

    #[test]
    fn a_filter_that_keeps_nothing_is_named_with_the_closest_names() {
        let names: Vec<String> = names(SuiteName::All, &[]);
        let filters = |f: &[&str]| f.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert_eq!(unmatched_filter(&filters(&["cni/*/chained", "k3s"]), &names), None);
        assert_eq!(unmatched_filter(&[], &names), None, "no filter keeps everything");
        let (pattern, near) = unmatched_filter(&filters(&["race/", "race/repairPod5"]), &names).unwrap();
        assert_eq!(pattern, "race/repairPod5", "the first pattern that keeps nothing");
        assert_eq!(near[0], "race/repairPods");
        assert_eq!(near.len(), 3);
        let (_, near) = unmatched_filter(&filters(&["cni/ptp/chianed"]), &names).unwrap();
        assert_eq!(near[0], "cni/ptp/chained");
        let (_, near) = unmatched_filter(&filters(&["plaform/*"]), &names).unwrap();
        assert_eq!(near[0], "platform/k3s");
    }

    #[test]
    fn substring_distance_counts_the_edits_to_the_closest_part() {
        let d = |p: &str, t: &str| substring_distance(&p.chars().collect::<Vec<_>>(), t);
        assert_eq!(d("ptp", "cni/ptp/chained"), 0);
        assert_eq!(d("pdp", "cni/ptp/chained"), 1);
        assert_eq!(d("chianed", "cni/ptp/chained"), 2);
        assert_eq!(d("", "anything"), 0);
        assert_eq!(d("abc", ""), 3);
    }

    #[test]
    fn the_lifecycle_rule() {
        for name in [
            "upgrade/in-place/repairPods",
            "upgrade/independent",
            "race/scale-out/deletePods",
            "race/scale-out/taint",
            "race/job",
            "race/job/taint",
        ] {
            assert!(is_lifecycle(name), "{name}");
        }
        for name in [
            "race/repairPods",
            "race/scale",
            "cni/ptp/chained",
            "skew/release/previous-plugin",
            "jobs/race",
        ] {
            assert!(!is_lifecycle(name), "{name}");
        }
        let scenarios: Vec<Scenario> = ["race/repairPods", "race/job", "upgrade/independent", "platform/k3s"]
            .into_iter()
            .map(|n| Scenario::new(n, "", |_, _| Ok(())))
            .collect();
        let opts = SuiteOptions::new("/x/istio-cni");
        let names: Vec<String> = plan(SuiteName::Lifecycle, &[], &opts, scenarios)
            .iter()
            .map(Planned::name)
            .collect();
        assert_eq!(
            names,
            ["race/job", "upgrade/independent"],
            "no spec cases, lifecycle scenarios only"
        );
    }

    #[test]
    fn the_install_rule() {
        assert!(is_install("platform/openshift"));
        assert!(is_install("cni/ptp/install"));
        assert!(is_install("agent/uninstall-restores-config"));
        assert!(!is_install("race/repairPods"));
        assert!(!is_install("snapshot/reinstall/nft"), "a segment must start with it");
    }
}
