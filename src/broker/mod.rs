//! The broker core: topics, queues, subscriptions and users on top of the
//! partition logs, independent of the REST front end.
//!
//! On-disk layout under the data directory:
//!
//! ```text
//! __meta/0/                       metadata events (the catalog)
//! topics/<name>@<id>/<partition>/ one log per topic partition
//! topics/<name>@<id>/offsets/     committed subscription offsets, keyed
//! queues/<name>@<id>/messages/    the queue's messages
//! queues/<name>@<id>/state/       the queue's lease and ack events
//! jwt-secret                      token signing secret (unless configured)
//! ```
//!
//! `<id>` is the `__meta` offset of the creation event, so a topic deleted
//! and created again under the same name never sees the old messages.

pub mod bindings;
mod checkpoints;
mod compaction;
pub mod durable;
pub mod error;
pub mod idempotence;
pub mod leadership;
pub mod logs;
pub mod message;
pub mod offsets;
pub mod queue;
pub mod queue_log;
pub mod queue_state;
pub mod queues;
pub mod retention;
pub mod route;
pub mod router;
pub mod routing;
pub mod subscriptions;
pub mod topic;
pub mod topics;
pub mod users;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Mutex as AsyncMutex, Notify};
use tracing::{info, warn};

use crate::auth::TokenIssuer;
use crate::config::Config;
use crate::log::{LogConfig, ProducerInfo, Record};
use crate::meta::{Catalog, MetaEvent, Permission, Resource, ResourceKind, ResourceSpec};

pub use durable::{Acks, DurableLog};
pub use error::{BrokerError, Result};
pub use leadership::ClusterHooks;
pub use logs::Logs;
pub use message::{Message, NewMessage, Payload, PublishRequest, PublishResult};
pub use queue::{AckOutcome, Delivery};
pub use queues::QueueView;
pub use subscriptions::SubscriptionView;
pub use topics::{FetchResult, PartitionView, TopicView};
pub use users::{Principal, Token};

/// Segment size of the internal logs: they hold small JSON events.
const INTERNAL_SEGMENT_BYTES: u64 = 16 << 20;

/// Bytes read per step when replaying an internal log at start.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// Maximum `wait_ms` of a long poll.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// One broker: the catalog, every open log and the runtime state.
pub struct Broker {
    config: Config,
    tokens: TokenIssuer,
    logs: Logs,
    meta: Arc<DurableLog>,
    /// The `__meta` offset up to which the catalog has applied events.
    meta_applied: watch::Sender<u64>,
    /// Set once in a cluster: how metadata reaches the `__meta` leader.
    cluster: OnceLock<Arc<dyn ClusterHooks>>,
    /// Serializes check, append and apply of metadata events, so two
    /// requests can never both take one name.
    meta_write: AsyncMutex<()>,
    catalog: RwLock<Catalog>,
    topics: RwLock<HashMap<String, Arc<topic::Topic>>>,
    queues: RwLock<HashMap<String, Arc<queue::Queue>>>,
    groups: RwLock<HashMap<(String, String), Arc<subscriptions::Group>>>,
    /// Set at shutdown: long polls and streams end at once.
    shutting_down: AtomicBool,
    /// Slots for password hashing, see `Broker::hash_password`.
    hash_permits: tokio::sync::Semaphore,
    /// Woken when bindings or led topics change.
    router_wakeup: Arc<Notify>,
    /// The tasks that route topics' messages to bound queues.
    routers: router::Routers,
}

