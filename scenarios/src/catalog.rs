//! Every scenario, by stable name.

use crate::scenario::Scenario;

/// All scenarios in a stable order (family, then name).
pub fn all() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(crate::cni::scenarios());
    all.extend(crate::race::scenarios());
    all.extend(crate::skew::scenarios());
    all.extend(crate::snapshot::scenarios());
    all.extend(crate::platform::scenarios());
    all.extend(crate::lifecycle::scenarios());
    all
}

/// The scenario called exactly `name`.
pub fn named(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// Scenarios whose name contains `pattern` (a plain substring, or `*`
/// wildcards: `cni/*/chained`).
pub fn filter(scenarios: Vec<Scenario>, pattern: &str) -> Vec<Scenario> {
    scenarios.into_iter().filter(|s| matches(&s.name, pattern)).collect()
}

/// Substring match with `*` wildcards.
pub fn matches(name: &str, pattern: &str) -> bool {
    if !pattern.contains('*') {
        return name.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        match rest.find(part) {
            Some(at) if i > 0 || at == 0 || !pattern.starts_with(part) => rest = &rest[at + part.len()..],
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<String> = all().into_iter().map(|s| s.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate scenario names");
    }

    #[test]
    fn filters() {
        assert!(matches("cni/ptp/chained", "ptp"));
        assert!(matches("cni/ptp/chained", "cni/*/chained"));
        assert!(!matches("cni/ptp/standalone", "cni/*/chained"));
        assert!(matches("race/repairPods", "race/*"));
    }
}
