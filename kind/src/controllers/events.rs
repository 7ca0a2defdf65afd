//! Events as the controllers record them (`kubectl describe` and
//! `kubectl get events` show them), through kubelet's recorder
//! ([`Recorder`]): one per involved object, so a repeat of an event (same
//! type, reason and message) counts on the Event already written (`count`,
//! `lastTimestamp`: `(x3 over 1m)`) instead of adding another. Best effort:
//! a lost event never stops a controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;

use crate::kubelet::events::Recorder;

/// Objects whose recorders are kept (the least recently used is forgotten
/// first; its next event starts a new Event).
const REMEMBERED: usize = 1024;

/// The events one controller (`component`) records, about any object.
pub(crate) struct Events {
    client: kube::Client,
    component: &'static str,
    recorders: Mutex<Recorders>,
}

#[derive(Default)]
struct Recorders {
    by_object: HashMap<String, (Arc<Recorder>, u64)>,
    tick: u64,
}

impl Events {
    pub(crate) fn new(client: kube::Client, component: &'static str) -> Events {
        Events {
            client,
            component,
            recorders: Mutex::default(),
        }
    }

    /// A Normal (`warning: false`) or Warning event about `object`.
    pub(crate) async fn record(&self, object: &ObjectReference, warning: bool, reason: &str, message: &str) {
        let Some(recorder) = self.recorder(object) else {
            return;
        };
        recorder.record(warning, reason, message).await;
    }

    fn recorder(&self, object: &ObjectReference) -> Option<Arc<Recorder>> {
        let key = object.uid.clone().unwrap_or_else(|| {
            let part = |p: &Option<String>| p.clone().unwrap_or_default();
            format!(
                "{}/{}/{}",
                part(&object.kind),
                part(&object.namespace),
                part(&object.name)
            )
        });
        let mut recorders = self.recorders.lock().ok()?;
        recorders.tick += 1;
        let tick = recorders.tick;
        if let Some((recorder, used)) = recorders.by_object.get_mut(&key) {
            *used = tick;
            return Some(recorder.clone());
        }
        if recorders.by_object.len() >= REMEMBERED
            && let Some(oldest) = recorders
                .by_object
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            recorders.by_object.remove(&oldest);
        }
        let recorder = Arc::new(Recorder::new(self.client.clone(), object.clone(), self.component, None));
        recorders.by_object.insert(key, (recorder.clone(), tick));
        Some(recorder)
    }
}
