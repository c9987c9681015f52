//! A partition log with the broker's flush policy and a high watermark.
//!
//! On a single broker the high watermark is the first offset a crash could
//! lose: with `fsync = always` it is the flushed offset, otherwise the log end
//! offset (the operator chose speed over durability). Readers never see
//! records at or above it, so a consumer never sees a record that a crash
//! could then take back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use tokio::sync::{watch, Notify};
use tracing::warn;

use crate::broker::error::{BrokerError, Result};
use crate::log::{
    AppendInfo, FsyncPolicy, LogConfig, PartitionLog, ProducerInfo, Record, RecordBatch,
};

/// Leader epoch written into batches. A single broker is the only leader
/// there has ever been, so every batch carries epoch 0.
pub const SINGLE_NODE_LEADER_EPOCH: u32 = 0;

/// A partition log plus its flush policy and high watermark.
pub struct DurableLog {
    shared: Arc<Shared>,
    dir: PathBuf,
    policy: FsyncPolicy,
    /// Wakes the flusher task (`fsync = always` only).
    flush_requested: Arc<Notify>,
}

/// The state the flusher task shares with the log's users.
struct Shared {
    log: Arc<PartitionLog>,
    high_watermark: watch::Sender<u64>,
    /// Woken whenever the high watermark moves; shared by all partitions of
    /// one topic so that a long poll can wait on any of them.
    appended: Arc<Notify>,
    /// Progress of the flusher task: the durable offset or the last failure.
    flushed: watch::Sender<FlushState>,
}

/// Progress of the flusher task.
#[derive(Debug, Clone, Default)]
struct FlushState {
    /// Every offset below is durable.
    flushed: u64,
    /// The last failed flush: the offset it tried to reach and the error.
    /// Appends at or below that offset fail until a later flush covers them.
    failure: Option<(u64, String)>,
}

impl DurableLog {
    /// Opens (and recovers) the log in `dir`. With `fsync = always` it also
    /// starts the log's flusher task, so it must run inside a Tokio runtime.
    ///
    /// Everything recovery kept is readable at once: with `fsync = always` it
    /// was flushed before it was acknowledged, and otherwise the operator
    /// accepted losing it.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        policy: FsyncPolicy,
        appended: Arc<Notify>,
    ) -> Result<DurableLog> {
        let log = PartitionLog::open(dir, config)?;
        let end = log.log_end_offset();
        let shared = Arc::new(Shared {
            log: Arc::new(log),
            high_watermark: watch::Sender::new(end),
            appended,
            flushed: watch::Sender::new(FlushState {
                flushed: end,
                failure: None,
            }),
        });
        let flush_requested = Arc::new(Notify::new());
        if matches!(policy, FsyncPolicy::Always) {
            tokio::spawn(run_flusher(
                Arc::downgrade(&shared),
                Arc::clone(&flush_requested),
            ));
        }
        Ok(DurableLog {
            shared,
            dir: dir.to_path_buf(),
            policy,
            flush_requested,
        })
    }

    /// Appends `records` as one batch and returns once they are as durable as
    /// the flush policy requires.
    ///
    /// The append itself runs on the calling task: it is a copy into the
    /// mapped segment, and only a segment roll or a file extension makes a
    /// short blocking system call. With `fsync = always` the call then waits
    /// for the flusher task, so one flush covers every batch appended while
    /// the previous flush ran (group commit).
    ///
    /// Not cancel-safe: a cancelled call may still append the records.
    pub async fn append(&self, records: Vec<Record>, producer: ProducerInfo) -> Result<AppendInfo> {
        let log = &self.shared.log;
        let info = log.append(&records, SINGLE_NODE_LEADER_EPOCH, producer)?;
        if !matches!(self.policy, FsyncPolicy::Always) {
            self.shared.advance_high_watermark(log.log_end_offset());
            return Ok(info);
        }

        let target = info.last_offset + 1;
        let mut state = self.shared.flushed.subscribe();
        self.flush_requested.notify_one();
        let state = state
            .wait_for(|state| {
                state.flushed >= target || state.failure.as_ref().is_some_and(|(t, _)| *t >= target)
            })
            .await
            .map_err(|_| BrokerError::Internal("the flusher task stopped".into()))?;
        if state.flushed >= target {
            return Ok(info);
        }
        let reason = state
            .failure
            .as_ref()
            .map_or("", |(_, reason)| reason.as_str());
        Err(BrokerError::Internal(format!(
            "failed to flush {}: {reason}",
            self.dir.display()
        )))
    }

    /// Flushes everything appended so far; used by the interval flusher.
    pub async fn flush(&self) -> Result<()> {
        let log = Arc::clone(&self.shared.log);
        tokio::task::spawn_blocking(move || log.flush())
            .await
            .map_err(|err| BrokerError::Internal(format!("flush task failed: {err}")))??;
        Ok(())
    }

    /// Reads whole batches from `offset`, up to about `max_bytes`, below the
    /// high watermark.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<RecordBatch>> {
        let high_watermark = self.high_watermark();
        if offset >= high_watermark {
            return Ok(Vec::new());
        }
        Ok(self.shared.log.read(offset, max_bytes, high_watermark)?)
    }

    /// First offset not yet readable.
    pub fn high_watermark(&self) -> u64 {
        *self.shared.high_watermark.borrow()
    }

    /// First retained offset.
    pub fn log_start_offset(&self) -> u64 {
        self.shared.log.log_start_offset()
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> u64 {
        self.shared.log.log_end_offset()
    }

    /// The directory of this partition.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes and trims the active segment; called at shutdown.
    pub fn close(&self) -> Result<()> {
        Ok(self.shared.log.close()?)
    }
}

impl Shared {
    fn advance_high_watermark(&self, offset: u64) {
        let advanced = self.high_watermark.send_if_modified(|current| {
            if offset > *current {
                *current = offset;
                true
            } else {
                false
            }
        });
        if advanced {
            self.appended.notify_waiters();
        }
    }
}

impl Drop for DurableLog {
    fn drop(&mut self) {
        // The flusher task holds only a weak reference: wake it so that it
        // notices and ends.
        self.flush_requested.notify_one();
    }
}

/// Flushes the log whenever an append requests it, covering everything appended
/// up to that moment, and publishes the progress. Ends when the log is
/// dropped.
async fn run_flusher(shared: Weak<Shared>, flush_requested: Arc<Notify>) {
    loop {
        flush_requested.notified().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let target = shared.log.log_end_offset();
        if shared.flushed.borrow().flushed >= target {
            continue;
        }
        let log = Arc::clone(&shared.log);
        let result = tokio::task::spawn_blocking(move || log.flush_to(target)).await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(err) => Some(format!("flush task failed: {err}")),
        };
        if let Some(reason) = &failure {
            warn!(dir = %shared.log.dir().display(), error = %reason, "flush failed");
        }
        let flushed = shared.log.flushed_offset();
        shared.flushed.send_modify(|state| {
            state.flushed = state.flushed.max(flushed);
            state.failure = failure.map(|reason| (target, reason));
        });
        shared.advance_high_watermark(flushed);
    }
}