impl Broker {
    /// Opens the data directory, replays the metadata and queue state and
    /// opens every partition. Recovery of torn log tails happens here.
    ///
    /// # Errors
    ///
    /// The data directory cannot be created or read, the signing secret
    /// cannot be loaded, or a log fails to open.
    pub async fn open(config: Config) -> Result<Arc<Broker>> {
        let data_dir = config.data_dir.clone();
        // Mode 0700: the logs hold password hashes and private messages.
        // An existing directory keeps the mode its operator gave it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
            .map_err(|err| {
                BrokerError::Internal(format!(
                    "failed to create data directory {}: {err}",
                    data_dir.display()
                ))
            })?;
        // In a cluster every broker signs with the key derived from the
        // shared secret, so a token works on all of them.
        let tokens = match &config.cluster {
            Some(cluster) => {
                let secret = crate::cluster::secret::ClusterSecret::load(&cluster.secret_file)
                    .map_err(|err| BrokerError::Internal(err.to_string()))?;
                TokenIssuer::from_secret(&secret.token_key, config.token_ttl)
            }
            None => TokenIssuer::load(
                config.jwt_secret_file.as_deref(),
                &data_dir,
                config.token_ttl,
            ),
        }
        .map_err(|err| BrokerError::Internal(err.to_string()))?;

        let clustered = config.cluster.is_some();
        let logs = Logs::new(config.fsync, !clustered);
        let meta = open_internal(&logs, &config, &data_dir.join(META_DIR).join(META_LOG))?;
        let (catalog, meta_applied) = replay_catalog(&meta)?;

        let broker = Broker {
            config,
            tokens,
            logs,
            meta,
            meta_applied: watch::Sender::new(meta_applied),
            cluster: OnceLock::new(),
            meta_write: AsyncMutex::new(()),
            catalog: RwLock::new(catalog),
            topics: RwLock::new(HashMap::new()),
            queues: RwLock::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            hash_permits: tokio::sync::Semaphore::new(users::MAX_CONCURRENT_HASHES),
            router_wakeup: Arc::new(Notify::new()),
            routers: router::Routers::default(),
        };
        // In a cluster, resources open when this broker becomes their
        // leader, and deleted ones are removed as the catalog learns of it.
        if !clustered {
            broker.open_resources()?;
            broker.remove_orphan_dirs();
        }
        let broker = Arc::new(broker);
        broker.start_interval_flusher();
        broker.start_retention();
        broker.start_compaction();
        broker.start_checkpoints();
        broker.start_routers();
        Ok(broker)
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Ends every long poll (with what it has, usually nothing) and every
    /// push stream, so that a graceful shutdown does not wait for them.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for topic in read_lock(&self.topics).values() {
            topic.appended.notify_waiters();
        }
        for queue in read_lock(&self.queues).values() {
            queue.changed.notify_waiters();
        }
    }

    /// Whether [`Broker::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Checks again, during a long poll or a stream, that `topic` is still
    /// the same incarnation and that `principal` still holds `permission`:
    /// a deletion or a revoked grant ends the wait with the error a new
    /// request would get.
    pub fn recheck_topic(
        &self,
        principal: &Principal,
        topic: &topic::Topic,
        permission: Permission,
    ) -> Result<()> {
        let catalog = read_lock(&self.catalog);
        let name = &topic.spec.name;
        let current = catalog
            .topic(name)
            .filter(|resource| resource.spec.id == topic.spec.id);
        Broker::authorize(
            current,
            "topic",
            name,
            &principal.username,
            Some(permission),
        )
    }

    /// The queue counterpart of [`Broker::recheck_topic`].
    pub fn recheck_queue(
        &self,
        principal: &Principal,
        queue: &queue::Queue,
        permission: Permission,
    ) -> Result<()> {
        let catalog = read_lock(&self.catalog);
        let name = &queue.spec.name;
        let current = catalog
            .queue(name)
            .filter(|resource| resource.spec.id == queue.spec.id);
        Broker::authorize(
            current,
            "queue",
            name,
            &principal.username,
            Some(permission),
        )
    }

    /// Flushes and trims every log; call once at shutdown.
    pub fn close(&self) {
        for log in self.all_logs() {
            if let Err(err) = log.close() {
                warn!(dir = %log.dir().display(), error = %err, "failed to close log");
            }
        }
    }

    fn open_resources(&self) -> Result<()> {
        let catalog = read_lock(&self.catalog);
        let mut topics = write_lock(&self.topics);
        for resource in catalog.topics() {
            let topic = topic::Topic::open(
                &self.logs,
                &self.config,
                &self.topic_dir(&resource.spec.name, resource.spec.id),
                resource.spec.clone(),
            )?;
            topics.insert(resource.spec.name.clone(), Arc::new(topic));
        }
        let mut queues = write_lock(&self.queues);
        for resource in catalog.queues() {
            let queue = queue::Queue::open(
                &self.logs,
                &self.config,
                &self.queue_dir(&resource.spec.name, resource.spec.id),
                resource.spec.clone(),
            )?;
            queues.insert(resource.spec.name.clone(), Arc::new(queue));
        }
        info!(
            topics = topics.len(),
            queues = queues.len(),
            "catalog loaded"
        );
        Ok(())
    }

    /// Deletes the directories of deleted topics and queues: a crash
    /// between logging a deletion and removing the files leaves them behind.
    ///
    /// A directory whose id the catalog has never seen deleted is kept and
    /// reported instead: it may hold acknowledged messages of a resource
    /// whose creation event was lost, and only an operator can decide.
    fn remove_orphan_dirs(&self) {
        let catalog = read_lock(&self.catalog);
        for (parent, kind) in [
            ("topics", ResourceKind::Topic),
            ("queues", ResourceKind::Queue),
        ] {
            let Ok(entries) = std::fs::read_dir(self.config.data_dir.join(parent)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let file_name = entry.file_name();
                let Some((name, id)) = file_name.to_str().and_then(parse_resource_dir) else {
                    warn!(dir = %path.display(), "unexpected entry in the data directory, kept");
                    continue;
                };
                let current = match kind {
                    ResourceKind::Topic => catalog.topic(name).map(|t| t.spec.id),
                    ResourceKind::Queue => catalog.queue(name).map(|q| q.spec.id),
                };
                if current == Some(id) {
                    continue;
                }
                if catalog.was_deleted(kind, id) {
                    info!(dir = %path.display(), "removing files of a deleted resource");
                    if let Err(err) = std::fs::remove_dir_all(&path) {
                        warn!(dir = %path.display(), error = %err, "failed to remove directory");
                    }
                } else {
                    warn!(
                        dir = %path.display(),
                        "directory is not in the catalog (its creation event may be lost), kept; \
                         inspect it with ferry-log and move it away by hand"
                    );
                }
            }
        }
    }

    fn start_interval_flusher(self: &Arc<Self>) {
        let crate::log::FsyncPolicy::Interval(interval) = self.config.fsync else {
            return;
        };
        self.every(interval, |broker| async move {
            for log in broker.all_logs() {
                if let Err(err) = log.flush().await {
                    warn!(dir = %log.dir().display(), error = %err, "background flush failed");
                }
            }
        });
    }

    /// Runs `work` every `interval` while the broker exists. A slow run
    /// makes the next tick skip rather than pile up.
    pub(crate) fn every<F, Fut>(self: &Arc<Self>, interval: Duration, work: F)
    where
        F: Fn(Arc<Broker>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                work(broker).await;
            }
        });
    }

    fn all_logs(&self) -> Vec<Arc<DurableLog>> {
        let mut logs = vec![Arc::clone(&self.meta)];
        for topic in read_lock(&self.topics).values() {
            logs.extend(topic.logs());
        }
        for queue in read_lock(&self.queues).values() {
            logs.push(Arc::clone(&queue.messages));
            logs.push(Arc::clone(&queue.state_log));
        }
        logs
    }

    fn topic_dir(&self, name: &str, id: u64) -> PathBuf {
        self.config
            .data_dir
            .join("topics")
            .join(format!("{name}@{id}"))
    }

    fn queue_dir(&self, name: &str, id: u64) -> PathBuf {
        self.config
            .data_dir
            .join("queues")
            .join(format!("{name}@{id}"))
    }

    /// Checks `event` against the catalog, appends it to `__meta` durably
    /// and applies it. `make_event` receives the offset the event will get,
    /// which serves as the id of a created resource. `before_append` runs
    /// with the final event, before the append on the `__meta` leader, or
    /// after the `__meta` leader committed it when this broker is not the
    /// leader.
    async fn commit_meta<T>(
        &self,
        make_event: impl FnOnce(u64) -> MetaEvent,
        before_append: impl FnOnce(&MetaEvent) -> Result<T>,
    ) -> Result<T> {
        if let Some(cluster) = self.cluster.get().filter(|_| !self.meta.is_leading()) {
            let event = make_event(0);
            read_lock(&self.catalog).check(&event)?;
            let offset = cluster.commit_meta(event.clone()).await?;
            self.wait_meta_applied(offset + 1).await?;
            return before_append(&event.with_id(offset));
        }
        let _write = self.meta_write.lock().await;
        let offset = self.meta.log_end_offset();
        let event = make_event(offset);
        read_lock(&self.catalog).check(&event)?;
        let prepared = before_append(&event)?;
        self.append_meta(offset, &event).await?;
        Ok(prepared)
    }

    /// Appends `event`, expected at `offset`, to `__meta` and applies it.
    /// The caller holds `meta_write`.
    async fn append_meta(&self, offset: u64, event: &MetaEvent) -> Result<()> {
        let value = serde_json::to_vec(event)
            .map_err(|err| BrokerError::Internal(format!("failed to encode event: {err}")))?;
        let record = Record {
            timestamp_ms: now_ms(),
            value: Some(value.into()),
            ..Record::default()
        };
        let info = self
            .meta
            .append(vec![record], ProducerInfo::default())
            .await?;
        debug_assert_eq!(info.base_offset, offset);
        write_lock(&self.catalog).apply(event)?;
        self.note_routing_change(event);
        self.meta_applied.send_replace(info.last_offset + 1);
        Ok(())
    }

    /// Checks that `user` may see `resource` (else 404 `kind` `name`) and
    /// holds `permission` on it (else 403).
    fn authorize<S: ResourceSpec>(
        resource: Option<&Resource<S>>,
        kind: &'static str,
        name: &str,
        user: &str,
        permission: Option<Permission>,
    ) -> Result<()> {
        let not_found = || BrokerError::NotFound {
            kind,
            name: name.to_string(),
        };
        let resource = resource.ok_or_else(not_found)?;
        if !resource.is_visible_to(user) {
            return Err(not_found());
        }
        if let Some(permission) = permission {
            if !resource.allows(user, permission) {
                let verb = match permission {
                    Permission::Publish => "publish to",
                    Permission::Consume => "consume from",
                };
                return Err(BrokerError::Forbidden(format!(
                    "user `{user}` may not {verb} {kind} `{name}`; its owner can grant the permission"
                )));
            }
        }
        Ok(())
    }
}

