//! An open topic: its partition logs and how messages are spread over them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::broker::durable::DurableLog;
use crate::broker::error::Result;
use crate::broker::logs::Logs;
use crate::broker::offsets::OffsetStore;
use crate::config::Config;
use crate::log::LogConfig;
use crate::meta::TopicSpec;

/// Name of the log directory, beside the partitions, that contains the
/// committed offsets of the topic's subscriptions.
pub const OFFSETS_LOG: &str = "offsets";

/// Segment size of the offsets log, which contains small keyed records.
const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;

/// A topic with its partitions open.
pub struct Topic {
    /// Settings from the catalog.
    pub spec: TopicSpec,
    /// One log per partition, indexed by partition number.
    pub partitions: Vec<Arc<DurableLog>>,
    /// Committed offsets of the topic's subscriptions.
    pub offsets: OffsetStore,
    /// Woken when any partition's high watermark moves.
    pub appended: Arc<Notify>,
    /// Held while an idempotent request is checked and appended.
    pub idempotence: tokio::sync::Mutex<()>,
    /// Woken when a binding of this topic is added.
    pub bindings_changed: Notify,
    /// Partition end offsets noted when a binding's creation was applied,
    /// by binding id, until the router commits them.
    binding_starts: Mutex<HashMap<u64, Vec<u64>>>,
    /// Partition for the next request's messages without a key.
    next_partition: AtomicU32,
}

impl Topic {
    /// Opens (creating if needed) every partition and the offsets log
    /// under `dir`.
    pub fn open(logs: &Logs, config: &Config, dir: &Path, spec: TopicSpec) -> Result<Topic> {
        let appended = Arc::new(Notify::new());
        let log_config = LogConfig {
            segment_bytes: spec.segment_bytes.unwrap_or(config.segment_bytes),
            ..LogConfig::default()
        };
        let partitions = (0..spec.partitions)
            .map(|partition| {
                logs.open(
                    &dir.join(partition.to_string()),
                    log_config,
                    Arc::clone(&appended),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let offsets = OffsetStore::open(logs.open(
            &dir.join(OFFSETS_LOG),
            LogConfig {
                segment_bytes: OFFSETS_SEGMENT_BYTES.min(config.segment_bytes),
                ..LogConfig::default()
            },
            Arc::new(Notify::new()),
        )?)?;
        Ok(Topic {
            spec,
            partitions,
            offsets,
            appended,
            idempotence: tokio::sync::Mutex::new(()),
            bindings_changed: Notify::new(),
            binding_starts: Mutex::new(HashMap::new()),
            next_partition: AtomicU32::new(0),
        })
    }

    /// Returns the names of the topic's logs under its directory: the partitions,
    /// then the offsets log.
    pub fn log_names(partitions: u32) -> Vec<String> {
        let mut names: Vec<String> = (0..partitions).map(|p| p.to_string()).collect();
        names.push(OFFSETS_LOG.to_string());
        names
    }

    /// Returns every log of the topic, in the order of [`Topic::log_names`].
    pub fn logs(&self) -> Vec<Arc<DurableLog>> {
        let mut logs = self.partitions.clone();
        logs.push(Arc::clone(self.offsets.log()));
        logs
    }

    /// The partition for a message: by CRC32 of the key, so equal keys keep
    /// their order, or else the partition chosen for this request.
    pub fn partition_for(&self, key: Option<&str>, request_partition: u32) -> u32 {
        let count = self.partitions.len() as u32;
        match key {
            Some(key) => crc32fast::hash(key.as_bytes()) % count,
            None => request_partition,
        }
    }

    /// Notes where binding `id` starts in each partition.
    pub fn note_binding_start(&self, id: u64, starts: Vec<u64>) {
        self.lock_starts().insert(id, starts);
        self.bindings_changed.notify_one();
    }

    /// Returns where binding `id` starts in `partition`, if noted.
    pub fn binding_start(&self, id: u64, partition: u32) -> Option<u64> {
        self.lock_starts()
            .get(&id)
            .and_then(|starts| starts.get(partition as usize).copied())
    }

    fn lock_starts(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<u64>>> {
        self.binding_starts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Picks the partition for one request's keyless messages. Keeping a
    /// request's messages together makes one batch; successive requests
    /// rotate over the partitions.
    pub fn next_request_partition(&self) -> u32 {
        self.next_partition.fetch_add(1, Ordering::Relaxed) % self.partitions.len() as u32
    }
}
