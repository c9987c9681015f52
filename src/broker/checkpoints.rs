//! The checkpoint task: writes a recovery checkpoint for every open log
//! every [`CHECKPOINT_INTERVAL`], so that the recovery after a crash scans
//! only what was appended since (see `log/partition/checkpoint.rs`).
//!
//! With `fsync = never` it does not run: a checkpoint needs a flush, which
//! that policy leaves to the operating system. The latest checkpoint is
//! then the one of the last clean stop, and recovery after a crash reads
//! the batch headers appended since and scans the active segment.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::broker::Broker;
use crate::log::FsyncPolicy;

/// Time between two checkpoint passes.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

impl Broker {
    /// Starts the checkpoint task, unless logs are never synced.
    pub(crate) fn start_checkpoints(self: &Arc<Self>) {
        if self.logs.fsync() == FsyncPolicy::Never {
            return;
        }
        self.every(CHECKPOINT_INTERVAL, |broker| async move {
            let work = tokio::task::spawn_blocking(move || {
                for log in broker.logs.open_logs() {
                    if let Err(err) = log.write_checkpoint() {
                        warn!(dir = %log.dir().display(), error = %err, "recovery checkpoint failed; the next pass retries");
                    }
                }
            });
            if let Err(err) = work.await {
                warn!(error = %err, "checkpoint pass failed");
            }
        });
    }
}
