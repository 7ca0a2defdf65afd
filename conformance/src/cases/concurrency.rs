//! Concurrency: parallel ADDs (then DELs) for different containers all
//! succeed, and each returns its own `prevResult`.

use super::add::check_pass_through;
use super::{Case, CaseOutcome, with_note};
use crate::harness::{Attachment, Harness};
use crate::report::Finding;

/// The concurrency case.
pub fn cases() -> Vec<Case> {
    vec![Case::new("concurrency/parallel-add", parallel_add)]
}

/// Runs `f` for every item (attachment) at once, one thread each; the results in
/// order of `items`.
fn all_at_once<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> Result<T, String> + Sync) -> Vec<Result<T, String>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err("suite: the invoking thread panicked".to_owned()))
            })
            .collect()
    })
}

fn failures<T>(what: &str, atts: &[Attachment<'_>], results: &[Result<T, String>]) -> Vec<String> {
    results
        .iter()
        .zip(atts)
        .filter_map(|(r, att)| {
            r.as_ref()
                .err()
                .map(|e| format!("{what} {}: {e}", att.rt().container_id))
        })
        .collect()
}

fn parallel_add(h: &Harness) -> CaseOutcome {
    let Some(version) = h.base_version() else {
        return Ok(Finding::skip("the plugin claims no requested version"));
    };
    let n = h.opts().parallel;
    let mut atts = Vec::with_capacity(n);
    for _ in 0..n {
        atts.push(h.attach(&version)?);
    }
    let adds = all_at_once(&atts, |att| {
        let out = att.plugin_add()?.expect_document()?;
        check_pass_through(&att.prev, &out, &version)?;
        Ok(out)
    });
    let mut problems = failures("ADD", &atts, &adds);
    if problems.is_empty() {
        let outs: Vec<_> = adds.into_iter().flatten().collect();
        let pairs: Vec<_> = atts.iter().zip(outs).collect();
        let dels = all_at_once(&pairs, |(att, out)| att.plugin_del(out)?.expect_success());
        problems.extend(failures("DEL", &atts, &dels));
    }
    if !problems.is_empty() {
        return Err(format!(
            "{} of {n} parallel calls failed: {}",
            problems.len(),
            problems.join("; ")
        ));
    }
    let note = atts.first().and_then(|a| a.note.clone());
    Ok(with_note(
        note.as_deref(),
        format!("{n} parallel ADDs, then {n} parallel DELs, at {version}"),
    ))
}
