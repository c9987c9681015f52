//! `PartitionLog`: the segments of one partition, and the operations the
//! broker calls on them.
//!
//! Invariants:
//!
//! - Segments are sorted by base offset, and only the last one (the active
//!   segment) is written. Every segment before it is sealed and synced.
//! - Offsets are dense: each batch starts at the log end offset (LEO), and
//!   leader epochs never decrease from one batch to the next.
//! - `flushed_offset <= log_end_offset`, and every offset below
//!   `flushed_offset` is on disk.
//!
//! Locks are taken in this order: `checkpoint`, `writer`, `flush_lock`,
//! `segments`. Appends hold only `writer`, except for the moment a roll swaps
//! segments. Readers hold `segments` for reading while they copy bytes out of
//! the maps, and truncation takes it for writing, so no map is cut under a
//! reader. The on-disk layout is in `docs/storage-format.md`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use tracing::{info, trace, warn};

use super::batch::{
    decode_batch, decode_header, encode_batch, encoded_batch_len, stamp_batch, validate_batch,
    BatchError, BatchHeader, ProducerInfo,
};
use super::files::io_error;
use super::reader::list_segments;
use super::record::Record;
use super::segment::{log_recovery, Segment};
use super::{LogConfig, LogError, MAX_BATCH_BYTES};
pub(crate) use checkpoint::Checkpoint;
pub use checkpoint::CHECKPOINT_FILE_NAME;
use compaction::{remove_cleaned_files, remove_covered_segment};
pub use compaction::{Compaction, CompactionOutcome};
use epochs::EpochHistory;
use fold::Fold;
pub use preview::{preview_recovery, RecoveryPreview};
pub use producers::ProducerBatch;
use producers::ProducerTable;
pub use retention::{Retention, RetentionOutcome};
pub use time::TimeLookup;

/// Name of the file in a partition directory that `open` locks with `flock`,
/// so that only one `PartitionLog` at a time owns the directory.
pub const LOCK_FILE_NAME: &str = ".lock";

/// Offsets and timestamp of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// The batch's `max_timestamp`: the largest record timestamp, in ms.
    pub timestamp_ms: i64,
}

/// Description of one segment, for tools and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Offset of the segment's first record.
    pub base_offset: u64,
    /// The `.log` file.
    pub path: PathBuf,
    /// Bytes of batches in the segment, without the allocated zero tail.
    pub size_bytes: u64,
    /// Offset after the segment's last record.
    pub next_offset: u64,
}

/// The log of one partition. `Send + Sync`: share it through an `Arc`.
///
/// Appends are serialized. Reads and flushes run concurrently with appends
/// and with each other. All methods block on disk I/O, so async callers run
/// them on a blocking thread.
///
/// Dropping the log without `close` is safe: the next `open` recovers the
/// active segment as after a crash.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    writer: Mutex<WriterState>,
    /// Serializes syncs, so that a caller whose data a finished sync covered
    /// can return without syncing again.
    flush_lock: Mutex<()>,
    segments: RwLock<Vec<Arc<Segment>>>,
    log_end_offset: AtomicU64,
    flushed_offset: AtomicU64,
    flush_count: AtomicU64,
    /// The (segment base, position) of the last recovery checkpoint this
    /// value wrote. Locked before `writer` by checkpoint writes, and by the
    /// changes that delete the checkpoint.
    checkpoint: Mutex<Option<(u64, u64)>>,
    /// Whether `open` resumed at a recovery checkpoint.
    resumed: bool,
    /// Held by a compaction pass, so that passes on one log do not overlap.
    compacting: Mutex<()>,
    /// Open lock file. The `flock` is released when it is closed.
    _dir_lock: File,
}

impl fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_end_offset", &self.log_end_offset())
            .field("flushed_offset", &self.flushed_offset())
            .finish_non_exhaustive()
    }
}

struct WriterState {
    /// Leader epoch of the last batch in the log.
    latest_leader_epoch: u32,
    /// Where each leader epoch in the log starts.
    epochs: EpochHistory,
    /// Recent batches of each idempotent producer.
    producers: ProducerTable,
    /// Set by `close`, or when a truncation failed halfway.
    closed: bool,
}

