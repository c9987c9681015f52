//! A partition log with the broker's flush policy, its replicas' progress
//! and a high watermark.
//!
//! The high watermark is the first offset that a crash or a change of
//! leader could take back. It is the minimum of this broker's durable
//! offset and the log end offsets that the in-sync followers reported. The
//! durable offset is the flushed offset with `fsync = always`, and
//! otherwise the log end offset, because the operator chose speed over
//! durability. On a single broker there are no
//! followers. Readers never see records at or above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{error, warn};

use crate::broker::error::{BrokerError, Result};
use crate::log::{
    AppendInfo, FsyncPolicy, LogError, PartitionLog, ProducerInfo, Record, RecordBatch, TimeLookup,
};

/// How long an `acks=all` append waits for the in-sync replicas.
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads refused because a stored batch was damaged, since the process
/// started; `/metrics` exports it.
pub static CORRUPT_READS: AtomicU64 = AtomicU64::new(0);

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Acks {
    /// Once every in-sync replica has the records (and, with
    /// `fsync = always`, this broker flushed them).
    #[default]
    All,
    /// Once this broker has them as durably as its flush policy requires.
    Leader,
    /// As soon as they are appended here, before any flush.
    None,
}

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
    policy: FsyncPolicy,
    /// Leader epoch stamped on appended batches.
    leader_epoch: AtomicU32,
    /// Set while this broker does not lead the log: appends fail and
    /// waiting appends give up.
    fenced: AtomicBool,
    replicas: Mutex<ReplicaProgress>,
    /// Woken on every append, high watermark change and fencing, for
    /// followers' fetches waiting on the leader.
    changes: Arc<Notify>,
}

/// The leader's record of its followers.
#[derive(Debug, Default)]
struct ReplicaProgress {
    /// In-sync followers, without this broker.
    isr: BTreeSet<u32>,
    /// The last log end offset each follower reported in a fetch.
    offsets: BTreeMap<u32, u64>,
    /// In-sync replicas, this broker included, that `acks=all` needs.
    min_insync: usize,
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
    /// Wraps an open log. With `fsync = always` it also starts the log's
    /// flusher task, so it must run inside a Tokio runtime.
    ///
    /// A log that `leading` is false for starts fenced, with a high
    /// watermark of 0, until [`DurableLog::lead`] makes this broker its
    /// leader. Otherwise (a single broker) everything recovery kept is
    /// readable at once: with `fsync = always` it was flushed before it was
    /// acknowledged, and otherwise the operator accepted losing it.
    pub fn new(
        log: Arc<PartitionLog>,
        policy: FsyncPolicy,
        appended: Arc<Notify>,
        leading: bool,
    ) -> DurableLog {
        let end = log.log_end_offset();
        let dir = log.dir().to_path_buf();
        let shared = Arc::new(Shared {
            log,
            high_watermark: watch::Sender::new(if leading { end } else { 0 }),
            appended,
            flushed: watch::Sender::new(FlushState {
                flushed: end,
                failure: None,
            }),
            policy,
            leader_epoch: AtomicU32::new(0),
            fenced: AtomicBool::new(!leading),
            replicas: Mutex::new(ReplicaProgress {
                min_insync: 1,
                ..ReplicaProgress::default()
            }),
            changes: Arc::new(Notify::new()),
        });
        let flush_requested = Arc::new(Notify::new());
        if matches!(policy, FsyncPolicy::Always) {
            tokio::spawn(run_flusher(
                Arc::downgrade(&shared),
                Arc::clone(&flush_requested),
            ));
        }
        DurableLog {
            shared,
            dir,
            policy,
            flush_requested,
        }
    }

    /// Makes this broker the leader at `leader_epoch` with the in-sync
    /// followers `isr`. `high_watermark` is what this broker knew as a
    /// follower; the high watermark never moves back.
    pub fn lead(&self, leader_epoch: u32, isr: &[u32], min_insync: usize, high_watermark: u64) {
        self.shared
            .leader_epoch
            .store(leader_epoch, Ordering::SeqCst);
        {
            let mut replicas = self.shared.lock_replicas();
            replicas.isr = isr.iter().copied().collect();
            replicas.min_insync = min_insync.max(1);
        }
        self.shared.fenced.store(false, Ordering::SeqCst);
        self.shared.advance_high_watermark(high_watermark);
        self.shared.update_high_watermark();
    }

