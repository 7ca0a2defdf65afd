//! Tolerance: unknown configuration keys, unknown `CNI_ARGS` keys with
//! `IgnoreUnknown=1`, and unknown environment variables (libcni now adds
//! `TRACEPARENT` and friends) leave ADD and DEL working.

use istio_cni_kind::cni::PluginConf;
use serde_json::{Value, json};

use super::add::check_pass_through;
use super::{Case, CaseOutcome, with_note};
use crate::harness::{Attachment, Harness};

/// The tolerance cases.
pub fn cases() -> Vec<Case> {
    vec![
        Case::at_base("tolerate/unknown-config-keys", unknown_config_keys),
        Case::at_base("tolerate/unknown-cni-args", unknown_cni_args),
        Case::at_base("tolerate/unknown-env", unknown_env),
    ]
}

/// ADD then DEL with the given stdin builder, runtime parameters and env.
fn add_del(
    h: &Harness,
    att: &Attachment<'_>,
    stdin: impl Fn(Option<&Value>) -> Vec<u8>,
    rt: &istio_cni_kind::cni::RuntimeConf,
    env: &[(String, Option<String>)],
) -> Result<(), String> {
    let out = h.invoke("ADD", rt, env, &stdin(Some(&att.prev)))?.expect_document()?;
    check_pass_through(&att.prev, &out, &att.version)?;
    let del_prev = istio_cni_kind::cni::version::at_least(&att.version, "0.4.0")
        .unwrap_or(true)
        .then_some(&out);
    h.invoke("DEL", rt, env, &stdin(del_prev))?
        .expect_success()
        .map_err(|e| format!("DEL: {e}"))
}

fn unknown_config_keys(h: &Harness, version: &str) -> CaseOutcome {
    let mut entry = h.plugin_conf().raw.clone();
    entry.insert(
        "conformanceUnknownObject".to_owned(),
        json!({"nested": [1, "two", {"three": 3.5}], "null": null}),
    );
    entry.insert("conformance-unknown-flag".to_owned(), json!(true));
    entry.insert("conformanceUnknownString".to_owned(), json!("value"));
    let conf = PluginConf::from_value(&Value::Object(entry))?;
    let att = h.attach(version)?;
    add_del(
        h,
        &att,
        |prev| Harness::request_for(&conf, version, prev),
        att.rt(),
        &[],
    )?;
    Ok(with_note(att.note.as_deref(), ""))
}

fn unknown_cni_args(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let rt = att.rt().clone().with_arg("CONFORMANCE_UNKNOWN_ARG", "yes");
    if rt.args.first().is_none_or(|(k, v)| k != "IgnoreUnknown" || v != "1") {
        return Err("suite: the runtime parameters do not start with IgnoreUnknown=1".to_owned());
    }
    add_del(h, &att, |prev| h.request(version, prev), &rt, &[])?;
    Ok(with_note(att.note.as_deref(), ""))
}

fn unknown_env(h: &Harness, version: &str) -> CaseOutcome {
    let att = h.attach(version)?;
    let env: Vec<(String, Option<String>)> = [
        ("TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("TRACESTATE", "conformance=1"),
        ("CNI_CONFORMANCE_UNKNOWN", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
    .collect();
    add_del(h, &att, |prev| h.request(version, prev), att.rt(), &env)?;
    Ok(with_note(att.note.as_deref(), ""))
}