impl PartitionLog {
    /// Opens the partition log in `dir`, creating the directory and a first
    /// segment when missing, and recovers the active segment.
    ///
    /// Sealed segments are trusted. The active (last) segment is scanned
    /// from the end of the recovery checkpoint, or from byte 0 without a
    /// usable one, and cut at the first invalid batch, as described on
    /// `Segment::recover`. The result is logged at `info`, or at `warn` when
    /// recovery dropped bytes.
    ///
    /// # Errors
    ///
    /// `Locked` if another `PartitionLog` has the directory open,
    /// `InvalidConfig`, `DiskFull` when disk space for the active segment
    /// cannot be allocated, and `Io`.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let dir_lock = lock_dir(dir)?;
        let interval = config.index_interval_bytes;

        let files = list_segments(dir).map_err(io_error(dir))?;
        let mut segments = Vec::with_capacity(files.len().max(1));
        let latest_leader_epoch;
        // Where the fold of epochs and producers starts: the checkpoint's
        // state and position, or nothing and the first segment's start.
        let mut fold = Fold::default();
        match files.split_last() {
            None => {
                let segment = Segment::create(dir, 0, config.segment_bytes, interval)?;
                segments.push(Arc::new(segment));
                latest_leader_epoch = 0;
                info!(dir = %dir.display(), "created partition log");
            }
            Some((last, sealed)) => {
                remove_cleaned_files(dir)?;
                let checkpoint = checkpoint::read(dir);
                for files in sealed {
                    if remove_covered_segment(segments.last().map(Arc::as_ref), files)? {
                        continue;
                    }
                    let segment = Segment::open_sealed(files.clone(), interval)?;
                    if let Some(checkpoint) = &checkpoint {
                        if checkpoint.segment_base == segment.base_offset()
                            && segment.covers(checkpoint)
                        {
                            fold = Fold::from_checkpoint(checkpoint, segments.len());
                        }
                    }
                    segments.push(Arc::new(segment));
                }
                let previous_epoch = segments
                    .last()
                    .and_then(|s| s.last_header())
                    .map_or(0, |h| h.leader_epoch);
                let resume = checkpoint.as_ref().and_then(|c| c.resume_in(last));
                let (active, recovery) = Segment::recover(
                    last.clone(),
                    previous_epoch,
                    config.segment_bytes,
                    interval,
                    resume,
                )?;
                log_recovery(dir, &active, &recovery);
                if let (true, Some(checkpoint)) = (recovery.resumed, &checkpoint) {
                    fold = Fold::from_checkpoint(checkpoint, segments.len());
                }
                latest_leader_epoch = recovery.last_leader_epoch.unwrap_or(previous_epoch);
                segments.push(Arc::new(active));
                warn_on_offset_gaps(dir, &segments);
            }
        }

