//! The watch caches the scheduler and the taint manager look at: every Node
//! and every Pod, each kept by a watcher that relists (with backoff) after an
//! error. A controller waits for [`NodePodCache::changed`] and makes a pass
//! once [`NodePodCache::listed`].

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

/// One watched kind: its cache, the writer feeding it, and its event stream.
struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: Writer<K>,
    events: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    /// Whether the first list has been applied.
    listed: bool,
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    fn watch(client: &kube::Client) -> Self {
        let (store, writer) = reflector::store::<K>();
        let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .boxed();
        Feed {
            store,
            writer,
            events,
            listed: false,
        }
    }

    fn apply(&mut self, event: watcher::Result<watcher::Event<K>>, who: &str) {
        match event {
            Ok(event) => {
                self.listed |= matches!(event, watcher::Event::InitDone);
                self.writer.apply_watcher_event(&event);
            }
            Err(e) => tracing::warn!("{who}: watching {}s: {e}", K::kind(&()).to_lowercase()),
        }
    }

    /// Applies every event already queued, without waiting.
    fn drain(&mut self, who: &str) {
        while let Some(Some(event)) = futures::FutureExt::now_or_never(self.events.next()) {
            self.apply(event, who);
        }
    }
}

/// Every Node and every Pod, as watched by the controller `who` (named in
/// its warnings).
pub(crate) struct NodePodCache {
    who: &'static str,
    nodes: Feed<Node>,
    pods: Feed<Pod>,
}

impl NodePodCache {
    /// Starts both watches (they make progress while [`changed`](Self::changed) is awaited).
    pub fn watch(client: &kube::Client, who: &'static str) -> Self {
        NodePodCache {
            who,
            nodes: Feed::watch(client),
            pods: Feed::watch(client),
        }
    }

    /// Waits for the next event of either watch and applies it; `false` once
    /// both streams have ended. Cancel-safe: an event is applied where it is
    /// taken, so this can lose a `select!` without losing an event.
    pub async fn changed(&mut self) -> bool {
        let (nodes, pods) = (&mut self.nodes.events, &mut self.pods.events);
        tokio::select! {
            Some(event) = nodes.next() => self.nodes.apply(event, self.who),
            Some(event) = pods.next() => self.pods.apply(event, self.who),
            else => return false,
        }
        true
    }

    /// Applies every event already queued on either watch, so a burst of
    /// changes makes one pass.
    pub fn drain(&mut self) {
        self.nodes.drain(self.who);
        self.pods.drain(self.who);
    }

    /// Whether both caches were listed once (a relist keeps the old contents meanwhile).
    pub fn listed(&self) -> bool {
        self.nodes.listed && self.pods.listed
    }

    /// The nodes and pods as cached now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.store.state(),
            pods: self.pods.store.state(),
        }
    }
}

/// Every node and every pod at one moment.
pub(crate) struct Snapshot {
    pub nodes: Vec<Arc<Node>>,
    pub pods: Vec<Arc<Pod>>,
}
