//! The broker core in a cluster: metadata committed through the `__meta`
//! leader, the catalog kept up to date on followers, and resources opened
//! and closed as this broker gains and loses their leadership.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tracing::info;

use crate::broker::durable::DurableLog;
use crate::broker::error::{BrokerError, Result};
use crate::broker::queue::{Queue, MESSAGES_LOG, STATE_LOG};
use crate::broker::topic::Topic;
use crate::broker::{apply_meta_records, read_lock, write_lock, Broker, Logs, META_LOG};
use crate::meta::{Catalog, MetaEvent, QueueSpec, TopicSpec};

/// How long a request waits for this broker's catalog to catch up with a
/// metadata change it made, or for a new resource to get a leader.
pub const METADATA_WAIT: Duration = Duration::from_secs(10);

/// The services the broker core uses from the cluster layer.
pub trait ClusterHooks: Send + Sync {
    /// Sends `event` to the `__meta` leader, which checks, appends and
    /// applies it; returns the event's offset.
    fn commit_meta(&self, event: MetaEvent) -> BoxFuture<'static, Result<u64>>;

    /// Waits until the resource with ZooKeeper key `key` has a leader.
    fn wait_for_leader(&self, key: String) -> BoxFuture<'static, Result<()>>;

    /// Sends records the broker routes on its own behalf to the leader of
    /// queue `name` (incarnation `id`), which appends them as producer
    /// `producer` from `first_sequence` on.
    fn append_to_queue(
        &self,
        name: String,
        id: u64,
        records: Vec<crate::log::Record>,
        producer: i64,
        first_sequence: u64,
    ) -> BoxFuture<'static, Result<()>>;
}

/// Leadership parameters of one resource, from its ZooKeeper state.
#[derive(Debug, Clone)]
pub struct LeaderTerm {
    /// The leader epoch this broker leads in.
    pub leader_epoch: u32,
    /// In-sync followers, without this broker.
    pub isr: Vec<u32>,
    /// In-sync replicas an `acks=all` write needs.
    pub min_insync: usize,
    /// High watermark per log name, as this broker knew it as a follower.
    pub high_watermarks: HashMap<String, u64>,
}

impl Broker {
    /// Connects the broker core to its cluster; called once at start.
    pub fn set_cluster(&self, hooks: Arc<dyn ClusterHooks>) {
        let _ = self.cluster.set(hooks);
    }

    /// Returns the cluster layer, when the broker runs in a cluster.
    pub(crate) fn cluster_hooks(&self) -> Option<&Arc<dyn ClusterHooks>> {
        self.cluster.get()
    }

    /// Returns the open logs of this broker.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Returns the `__meta` log.
    pub fn meta_log(&self) -> &Arc<DurableLog> {
        &self.meta
    }

    /// Calls `read` with the catalog, read-locked.
    pub fn with_catalog<T>(&self, read: impl FnOnce(&Catalog) -> T) -> T {
        read(&read_lock(&self.catalog))
    }

