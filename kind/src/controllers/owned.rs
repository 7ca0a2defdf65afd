//! What the workload controllers (ReplicaSets, Deployments, DaemonSets)
//! share: controller references, the pod facts they count by (active,
//! ready, available), int-or-percent fields and the template hash.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

/// The controller reference of an object, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_ref(meta).is_some_and(|o| o.uid == uid)
}

/// A controller reference to an `apps/v1` object, as the controllers set it
/// (the garbage collector blocks the owner's foreground deletion on it).
pub fn controller_ref_to(kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod that counts: not being deleted, not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_finished(pod)
}

/// A pod whose phase is terminal (`Succeeded` or `Failed`).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Since when the pod has been Ready (`None`: not ready).
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        cond.last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// Whether the pod has been ready for `min_ready` at `now`; when it is ready
/// but not for long enough yet, how long until it is available.
pub fn availability(pod: &Pod, min_ready: Duration, now: Timestamp) -> (bool, Option<Duration>) {
    let Some(since) = ready_since(pod) else {
        return (false, None);
    };
    let at = since + min_ready;
    if at <= now {
        return (true, None);
    }
    let wait = Duration::try_from(at - now).unwrap_or(min_ready);
    (false, Some(wait.max(Duration::from_millis(100))))
}

/// `minReadySeconds` as a duration.
pub fn min_ready(seconds: Option<i32>) -> Duration {
    Duration::from_secs(u64::try_from(seconds.unwrap_or(0)).unwrap_or(0))
}

/// An int-or-percent field (`maxSurge`, `maxUnavailable`) against `total`:
/// percentages round up or down as asked, a malformed value is `default`.
pub fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(s)) => {
            let Some(pct) = s.strip_suffix('%').and_then(|p| p.trim().parse::<i64>().ok()) else {
                return default;
            };
            let part = pct.max(0) * i64::from(total.max(0));
            let v = if round_up { (part + 99) / 100 } else { part / 100 };
            i32::try_from(v).unwrap_or(i32::MAX)
        }
    }
}

/// A short, label-safe hash of `value`'s JSON form (equal values, equal
/// hashes): FNV-1a over the bytes, written in vowel-free letters and digits
/// so no word is spelled by accident.
pub fn short_hash(value: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const DIGITS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = DIGITS.len() as u64;
    (0..10)
        .map(|i| DIGITS[((h / base.pow(i)) % base) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_asked() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&pct), 3, true, 0), 1);
        assert_eq!(scaled(Some(&pct), 3, false, 0), 0);
        assert_eq!(scaled(Some(&pct), 8, false, 0), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 3, true, 0), 2);
        assert_eq!(scaled(Some(&IntOrString::String("x".into())), 3, true, 7), 7);
        assert_eq!(scaled(None, 3, true, 1), 1);
    }

    #[test]
    fn hashes_are_stable_and_label_safe() {
        let a = short_hash(&serde_json::json!({"a": 1}));
        assert_eq!(a, short_hash(&serde_json::json!({"a": 1})));
        assert_ne!(a, short_hash(&serde_json::json!({"a": 2})));
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
