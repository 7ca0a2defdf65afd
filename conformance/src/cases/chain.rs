//! The whole chain through the libcni-faithful runner: the runner picks the
//! newest version from `cniVersions` both plugins speak, runs ADD in order
//! (primary, then the plugin under test), caches the final result, CHECKs,
//! and DELs in reverse, dropping the cache. The final result must equal
//! what the primary printed.
//!
//! To see the primary's own output, its entry runs through a tee: a shell
//! script that execs the real primary binary with the invocation's
//! environment and stdin and keeps a copy of its stdout.

use std::path::{Path, PathBuf};

use istio_cni_kind::cni::NetworkConfigList;
use istio_cni_kind::cni::version::at_least;
use serde_json::{Value, json};

use super::{Case, CaseOutcome};
use crate::compare::result_diff;
use crate::harness::{Harness, NETWORK};
use crate::report::Finding;

/// The tee's plugin type.
pub const TEE_TYPE: &str = "conformance-tee";

/// The chain case.
pub fn cases() -> Vec<Case> {
    vec![Case::new("chain/runner", runner)]
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// Writes the tee into the node's bin dir; its copies go to `out_dir` as
/// `<command>-<container id>.json`.
fn install_tee(h: &Harness, out_dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let bin = h.node().bin_dir();
    let primary = bin.join(h.primary_type());
    let script = format!(
        "#!/bin/sh\n\
         # Runs the real primary plugin unchanged and keeps a copy of its stdout.\n\
         out=$({primary})\n\
         rc=$?\n\
         printf '%s\\n' \"$out\" > {dir}/\"$CNI_COMMAND-$CNI_CONTAINERID.json\"\n\
         printf '%s\\n' \"$out\"\n\
         exit $rc\n",
        primary = shell_quote(&primary),
        dir = shell_quote(out_dir),
    );
    let path = bin.join(TEE_TYPE);
    std::fs::write(&path, script).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("making {} executable: {e}", path.display()))
}

/// The requested versions both plugins speak, oldest first.
fn common_versions(h: &Harness) -> Vec<String> {
    h.opts()
        .versions
        .iter()
        .filter(|v| h.claims(v) && h.primary_supports(v))
        .cloned()
        .collect()
}

/// The list: `cniVersion` the oldest common version, `cniVersions` all of
/// them, the primary (through the tee) then the plugin under test.
fn chain_list(h: &Harness, versions: &[String]) -> Result<NetworkConfigList, String> {
    let mut primary = h.primary_entry().map_err(|e| e.to_string())?;
    primary["type"] = json!(TEE_TYPE);
    let list = json!({
        "cniVersion": versions.first().cloned().unwrap_or_default(),
        "cniVersions": versions,
        "name": NETWORK,
        "plugins": [primary, Value::Object(h.plugin_conf().raw.clone())],
    });
    NetworkConfigList::from_list_bytes(list.to_string().as_bytes())
}

fn read_json(path: &PathBuf) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading the primary's output {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the primary's output {} is not JSON: {e}", path.display()))
}

fn runner(h: &Harness) -> CaseOutcome {
    let versions = common_versions(h);
    let Some(expected) = versions.last().cloned() else {
        return Ok(Finding::skip(format!(
            "no requested version is spoken by both {} and {}",
            h.primary_type(),
            h.plugin_type()
        )));
    };
    let tee_dir = h.scratch().join("tee");
    install_tee(h, &tee_dir)?;
    let list = chain_list(h, &versions)?;
    if list.cni_version != expected {
        return Err(format!(
            "suite: the runner selected {} from cniVersions [{}], expected {expected}",
            list.cni_version,
            versions.join(", ")
        ));
    }
    let sandbox = h.sandbox()?;
    let rt = &sandbox.rt;
    let runner = h.runner();
    let outcome = (|| -> Result<String, String> {
        let result = runner.add(&list, rt).map_err(|e| format!("chain ADD: {e}"))?;
        if result.cni_version != expected {
            return Err(format!(
                "the chain's result has cniVersion {:?}, the list selected {expected}",
                result.cni_version
            ));
        }
        let primary_out = read_json(&tee_dir.join(format!("ADD-{}.json", rt.container_id)))?;
        let diff = result_diff(&primary_out, &result.raw);
        if !diff.is_empty() {
            return Err(format!(
                "the chain's final result differs from the primary's: {}",
                diff.join("; ")
            ));
        }
        let cache = runner
            .cache_file(NETWORK, rt)
            .map_err(|e| format!("suite: cache path: {e}"))?;
        if !cache.exists() {
            return Err(format!("no cached result at {} after ADD", cache.display()));
        }
        let cached = runner.cached_result(&list, rt).map_err(|e| e.to_string())?;
        if cached.as_ref() != Some(&result.raw) {
            return Err("the cached result is not the chain's final result".to_owned());
        }
        if at_least(&expected, "0.4.0").unwrap_or(false) {
            runner.check(&list, rt).map_err(|e| format!("chain CHECK: {e}"))?;
        }
        runner.del(&list, rt).map_err(|e| format!("chain DEL: {e}"))?;
        if cache.exists() {
            return Err(format!(
                "the cached result {} is still there after DEL",
                cache.display()
            ));
        }
        if !tee_dir.join(format!("DEL-{}.json", rt.container_id)).exists() {
            return Err("the primary was not DELed".to_owned());
        }
        runner.del(&list, rt).map_err(|e| format!("second chain DEL: {e}"))?;
        Ok(format!(
            "selected {expected} from cniVersions [{}]; final result = {}'s; cache written, then removed by DEL",
            versions.join(", "),
            h.primary_type()
        ))
    })();
    if outcome.is_err() {
        let _ = runner.del(&list, rt);
    }
    outcome.map(Finding::pass_with)
}