    /// Returns a receiver of the `__meta` offset up to which the catalog is
    /// applied.
    pub fn subscribe_meta_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.meta_applied.subscribe()
    }

    /// Waits until the catalog has applied every `__meta` record below
    /// `offset`.
    pub(crate) async fn wait_meta_applied(&self, offset: u64) -> Result<()> {
        let mut applied = self.meta_applied.subscribe();
        let wait = async { applied.wait_for(|applied| *applied >= offset).await.is_ok() };
        match tokio::time::timeout(METADATA_WAIT, wait).await {
            Ok(true) => Ok(()),
            _ => Err(BrokerError::Unavailable(format!(
                "the metadata change at offset {offset} was committed, but this broker's \
                 catalog did not catch up within {} s; retry",
                METADATA_WAIT.as_secs()
            ))),
        }
    }

    /// Applies the `__meta` records below `high_watermark` that the catalog
    /// has not applied yet; called by the `__meta` follower. When the log
    /// was truncated below what the catalog applied, the catalog is rebuilt.
    pub fn apply_meta_until(&self, high_watermark: u64) -> Result<()> {
        let end = high_watermark.min(self.meta.log_end_offset());
        let mut catalog = write_lock(&self.catalog);
        let applied = *self.meta_applied.borrow();
        let start = if applied > self.meta.log_end_offset() {
            info!(
                applied,
                "the __meta log was truncated below the catalog, rebuilding it"
            );
            *catalog = Catalog::default();
            0
        } else {
            applied
        };
        if end <= start && start == applied {
            return Ok(());
        }
        let mut routing_changes = Vec::new();
        let next = apply_meta_records(&self.meta, &mut catalog, start, end, |event| {
            if matches!(
                event,
                MetaEvent::BindingAdded(_)
                    | MetaEvent::BindingRemoved { .. }
                    | MetaEvent::TopicDeleted { .. }
            ) {
                routing_changes.push(event);
            }
        })?;
        drop(catalog);
        for event in &routing_changes {
            self.note_routing_change(event);
        }
        self.meta_applied.send_replace(next);
        Ok(())
    }

    /// Makes this broker the `__meta` leader: applies the whole local log,
    /// then accepts metadata writes.
    pub async fn lead_meta(&self, term: &LeaderTerm) -> Result<()> {
        let _write = self.meta_write.lock().await;
        self.apply_meta_until(self.meta.log_end_offset())?;
        let high_watermark = term.high_watermarks.get(META_LOG).copied().unwrap_or(0);
        self.meta.lead(
            term.leader_epoch,
            &term.isr,
            term.min_insync,
            high_watermark,
        );
        info!(leader_epoch = term.leader_epoch, "leading __meta");
        Ok(())
    }

    /// Opens a topic as its leader, or updates the term of a topic this
    /// broker leads already.
    pub fn lead_topic(&self, spec: &TopicSpec, term: &LeaderTerm) -> Result<()> {
        let existing = read_lock(&self.topics)
            .get(&spec.name)
            .filter(|topic| topic.spec.id == spec.id)
            .cloned();
        let topic = match existing {
            Some(topic) => topic,
            None => {
                let dir = self.topic_dir(&spec.name, spec.id);
                let topic = Arc::new(Topic::open(&self.logs, &self.config, &dir, spec.clone())?);
                info!(topic = %spec.name, id = spec.id, leader_epoch = term.leader_epoch, "leading topic");
                topic
            }
        };
        let names = Topic::log_names(spec.partitions);
        for (name, log) in names.iter().zip(topic.logs()) {
            lead_log(&log, name, term);
        }
        write_lock(&self.topics).insert(spec.name.clone(), topic);
        Ok(())
    }

    /// Opens a queue as its leader, or updates the term of a queue this
    /// broker leads already.
    pub fn lead_queue(&self, spec: &QueueSpec, term: &LeaderTerm) -> Result<()> {
        let existing = read_lock(&self.queues)
            .get(&spec.name)
            .filter(|queue| queue.spec.id == spec.id)
            .cloned();
        let queue = match existing {
            Some(queue) => queue,
            None => {
                let dir = self.queue_dir(&spec.name, spec.id);
                let queue = Arc::new(Queue::open(&self.logs, &self.config, &dir, spec.clone())?);
                info!(queue = %spec.name, id = spec.id, leader_epoch = term.leader_epoch, "leading queue");
                queue
            }
        };
        lead_log(&queue.messages, MESSAGES_LOG, term);
        lead_log(&queue.state_log, STATE_LOG, term);
        write_lock(&self.queues).insert(spec.name.clone(), queue);
        Ok(())
    }

    /// Stops leading the resource with id `id`: its logs are fenced, so
    /// nothing waiting on them is acknowledged, and it leaves the maps.
    pub fn stop_leading(&self, id: u64) {
        let topic = {
            let mut topics = write_lock(&self.topics);
            let name = topics
                .iter()
                .find(|(_, topic)| topic.spec.id == id)
                .map(|(name, _)| name.clone());
            name.and_then(|name| topics.remove(&name))
        };
        if let Some(topic) = topic {
            for log in topic.logs() {
                log.fence();
            }
            write_lock(&self.groups).retain(|(name, _), _| name != &topic.spec.name);
            topic.appended.notify_waiters();
            info!(topic = %topic.spec.name, id, "stopped leading topic");
        }
        let queue = {
            let mut queues = write_lock(&self.queues);
            let name = queues
                .iter()
                .find(|(_, queue)| queue.spec.id == id)
                .map(|(name, _)| name.clone());
            name.and_then(|name| queues.remove(&name))
        };
        if let Some(queue) = queue {
            queue.messages.fence();
            queue.state_log.fence();
            queue.changed.notify_waiters();
            info!(queue = %queue.spec.name, id, "stopped leading queue");
        }
    }

    /// Stops leading `__meta`.
    pub fn stop_leading_meta(&self) {
        if self.meta.is_leading() {
            self.meta.fence();
            info!("stopped leading __meta");
        }
    }

    /// Returns the logs of a resource this broker leads, by log name: `__meta` for
    /// `None`, else the topic or queue with that id.
    pub fn leader_logs(&self, id: Option<u64>) -> Option<Vec<(String, Arc<DurableLog>)>> {
        let Some(id) = id else {
            return Some(vec![(META_LOG.to_string(), Arc::clone(&self.meta))]);
        };
        if let Some(topic) = read_lock(&self.topics)
            .values()
            .find(|topic| topic.spec.id == id)
        {
            let names = Topic::log_names(topic.spec.partitions);
            return Some(names.into_iter().zip(topic.logs()).collect());
        }
        read_lock(&self.queues)
            .values()
            .find(|queue| queue.spec.id == id)
            .map(|queue| {
                vec![
                    (MESSAGES_LOG.to_string(), Arc::clone(&queue.messages)),
                    (STATE_LOG.to_string(), Arc::clone(&queue.state_log)),
                ]
            })
    }

    /// Checks, appends and applies a metadata event sent by another broker;
    /// returns its offset. Fails with `Unavailable` unless this broker
    /// leads `__meta`.
    pub async fn commit_forwarded_meta(&self, event: MetaEvent) -> Result<u64> {
        let _write = self.meta_write.lock().await;
        if !self.meta.is_leading() {
            return Err(BrokerError::Unavailable(
                "this broker no longer leads __meta; retry".into(),
            ));
        }
        let offset = self.meta.log_end_offset();
        let event = event.with_id(offset);
        read_lock(&self.catalog).check(&event)?;
        self.append_meta(offset, &event).await?;
        Ok(offset)
    }
}

fn lead_log(log: &DurableLog, name: &str, term: &LeaderTerm) {
    let high_watermark = term.high_watermarks.get(name).copied().unwrap_or(0);
    log.lead(
        term.leader_epoch,
        &term.isr,
        term.min_insync,
        high_watermark,
    );
}
