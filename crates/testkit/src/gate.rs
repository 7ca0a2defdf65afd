//! The privilege gate.

use std::path::PathBuf;

/// The environment variable under which a test that cannot run fails
/// instead of skipping.
const REQUIRE: &str = "ISTIO_CNI_REQUIRE_PRIVILEGED";

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Root, or root of a user namespace (namespaces, iptables, mounts).
    Root,
    /// A program on `PATH` (see [`crate::on_path`]).
    Tool(&'static str),
    /// The primary CNI plugins (bridge, ptp, host-local ...) in
    /// `$CNI_PLUGINS_DIR` or `/usr/lib/cni`.
    CniPlugins,
}

impl Need {
    /// Why this need is not met here, or `None` when it is.
    fn unmet(self) -> Option<String> {
        match self {
            Need::Root => (!nix::unistd::geteuid().is_root())
                .then(|| "not root (namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_owned()),
            Need::Tool(tool) => crate::on_path(tool)
                .is_none()
                .then(|| format!("{tool} not found in PATH")),
            Need::CniPlugins => {
                let dir = cni_plugins_dir();
                (!dir.join("bridge").is_file()).then(|| {
                    format!(
                        "no CNI plugins in {} (install containernetworking-plugins or set CNI_PLUGINS_DIR)",
                        dir.display()
                    )
                })
            }
        }
    }
}

fn cni_plugins_dir() -> PathBuf {
    std::env::var_os("CNI_PLUGINS_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// Whether `test` can run here given what it `needs`. When it cannot, see
/// [`skip`].
pub fn gate(test: &str, needs: &[Need]) -> bool {
    match needs.iter().find_map(|need| need.unmet()) {
        None => true,
        Some(reason) => skip(test, &reason),
    }
}

/// Whether `test`, which needs root (namespaces, iptables, mounts), can run
/// here: [`gate`] with [`Need::Root`].
pub fn privileged(test: &str) -> bool {
    gate(test, &[Need::Root])
}

/// Reports that `test` cannot run for `reason`: prints `SKIP: test: reason`
/// and returns false, or panics under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`.
pub fn skip(test: &str, reason: &str) -> bool {
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{test}: cannot run and {REQUIRE}=1: {reason}");
    }
    eprintln!("SKIP: {test}: {reason}");
    false
}

/// The name of the test function this expands in (the last path segment,
/// past any `async` closures), for [`gate`] and SKIP lines.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::test_name_of(::std::any::type_name_of_val(&here))
    }};
}

/// `if !gate(<this test's name>, needs) { return; }`: returns from the
/// calling test when a need is unmet (after [`gate`]'s SKIP line, or its
/// panic under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).
#[macro_export]
macro_rules! gate_or_return {
    ($needs:expr) => {
        if !$crate::gate($crate::test_name!(), $needs) {
            return;
        }
    };
}

/// The test's name from the type name of a function item declared in it
/// (`suite::module::the_test::here`, `suite::the_test::{{closure}}::here`).
#[doc(hidden)]
pub fn test_name_of(path: &'static str) -> &'static str {
    let mut path = path.strip_suffix("::here").unwrap_or(path);
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_is_the_enclosing_functions() {
        assert_eq!(crate::test_name!(), "the_name_is_the_enclosing_functions");
        let in_closure = || crate::test_name!();
        assert_eq!(in_closure(), "the_name_is_the_enclosing_functions");
    }

    #[test]
    fn async_blocks_are_passed_over() {
        assert_eq!(
            super::test_name_of("suite::a_test::{{closure}}::{{closure}}::here"),
            "a_test"
        );
        assert_eq!(super::test_name_of("a_test::here"), "a_test");
    }
}
