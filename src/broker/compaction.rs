//! The compaction task: keeps the keyed logs of the topics and queues this
//! broker leads to about one record per key.
//!
//! Every `compaction_interval` it compacts, one log at a time on a blocking
//! thread:
//!
//! - each partition of a topic created with `cleanup: compact`, below its
//!   high watermark;
//! - each topic's offsets log (committed offsets and routing progress),
//!   below its high watermark;
//! - each queue's state log, below the offset its latest snapshot covers,
//!   after appending a new snapshot when enough events followed the last
//!   one (see `queue_log.rs`).
//!
//! Tombstones older than `tombstone_retention_ms` are removed. Produce,
//! fetch and retention go on during a pass.

use std::sync::Arc;

use tracing::warn;

use crate::broker::durable::DurableLog;
use crate::broker::{now_ms, queue_log, read_lock, Broker};
use crate::log::Compaction;
use crate::meta::Cleanup;

impl Broker {
    /// Starts the compaction task.
    pub(crate) fn start_compaction(self: &Arc<Self>) {
        self.every(self.config.compaction_interval, |broker| async move {
            broker.compact_all().await;
        });
    }

    /// Runs one compaction pass over every led topic and queue.
    async fn compact_all(&self) {
        let topics: Vec<_> = read_lock(&self.topics).values().cloned().collect();
        for topic in topics {
            if topic.spec.cleanup == Cleanup::Compact {
                for log in &topic.partitions {
                    self.compact_log(log, log.high_watermark()).await;
                }
            }
            let offsets = topic.offsets.log();
            self.compact_log(offsets, offsets.high_watermark()).await;
        }
        let queues: Vec<_> = read_lock(&self.queues).values().cloned().collect();
        for queue in queues {
            match queue_log::snapshot_if_due(
                &queue.state_log,
                &queue.spec.name,
                &queue.snapshot_covers,
            )
            .await
            {
                Ok(covers_below) => self.compact_log(&queue.state_log, covers_below).await,
                Err(err) => {
                    warn!(queue = %queue.spec.name, error = %err, "queue snapshot failed; the next pass retries");
                }
            }
        }
    }

    /// Compacts `log` below `clean_below`; logs a failure, which the next
    /// pass retries.
    async fn compact_log(&self, log: &Arc<DurableLog>, clean_below: u64) {
        let compaction = Compaction {
            clean_below,
            tombstone_retention_ms: self.config.tombstone_retention_ms,
            now_ms: now_ms(),
        };
        let partition_log = Arc::clone(log.partition_log());
        let work = tokio::task::spawn_blocking(move || partition_log.compact(compaction));
        match work.await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                warn!(log = %log.name(), error = %err, "compaction failed; the next pass retries");
            }
            Err(err) => warn!(log = %log.name(), error = %err, "compaction task failed"),
        }
    }
}
