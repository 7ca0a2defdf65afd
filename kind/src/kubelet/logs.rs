//! Container output, kept as files per container instance and served to
//! `pods/log` (current and `previous=true`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::apiserver::LogSource;

/// (namespace, pod, container).
type ContainerKey = (String, String, String);

/// Container → log files of its instances, oldest first.
#[derive(Clone, Default)]
pub struct PodLogs {
    files: Arc<Mutex<HashMap<ContainerKey, Vec<PathBuf>>>>,
}

impl PodLogs {
    /// Records the log file of a new container instance.
    pub fn started(&self, ns: &str, pod: &str, container: &str, file: PathBuf) {
        if let Ok(mut files) = self.files.lock() {
            files
                .entry((ns.into(), pod.into(), container.into()))
                .or_default()
                .push(file);
        }
    }

    /// The log file of a container's current instance.
    pub fn current_file(&self, ns: &str, pod: &str, container: &str) -> Option<PathBuf> {
        let files = self.files.lock().ok()?;
        files.get(&(ns.into(), pod.into(), container.into()))?.last().cloned()
    }

    /// Forgets a deleted pod's logs.
    pub fn forget(&self, ns: &str, pod: &str) {
        if let Ok(mut files) = self.files.lock() {
            files.retain(|(n, p, _), _| !(n == ns && p == pod));
        }
    }
}

impl LogSource for PodLogs {
    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<String> {
        let files = self.files.lock().ok()?;
        let instances = files.get(&(namespace.into(), pod.into(), container.into()))?;
        let file = if previous {
            instances.iter().rev().nth(1)?
        } else {
            instances.last()?
        };
        std::fs::read_to_string(file).ok()
    }

    fn open(&self, namespace: &str, pod: &str, container: &str) -> Option<std::fs::File> {
        std::fs::File::open(self.current_file(namespace, pod, container)?).ok()
    }
}
