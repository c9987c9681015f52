//! The retention task: deletes old segments of the topics this broker
//! leads, by their `retention_ms` and `retention_bytes`.
//!
//! It runs every `retention_check_interval` on a blocking thread, one
//! partition at a time, and touches the segment list only for a moment,
//! so produce requests go on meanwhile. Only data below the high watermark
//! is deleted. A fetch below the new log start offset gets
//! `offset_out_of_range`, which names the first retained offset.
//!
//! NOTE: followers keep their copies until they lead the topic themselves,
//! and a new replica cannot yet copy a partition whose log start is above 0.

use std::sync::Arc;

use tracing::warn;

use crate::broker::{now_ms, read_lock, Broker};
use crate::log::Retention;

impl Broker {
    /// Starts the retention task.
    pub(crate) fn start_retention(self: &Arc<Self>) {
        self.every(self.config.retention_check_interval, |broker| async move {
            let work = tokio::task::spawn_blocking(move || broker.apply_retention());
            if let Err(err) = work.await {
                warn!(error = %err, "retention pass failed");
            }
        });
    }

    /// Runs one retention pass over every led topic that has limits.
    fn apply_retention(&self) {
        let topics: Vec<_> = read_lock(&self.topics).values().cloned().collect();
        let now = now_ms();
        for topic in topics {
            let retention = Retention {
                max_age_ms: topic.spec.retention_ms,
                max_bytes: topic.spec.retention_bytes,
            };
            if retention == Retention::default() {
                continue;
            }
            for log in &topic.partitions {
                let keep_from = log.high_watermark();
                if let Err(err) = log
                    .partition_log()
                    .apply_retention(retention, now, keep_from)
                {
                    warn!(topic = %topic.spec.name, log = %log.name(), error = %err, "retention failed; the next pass retries");
                }
            }
        }
    }
}
