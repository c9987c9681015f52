//! An open topic: its partition logs and how messages are spread over them.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::broker::durable::DurableLog;
use crate::broker::error::Result;
use crate::config::Config;
use crate::log::LogConfig;
use crate::meta::TopicSpec;

/// A topic with its partitions open.
pub struct Topic {
    /// Settings from the catalog.
    pub spec: TopicSpec,
    /// One log per partition, indexed by partition number.
    pub partitions: Vec<Arc<DurableLog>>,
    /// Woken when any partition's high watermark moves.
    pub appended: Arc<Notify>,
    /// Partition for the next request's messages without a key.
    next_partition: AtomicU32,
}

impl Topic {
    /// Opens (creating if needed) every partition under `dir`.
    pub fn open(config: &Config, dir: &Path, spec: TopicSpec) -> Result<Topic> {
        let appended = Arc::new(Notify::new());
        let log_config = LogConfig {
            segment_bytes: spec.segment_bytes.unwrap_or(config.segment_bytes),
            ..LogConfig::default()
        };
        let partitions = (0..spec.partitions)
            .map(|partition| {
                let log = DurableLog::open(
                    &dir.join(partition.to_string()),
                    log_config,
                    config.fsync,
                    Arc::clone(&appended),
                )?;
                Ok(Arc::new(log))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            spec,
            partitions,
            appended,
            next_partition: AtomicU32::new(0),
        })
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

    /// Picks the partition for one request's keyless messages. Keeping a
    /// request's messages together makes one batch; successive requests
    /// rotate over the partitions.
    pub fn next_request_partition(&self) -> u32 {
        self.next_partition.fetch_add(1, Ordering::Relaxed) % self.partitions.len() as u32
    }
}
