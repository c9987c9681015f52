//! A partition log with the broker's flush policy and a high watermark.
//!
//! On a single broker the high watermark is the first offset a crash could
//! lose: with `fsync = always` it is the flushed offset, otherwise the log end
//! offset (the operator chose speed over durability). Readers never see
//! records at or above it, so a consumer never sees a record that a crash
//! could then take back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::broker::error::{BrokerError, Result};
use crate::log::{
    AppendInfo, FsyncPolicy, LogConfig, LogError, PartitionLog, ProducerInfo, Record, RecordBatch,
};

/// Leader epoch written into batches. A single broker is the only leader
/// there has ever been, so every batch carries epoch 0.
pub const SINGLE_NODE_LEADER_EPOCH: u32 = 0;

/// A partition log plus its flush policy and high watermark.
pub struct DurableLog {
    log: Arc<PartitionLog>,
    dir: PathBuf,
    policy: FsyncPolicy,
    high_watermark: watch::Sender<u64>,
    /// Woken whenever the high watermark moves; shared by all partitions of
    /// one topic so that a long poll can wait on any of them.
    appended: Arc<Notify>,
}

impl DurableLog {
    /// Opens (and recovers) the log in `dir`.
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
        let high_watermark = watch::Sender::new(log.log_end_offset());
        Ok(DurableLog {
            log: Arc::new(log),
            dir: dir.to_path_buf(),
            policy,
            high_watermark,
            appended,
        })
    }

    /// Appends `records` as one batch and returns once they are as durable as
    /// the flush policy asks. Runs the file work on the blocking pool.
    ///
    /// Not cancel-safe: a cancelled call may still append the records.
    pub async fn append(&self, records: Vec<Record>, producer: ProducerInfo) -> Result<AppendInfo> {
        let log = Arc::clone(&self.log);
        let flush = matches!(self.policy, FsyncPolicy::Always);
        let info = tokio::task::spawn_blocking(move || -> Result<AppendInfo, LogError> {
            let info = log.append(&records, SINGLE_NODE_LEADER_EPOCH, producer)?;
            if flush {
                log.flush_to(info.last_offset + 1)?;
            }
            Ok(info)
        })
        .await
        .map_err(|err| BrokerError::Internal(format!("append task failed: {err}")))??;

        let visible = if flush {
            self.log.flushed_offset()
        } else {
            self.log.log_end_offset()
        };
        self.advance_high_watermark(visible);
        Ok(info)
    }

    /// Flushes everything appended so far; used by the interval flusher.
    pub async fn flush(&self) -> Result<()> {
        let log = Arc::clone(&self.log);
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
        Ok(self.log.read(offset, max_bytes, high_watermark)?)
    }

    /// Reads the single record at `offset`, if it is below the high
    /// watermark and retained.
    pub fn read_one(&self, offset: u64) -> Result<Option<Record>> {
        let batches = self.read(offset, 1)?;
        let record = batches
            .into_iter()
            .flat_map(|batch| batch.records)
            .find(|record| record.offset == offset);
        Ok(record)
    }

    /// First offset not yet readable.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// First retained offset.
    pub fn log_start_offset(&self) -> u64 {
        self.log.log_start_offset()
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> u64 {
        self.log.log_end_offset()
    }

    /// The directory of this partition.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The notifier woken when the high watermark moves.
    pub fn appended(&self) -> &Arc<Notify> {
        &self.appended
    }

    /// Flushes and trims the active segment; called at shutdown.
    pub fn close(&self) -> Result<()> {
        Ok(self.log.close()?)
    }

    /// The interval of background flushes, if the policy has one.
    pub fn flush_interval(&self) -> Option<Duration> {
        match self.policy {
            FsyncPolicy::Interval(interval) => Some(interval),
            _ => None,
        }
    }

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