    /// Replaces the in-sync followers after an ISR change was written.
    pub fn set_isr(&self, isr: &[u32]) {
        self.shared.lock_replicas().isr = isr.iter().copied().collect();
        self.shared.update_high_watermark();
    }

    /// Stops leading: new appends fail and waiting ones give up with
    /// `Unavailable`, so a deposed leader acknowledges nothing more.
    pub fn fence(&self) {
        self.shared.fenced.store(true, Ordering::SeqCst);
        // Wakes every waiter so that it checks the flag.
        self.shared.high_watermark.send_modify(|_| {});
        self.shared.flushed.send_modify(|_| {});
        self.shared.appended.notify_waiters();
        self.shared.changes.notify_waiters();
    }

    /// Woken on every append, high watermark change and fencing.
    pub fn changes(&self) -> &Arc<Notify> {
        &self.shared.changes
    }

    /// Moves the high watermark of a log this broker follows to what the
    /// leader reported; it never moves back.
    pub fn advance_follower_high_watermark(&self, high_watermark: u64) {
        self.shared.advance_high_watermark(high_watermark);
    }

    /// Returns whether this broker currently leads the log.
    pub fn is_leading(&self) -> bool {
        !self.shared.fenced.load(Ordering::SeqCst)
    }

    /// Notes the log end offset a follower reported in a fetch; every
    /// record below it is on that follower.
    pub fn record_follower_offset(&self, follower: u32, offset: u64) {
        self.shared.lock_replicas().offsets.insert(follower, offset);
        self.shared.update_high_watermark();
    }

    /// Returns the underlying log.
    pub fn partition_log(&self) -> &Arc<PartitionLog> {
        &self.shared.log
    }

