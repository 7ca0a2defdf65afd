//! The repair controller (docs/repair.md): pods that raced
//! the plugin's install (sandbox created before `istio-cni` was in the
//! chain) fail their `istio-validation` init container with exit 126 and
//! crash-loop; this controller finds them and, per mode, programs their
//! netns in place, deletes them or labels them.
//!
//! ```text
//! watcher(pods on this node) ──► controller::Core (cache, keyed queue, retries)
//!                                   │ predicate: broken?
//!                                   ▼
//!                        actions::KubeActions ──► netns (find in /proc) + istio_cni::program
//!                                             └─► DELETE / PATCH pods/status + Events
//! ```
//!
//! The caller (`run.rs`) starts it only when a mode is enabled:
//! [`start`] returns once the initial pod list has synced;
//! [`RepairController::shutdown`] stops it.

pub mod actions;
pub mod controller;
pub mod netns;
pub mod predicate;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::RepairSettings;
use crate::metrics::Metrics;
use actions::KubeActions;
use controller::{Core, SyncState};
use predicate::Criteria;

/// How long [`start`] waits for the first full pod list.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("no repair mode is enabled (REPAIR_REPAIR_PODS, REPAIR_DELETE_PODS or REPAIR_LABEL_PODS)")]
    Disabled,
    #[error("listing pods (fields {fields:?}, labels {labels:?}) did not succeed within {timeout:?}: {last_error}")]
    Sync {
        fields: String,
        labels: String,
        timeout: Duration,
        last_error: String,
    },
    #[error("the pod watch ended before the initial list")]
    Stopped,
}

/// A running controller.
pub struct RepairController {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Core>,
}

impl RepairController {
    /// Stops watching and acting; an action in progress is abandoned (a
    /// netns being programmed finishes on its own thread).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::warn!("repair controller task failed: {e}");
        }
    }
}

/// Starts the controller on the current tokio runtime; returns once the
/// initial pod list has synced.
pub async fn start(
    client: kube::Client,
    settings: RepairSettings,
    native_nftables: bool,
    metrics: Metrics,
) -> Result<RepairController, RepairError> {
    let mode = settings.mode().ok_or(RepairError::Disabled)?;
    let fields = settings.field_selector();
    let labels = settings.repair_label_selectors.clone();
    let mut config = watcher::Config::default().fields(&fields);
    if !labels.is_empty() {
        config = config.labels(&labels);
    }
    let events = watcher(Api::<Pod>::all(client.clone()), config)
        .default_backoff()
        .boxed();
    let executor = Arc::new(KubeActions::new(client, &settings, native_nftables, metrics));
    let core = Core::new(mode, Criteria::from_settings(&settings));
    let (sync_tx, mut sync_rx) = watch::channel(SyncState::Pending { last_error: None });
    let (stop, stop_rx) = oneshot::channel();
    tracing::info!(mode = mode.as_str(), %fields, %labels, "starting CNI sidecar repair controller");
    let task = tokio::spawn(controller::drive(core, events, executor, sync_tx, stop_rx));
    let synced = tokio::time::timeout(SYNC_TIMEOUT, sync_rx.wait_for(|s| *s == SyncState::Synced))
        .await
        .map(|r| r.is_ok());
    let failure = match synced {
        Ok(true) => return Ok(RepairController { stop, task }),
        Ok(false) => RepairError::Stopped,
        Err(_) => RepairError::Sync {
            fields,
            labels,
            timeout: SYNC_TIMEOUT,
            last_error: match &*sync_rx.borrow() {
                SyncState::Pending { last_error: Some(e) } => e.clone(),
                _ => "no answer".into(),
            },
        },
    };
    let _ = stop.send(());
    let _ = task.await;
    Err(failure)
}