/// Splits a resource directory name `<name>@<id>`.
fn parse_resource_dir(file_name: &str) -> Option<(&str, u64)> {
    let (name, id) = file_name.rsplit_once('@')?;
    Some((name, id.parse().ok()?))
}

/// Directory of the metadata resource under the data directory.
pub const META_DIR: &str = "__meta";

/// Name of the `__meta` log in [`META_DIR`].
pub const META_LOG: &str = "0";

fn open_internal(logs: &Logs, config: &Config, dir: &Path) -> Result<Arc<DurableLog>> {
    let log_config = LogConfig {
        segment_bytes: INTERNAL_SEGMENT_BYTES.min(config.segment_bytes),
        ..LogConfig::default()
    };
    logs.open(dir, log_config, Arc::new(Notify::new()))
}

/// Calls `apply` with every record of `log` from `offset` up to the log end
/// offset, in offset order, and returns the offset after the last one.
/// Records above the high watermark are included: this broker replays its
/// own log, as it leads it.
pub(crate) fn replay_from(
    log: &DurableLog,
    mut offset: u64,
    end: u64,
    mut apply: impl FnMut(Record) -> Result<()>,
) -> Result<u64> {
    offset = offset.max(log.log_start_offset());
    while offset < end {
        let batches = log.read_uncommitted(offset, REPLAY_READ_BYTES)?;
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            let batch_end = batch.header.next_offset();
            for record in batch.records {
                if record.offset >= offset && record.offset < end {
                    offset = record.offset + 1;
                    apply(record)?;
                }
            }
            // A compacted batch may end after its last record, or hold none.
            offset = offset.max(batch_end.min(end));
        }
    }
    Ok(offset)
}