    /// Appends `records` as one batch with the default `acks=all`.
    pub async fn append(&self, records: Vec<Record>, producer: ProducerInfo) -> Result<AppendInfo> {
        self.append_with(records, producer, Acks::All).await
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
    /// With `acks=all` it then waits until the high watermark passes the
    /// records, at most [`REPLICATION_TIMEOUT`].
    ///
    /// Not cancel-safe: a cancelled call may still append the records.
    pub async fn append_with(
        &self,
        records: Vec<Record>,
        producer: ProducerInfo,
        acks: Acks,
    ) -> Result<AppendInfo> {
        let info = self.append_local(&records, producer, acks)?;
        self.wait_durable(info.last_offset + 1, acks).await?;
        Ok(info)
    }

    /// Checks leadership (and the in-sync replicas for `acks=all`) and
    /// appends to the local log, without waiting for any flush or replica:
    /// the first half of [`DurableLog::append_with`].
    pub fn append_local(
        &self,
        records: &[Record],
        producer: ProducerInfo,
        acks: Acks,
    ) -> Result<AppendInfo> {
        self.check_leading()?;
        if acks == Acks::All {
            self.check_insync()?;
        }
        let epoch = self.shared.leader_epoch.load(Ordering::SeqCst);
        let info = self.shared.log.append(records, epoch, producer)?;
        self.shared.changes.notify_waiters();
        if !matches!(self.policy, FsyncPolicy::Always) {
            self.shared.update_high_watermark();
        }
        Ok(info)
    }

    /// Waits until every offset below `target` is as durable as `acks`
    /// requires: the second half of [`DurableLog::append_with`].
    pub async fn wait_durable(&self, target: u64, acks: Acks) -> Result<()> {
        match acks {
            Acks::None => Ok(()),
            Acks::Leader => self.wait_flushed(target).await,
            Acks::All => {
                self.wait_flushed(target).await?;
                self.wait_replicated(target).await
            }
        }
    }

    fn check_leading(&self) -> Result<()> {
        if self.shared.fenced.load(Ordering::SeqCst) {
            return Err(BrokerError::Unavailable(format!(
                "this broker does not lead {}; retry, the cluster routes the request to the leader",
                self.name()
            )));
        }
        Ok(())
    }

    fn check_insync(&self) -> Result<()> {
        let replicas = self.shared.lock_replicas();
        let insync = replicas.isr.len() + 1;
        if insync < replicas.min_insync {
            return Err(BrokerError::Unavailable(format!(
                "{insync} replicas are in sync and acks=all needs {}; nothing was written",
                replicas.min_insync
            )));
        }
        Ok(())
    }

    /// Waits until the in-sync replicas have every offset below `target`.
    async fn wait_replicated(&self, target: u64) -> Result<()> {
        let mut high_watermark = self.shared.high_watermark.subscribe();
        let fenced = &self.shared.fenced;
        let wait = async {
            high_watermark
                .wait_for(|hw| *hw >= target || fenced.load(Ordering::SeqCst))
                .await
                .map(|hw| *hw >= target)
        };
        match tokio::time::timeout(REPLICATION_TIMEOUT, wait).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(BrokerError::Unavailable(format!(
                "this broker stopped leading {} before the replicas confirmed the write; \
                 it may or may not be stored, retry",
                self.name()
            ))),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "the replicas of {} did not confirm the write within {} s; \
                 it may or may not be stored, retry",
                self.name(),
                REPLICATION_TIMEOUT.as_secs()
            ))),
        }
    }

    /// With `fsync = always`, waits until the flusher task made every
    /// offset below `target` durable.
    async fn wait_flushed(&self, target: u64) -> Result<()> {
        if !matches!(self.policy, FsyncPolicy::Always) {
            return Ok(());
        }
        let mut state = self.shared.flushed.subscribe();
        self.flush_requested.notify_one();
        let state = state
            .wait_for(|state| {
                state.flushed >= target || state.failure.as_ref().is_some_and(|(t, _)| *t >= target)
            })
            .await
            .map_err(|_| BrokerError::Internal("the flusher task stopped".into()))?;
        if state.flushed >= target {
            return Ok(());
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

    /// Reads whole batches from `offset`, up to about `max_bytes`, below the
    /// log end offset: records not yet replicated included. For replaying
    /// this broker's own state when it becomes leader.
    pub fn read_uncommitted(&self, offset: u64, max_bytes: usize) -> Result<Vec<RecordBatch>> {
        let end = self.log_end_offset();
        if offset >= end {
            return Ok(Vec::new());
        }
        Ok(self.shared.log.read(offset, max_bytes, end)?)
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
        self.shared
            .log
            .read(offset, max_bytes, high_watermark)
            .map_err(|err| self.reading_failed(err))
    }

    /// Returns the first record below the high watermark whose timestamp is
    /// at or after `timestamp_ms`, or `None` when there is none. A damaged
    /// batch on the way is reported as a read of it would be.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<TimeLookup>> {
        self.shared
            .log
            .offset_for_timestamp(timestamp_ms, self.high_watermark())
            .map_err(|err| self.reading_failed(err))
    }

    /// Turns a failed read into the broker's error: a damaged batch is
    /// logged, counted and named by partition and offset.
    fn reading_failed(&self, err: LogError) -> BrokerError {
        let LogError::Corrupt {
            path,
            position,
            offset,
            reason,
        } = &err
        else {
            return err.into();
        };
        CORRUPT_READS.fetch_add(1, Ordering::Relaxed);
        error!(
            log = %self.name(),
            offset = ?offset,
            path = %path.display(),
            position,
            reason = %reason,
            "refused to serve a damaged batch"
        );
        BrokerError::CorruptData {
            log: self.name(),
            offset: *offset,
        }
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

    /// Returns the last three components of the log's directory, such as
    /// `topics/orders@12/0`, for messages to clients.
    pub fn name(&self) -> String {
        let components: Vec<_> = self.dir.components().rev().take(3).collect();
        let name: PathBuf = components.into_iter().rev().collect();
        name.display().to_string()
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
    fn lock_replicas(&self) -> std::sync::MutexGuard<'_, ReplicaProgress> {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the high watermark to the minimum of this broker's durable
    /// offset and the in-sync followers' offsets, if that is higher.
    fn update_high_watermark(&self) {
        if self.fenced.load(Ordering::SeqCst) {
            return;
        }
        let own = match self.policy {
            FsyncPolicy::Always => self.flushed.borrow().flushed,
            _ => self.log.log_end_offset(),
        };
        let replicas = self.lock_replicas();
        let followers = replicas
            .isr
            .iter()
            .map(|id| replicas.offsets.get(id).copied().unwrap_or(0));
        let high_watermark = followers.fold(own, u64::min);
        drop(replicas);
        self.advance_high_watermark(high_watermark);
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
            self.changes.notify_waiters();
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
        shared.update_high_watermark();
    }
}