        let resumed = fold.is_resumed();
        let (epochs, producers) = fold.run(&segments)?;
        // Recovery synced the active segment, so everything in it is durable.
        let log_end_offset = segments.last().map_or(0, |s| s.next_offset());
        info!(
            dir = %dir.display(),
            segments = segments.len(),
            log_start_offset = segments[0].base_offset(),
            log_end_offset,
            "opened partition log"
        );
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config,
            writer: Mutex::new(WriterState {
                latest_leader_epoch,
                epochs,
                producers,
                closed: false,
            }),
            flush_lock: Mutex::new(()),
            segments: RwLock::new(segments),
            log_end_offset: AtomicU64::new(log_end_offset),
            flushed_offset: AtomicU64::new(log_end_offset),
            flush_count: AtomicU64::new(0),
            checkpoint: Mutex::new(None),
            resumed,
            compacting: Mutex::new(()),
            _dir_lock: dir_lock,
        })
    }

    /// Appends `records` as one batch at the log end offset. Record offsets
    /// are assigned by the log. The data is not durable until `flush_to`
    /// covers it.
    ///
    /// The append that fills a segment rolls it, which syncs the old segment
    /// and creates the new one, so that append and the appends queued
    /// behind it wait for a few syncs.
    ///
    /// # Errors
    ///
    /// `EmptyBatch`, `BatchTooLarge`, `StaleLeaderEpoch` when `leader_epoch`
    /// is below the last batch's, `DiskFull` when the active segment's file
    /// cannot be extended to hold the batch, `Closed`, and `Io`. Nothing is
    /// appended on error.
    pub fn append(
        &self,
        records: &[Record],
        leader_epoch: u32,
        producer: ProducerInfo,
    ) -> Result<AppendInfo, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let size = encoded_batch_len(records);
        if size > MAX_BATCH_BYTES {
            return Err(LogError::BatchTooLarge {
                size,
                max: MAX_BATCH_BYTES,
            });
        }
        // Encoding happens before the lock, so producers encode in parallel.
        // The base offset lies outside the CRC and is stamped under the lock.
        let mut batch = encode_batch(0, leader_epoch, producer, records);

        let mut writer = self.lock_writer();
        let base_offset = self.log_end_offset();
        stamp_batch(&mut batch, base_offset, leader_epoch);
        let header = decode_header(&batch).map_err(|reason| LogError::InvalidBatch {
            offset: base_offset,
            reason,
        })?;
        self.append_locked(&mut writer, &batch, &header)
    }

    /// Appends a batch encoded elsewhere, such as one fetched from the
    /// leader. Its base offset must equal the log end offset; a compacted
    /// batch may start above it, after batches that compaction removed.
    ///
    /// # Errors
    ///
    /// `InvalidBatch` when length, magic, CRC or records are invalid,
    /// `UnexpectedBaseOffset`, and the errors of `append`.
    pub fn append_batch(&self, encoded: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_encoded(encoded, |bytes| {
            decode_batch(bytes).map(|batch| batch.header)
        })
    }

    /// Appends a batch fetched from the leader, which validated its records
    /// when it wrote them. Checks the length, magic byte and CRC but not the
    /// records, which saves decoding every record on every replica. Its base
    /// offset follows the log end offset as on [`append_batch`](Self::append_batch).
    ///
    /// # Errors
    ///
    /// `InvalidBatch` when the length, magic byte or CRC are invalid,
    /// `UnexpectedBaseOffset`, and the errors of `append`.
    pub fn append_replica_batch(&self, encoded: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_encoded(encoded, validate_batch)
    }

    /// Appends a batch encoded elsewhere after `check` accepted it and
    /// returned its header.
    fn append_encoded(
        &self,
        encoded: &[u8],
        check: impl FnOnce(&[u8]) -> Result<BatchHeader, BatchError>,
    ) -> Result<AppendInfo, LogError> {
        if encoded.len() > MAX_BATCH_BYTES {
            return Err(LogError::BatchTooLarge {
                size: encoded.len(),
                max: MAX_BATCH_BYTES,
            });
        }
        let header = check(encoded).map_err(|reason| LogError::InvalidBatch {
            offset: decode_header(encoded).map_or(self.log_end_offset(), |h| h.base_offset),
            reason,
        })?;
        // A compacted batch, copied from a leader that compacted its log,
        // may hold no record and may follow a gap.
        if header.record_count == 0 && !header.is_compacted() {
            return Err(LogError::EmptyBatch);
        }

        let mut writer = self.lock_writer();
        let log_end_offset = self.log_end_offset();
        let follows = header.base_offset == log_end_offset
            || (header.is_compacted() && header.base_offset > log_end_offset);
        if !follows {
            return Err(LogError::UnexpectedBaseOffset {
                base_offset: header.base_offset,
                log_end_offset,
            });
        }
        self.append_locked(&mut writer, encoded, &header)
    }

    /// Makes every offset below `offset` durable, blocking until it is.
    ///
    /// This is group commit: one `msync` covers every batch appended before
    /// it starts, and a caller whose offsets a finished sync already covers
    /// returns without syncing. An `offset` above the log end offset is
    /// treated as the log end offset.
    pub fn flush_to(&self, offset: u64) -> Result<(), LogError> {
        let offset = offset.min(self.log_end_offset());
        if offset <= self.flushed_offset() {
            return Ok(());
        }
        let _flush = self
            .flush_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let flushed = self.flushed_offset();
        if offset <= flushed {
            return Ok(());
        }

        // Sync outside the segments lock, so that readers and rolls go on.
        let pending: Vec<Arc<Segment>> = self
            .read_segments()
            .iter()
            .filter(|s| s.next_offset() > flushed)
            .cloned()
            .collect();
        let mut durable = flushed;
        for segment in pending {
            durable = durable.max(segment.sync()?);
        }
        self.flushed_offset.fetch_max(durable, Ordering::AcqRel);
        self.flush_count.fetch_add(1, Ordering::Relaxed);
        trace!(dir = %self.dir.display(), flushed_offset = durable, "flushed partition log");
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<(), LogError> {
        self.flush_to(self.log_end_offset())
    }

    /// Returns the first offset in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.read_segments()
            .first()
            .map_or(0, |segment| segment.base_offset())
    }

    /// Returns the log end offset: the offset the next record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Returns the offset below which every record is durable.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// Returns how many syncs `flush_to` has performed since `open`. Calls
    /// that found their offsets already durable are not counted, nor are the
    /// syncs of a segment roll.
    pub fn flush_count(&self) -> u64 {
        self.flush_count.load(Ordering::Relaxed)
    }

    /// Returns whether `open` resumed at a recovery checkpoint instead of
    /// scanning the active segment and every batch header from the start.
    pub fn resumed_at_checkpoint(&self) -> bool {
        self.resumed
    }

    /// Returns the partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns a description of every segment, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.read_segments().iter().map(|s| s.info()).collect()
    }

    /// Returns the leader epoch of the last batch, or `None` for an empty
    /// log.
    pub fn last_leader_epoch(&self) -> Option<u32> {
        self.lock_writer().epochs.latest()
    }

    /// Returns the last few batches that idempotent producer `producer_id`
    /// appended, oldest first, or none when the log has none.
    pub fn producer_batches(&self, producer_id: i64) -> Vec<ProducerBatch> {
        self.lock_writer().producers.batches(producer_id)
    }

    /// Finds the largest leader epoch at or below `epoch` in this log and
    /// the offset where it ends: the first offset of the next epoch, or the
    /// log end offset. `None` when every epoch in the log is above `epoch`,
    /// or the log is empty.
    pub fn epoch_end_offset(&self, epoch: u32) -> Option<(u32, u64)> {
        let writer = self.lock_writer();
        writer.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Flushes the log, trims the active segment to its length and refuses
    /// further writes. Reads keep working. Closing twice is harmless.
    ///
    /// The directory lock is held until the log is dropped.
    pub fn close(&self) -> Result<(), LogError> {
        let checkpoint = self.lock_checkpoint();
        let mut writer = self.lock_writer();
        if writer.closed {
            return Ok(());
        }
        self.flush()?;
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(active) = segments.last_mut() {
            if !active.is_sealed() {
                *active = Arc::new(active.seal()?);
            }
        }
        writer.closed = true;
        drop(segments);
        drop(writer);
        drop(checkpoint);
        // The sealed segment ends where the log ends, so the next open
        // scans nothing.
        self.write_checkpoint()?;
        info!(
            dir = %self.dir.display(),
            log_end_offset = self.log_end_offset(),
            "closed partition log"
        );
        Ok(())
    }

    fn append_locked(
        &self,
        writer: &mut WriterState,
        batch: &[u8],
        header: &BatchHeader,
    ) -> Result<AppendInfo, LogError> {
        if writer.closed {
            return Err(self.closed_error());
        }
        if header.leader_epoch < writer.latest_leader_epoch {
            return Err(LogError::StaleLeaderEpoch {
                leader_epoch: header.leader_epoch,
                latest_leader_epoch: writer.latest_leader_epoch,
            });
        }

        let active = self.prepare_active(batch.len(), header.base_offset)?;
        active.append(batch, header)?;
        writer.latest_leader_epoch = header.leader_epoch;
        writer
            .epochs
            .record(header.leader_epoch, header.base_offset);
        writer.producers.record(header);
        // Stored after the segment published the batch, so a reader that loads
        // this LEO also finds the batch.
        self.log_end_offset
            .store(header.next_offset(), Ordering::Release);

        trace!(
            dir = %self.dir.display(),
            base_offset = header.base_offset,
            records = header.record_count,
            bytes = batch.len(),
            "appended batch"
        );
        Ok(AppendInfo {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            timestamp_ms: header.max_timestamp,
        })
    }

    /// Returns the segment that the next batch, of `len` bytes at
    /// `base_offset`, goes to. Rolls when the batch does not fit, and
    /// replaces an empty segment whose capacity is too small.
    fn prepare_active(&self, len: usize, base_offset: u64) -> Result<Arc<Segment>, LogError> {
        let active = self.active_segment()?;
        let needed = len as u64;

        if active.size() == 0 {
            if !active.is_sealed() && active.capacity() >= len {
                return Ok(active);
            }
            // An empty segment contains no data, so it is recreated in place
            // with enough room for the batch.
            let capacity = self.config.segment_bytes.max(needed);
            let segment = Arc::new(Segment::create(
                &self.dir,
                active.base_offset(),
                capacity,
                self.config.index_interval_bytes,
            )?);
            let mut segments = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(last) = segments.last_mut() {
                *last = segment.clone();
            }
            return Ok(segment);
        }

        let over_size = active.size() as u64 + needed > self.config.segment_bytes;
        let relative_offset_overflows = base_offset - active.base_offset() > u64::from(u32::MAX);
        if active.is_sealed() || over_size || relative_offset_overflows {
            return self.roll(active, base_offset, needed);
        }
        Ok(active)
    }

    /// Seals `old` (sync, then trim) and then creates the next segment at
    /// `base_offset`. A crash between the two steps leaves a trimmed last
    /// segment, which recovery opens as the active one.
    fn roll(
        &self,
        old: Arc<Segment>,
        base_offset: u64,
        batch_len: u64,
    ) -> Result<Arc<Segment>, LogError> {
        if !old.is_sealed() {
            let sealed = Arc::new(old.seal()?);
            self.flushed_offset
                .fetch_max(sealed.next_offset(), Ordering::AcqRel);
            let mut segments = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(last) = segments.last_mut() {
                *last = sealed;
            }
        }

        let capacity = self.config.segment_bytes.max(batch_len);
        let segment = Arc::new(Segment::create(
            &self.dir,
            base_offset,
            capacity,
            self.config.index_interval_bytes,
        )?);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(segment.clone());
        info!(
            dir = %self.dir.display(),
            sealed_segment = old.base_offset(),
            sealed_bytes = old.size(),
            base_offset,
            "rolled segment"
        );
        Ok(segment)
    }

    /// Returns the last segment. The list is empty only after a failed
    /// truncation, which also closes the log.
    fn active_segment(&self) -> Result<Arc<Segment>, LogError> {
        let segments = self.read_segments();
        segments.last().cloned().ok_or_else(|| self.closed_error())
    }

    fn read_segments(&self) -> RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_error(&self) -> LogError {
        LogError::Closed {
            dir: self.dir.clone(),
        }
    }
}

/// Takes an exclusive `flock` on the directory's lock file, so that two
/// `PartitionLog` values never map the same files. The lock lasts as long as
/// the returned file stays open.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: `flock` only reads the descriptor, which `file` keeps open.
    let code = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if code != 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LogError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        return Err(LogError::Io { path, source });
    }
    Ok(file)
}

/// Warns when a segment does not end where the next one begins. Reads skip
/// such a gap.
fn warn_on_offset_gaps(dir: &Path, segments: &[Arc<Segment>]) {
    for pair in segments.windows(2) {
        let (segment, next) = (&pair[0], &pair[1]);
        if segment.next_offset() != next.base_offset() {
            warn!(
                dir = %dir.display(),
                segment = segment.base_offset(),
                segment_next_offset = segment.next_offset(),
                next_segment = next.base_offset(),
                "segment does not end where the next one begins"
            );
        }
    }
}

mod checkpoint;
mod compaction;
mod epochs;
mod fold;
mod preview;
mod producers;
mod read;
mod retention;
mod time;
mod truncate;

#[cfg(test)]
mod tests;