/// Calls `apply` with every record of `log`, in offset order.
pub(crate) fn replay(log: &DurableLog, apply: impl FnMut(Record) -> Result<()>) -> Result<()> {
    replay_from(log, 0, log.log_end_offset(), apply).map(|_| ())
}

/// Folds the whole `__meta` log into a catalog; returns it with the offset
/// after the last event.
fn replay_catalog(meta: &DurableLog) -> Result<(Catalog, u64)> {
    let mut catalog = Catalog::default();
    let end = apply_meta_records(meta, &mut catalog, 0, meta.log_end_offset(), |_| {})?;
    info!(log_end_offset = end, "metadata replayed");
    Ok((catalog, end))
}

/// Applies the `__meta` records in `start..end` to `catalog`; returns the
/// offset after the last one read.
fn apply_meta_records(
    meta: &DurableLog,
    catalog: &mut Catalog,
    start: u64,
    end: u64,
    mut applied: impl FnMut(MetaEvent),
) -> Result<u64> {
    replay_from(meta, start, end, |record| {
        let value = record.value.unwrap_or_default();
        match serde_json::from_slice::<MetaEvent>(&value) {
            Ok(event) => match catalog.apply(&event) {
                Ok(()) => applied(event),
                Err(err) => {
                    warn!(offset = record.offset, error = %err, "skipping inconsistent metadata event");
                }
            },
            Err(err) => {
                warn!(offset = record.offset, error = %err, "skipping undecodable metadata event");
            }
        }
        Ok(())
    })
}

/// The current time in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Read-locks `lock`; a poisoned lock means a thread panicked while holding
/// it, and the broker's state is then as consistent as the log makes it, so
/// the guard is taken anyway.
fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
