//! Storage engine: an append-only, Kafka-style segment log per partition.
//!
//! A partition is a directory of segments. Each segment is a `.log` file of
//! record batches named by its base offset, zero-padded to 20 digits, with a
//! sparse `.index` (offset to byte position) and `.timeindex` (time to
//! offset) of the same name. Offsets are assigned densely per partition from
//! 0, and only compaction leaves gaps in them. Only the last segment (the
//! active one) is written, through a memory map over a file whose disk space
//! is allocated in growing steps ahead of the writes. The others are sealed:
//! trimmed to their length, mapped read-only and closed, so only the active
//! segment and the lock file hold file descriptors.
//!
//! [`PartitionLog`] is the entry point. It appends batches, reads whole
//! batches by offset or time, rolls segments, makes data durable with group
//! commit ([`PartitionLog::flush_to`]), truncates for replication, deletes
//! old segments (retention), compacts keyed logs, writes recovery
//! checkpoints and, on open, recovers a torn tail from the last checkpoint.
//! The byte layout of every file is specified in `docs/storage-format.md`,
//! and [`reader`] reads it without a `PartitionLog`, for tools.

#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub mod batch;
mod files;
pub mod index;
mod mmap;
mod partition;
pub mod reader;
pub mod record;
mod scan;
mod segment;
pub mod time_index;
pub mod varint;

pub use batch::{
    decode_batch, decode_header, encode_batch, encoded_batch_len, validate_batch, BatchError,
    BatchHeader, ProducerInfo, RecordBatch, ATTRIBUTE_COMPACTED,
};
pub use partition::{
    preview_recovery, AppendInfo, Compaction, CompactionOutcome, PartitionLog, ProducerBatch,
    RecoveryPreview, Retention, RetentionOutcome, SegmentInfo, TimeLookup, CHECKPOINT_FILE_NAME,
    LOCK_FILE_NAME,
};
pub use record::Record;

/// Largest batch the log accepts, in bytes. Index positions are 32-bit, and
/// a batch larger than `segment_bytes` gets a segment of its own, so a batch
/// must fit in 4 GiB. Brokers should enforce a much smaller request limit.
pub const MAX_BATCH_BYTES: usize = u32::MAX as usize;

/// Default `LogConfig::segment_bytes`: 128 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;

/// Default `LogConfig::index_interval_bytes`: 4 KiB.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;

/// Error from a [`PartitionLog`] operation.
#[derive(Debug, Error)]
pub enum LogError {
    /// A file system call failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or directory the call was made on.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A read or truncation named an offset outside the log.
    #[error(
        "offset {offset} is out of range: the log spans offsets \
         {log_start_offset} to {log_end_offset}"
    )]
    OffsetOutOfRange {
        /// Requested offset.
        offset: u64,
        /// First offset in the log.
        log_start_offset: u64,
        /// Next offset the log will assign.
        log_end_offset: u64,
    },
    /// Allocating disk space for a segment failed because the file system
    /// is full (or the quota is used up). Nothing was appended.
    #[error("no space left to allocate disk space for {}: free disk space", path.display())]
    DiskFull {
        /// Segment file being extended.
        path: PathBuf,
    },
    /// The batch exceeds [`MAX_BATCH_BYTES`].
    #[error("batch of {size} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Encoded batch size in bytes.
        size: usize,
        /// Maximum batch size in bytes.
        max: usize,
    },
    /// A batch passed to `append_batch` failed validation.
    #[error("invalid batch with base offset {offset}: {reason}")]
    InvalidBatch {
        /// Base offset stored in the batch, or the log end offset when the
        /// header could not be read.
        offset: u64,
        /// Validation error.
        reason: BatchError,
    },
    /// An append carried no records.
    #[error("a batch must contain at least one record")]
    EmptyBatch,
    /// A batch passed to `append_batch` does not start at the log end offset.
    #[error("batch base offset {base_offset} does not match the log end offset {log_end_offset}")]
    UnexpectedBaseOffset {
        /// Base offset stored in the batch.
        base_offset: u64,
        /// Offset the batch must start at.
        log_end_offset: u64,
    },
    /// The batch's leader epoch is below that of the last batch in the log.
    /// Epochs may not decrease, because recovery treats a decrease as
    /// corruption.
    #[error(
        "leader epoch {leader_epoch} is below the latest leader epoch \
         {latest_leader_epoch} in the log"
    )]
    StaleLeaderEpoch {
        /// Epoch of the rejected batch.
        leader_epoch: u32,
        /// Epoch of the last batch in the log.
        latest_leader_epoch: u32,
    },
    /// Stored data could not be read back: a sealed segment is damaged.
    #[error("corrupt segment {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte position of the damaged batch.
        position: u64,
        /// The base offset the damaged batch's header gives, when the header
        /// itself reads.
        offset: Option<u64>,
        /// Description of the damage.
        reason: String,
    },
    /// Another `PartitionLog`, in this or another process, has the directory
    /// open.
    #[error(
        "partition directory {} is in use by another open log (another ferry process on this data directory?)",
        dir.display()
    )]
    Locked {
        /// Partition directory.
        dir: PathBuf,
    },
    /// The log was closed and accepts no more writes.
    #[error("partition log {} is closed", dir.display())]
    Closed {
        /// Partition directory.
        dir: PathBuf,
    },
    /// A `LogConfig` value is out of range.
    #[error("invalid log config: {reason}")]
    InvalidConfig {
        /// Name of the value and its allowed range.
        reason: String,
    },
}

/// Rule for when the broker makes appended data durable. The log applies no
/// policy itself. The broker calls [`PartitionLog::flush_to`] when the policy
/// requires a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Sync before acknowledging each produce request.
    Always,
    /// Sync in the background at this interval. A crash can lose the
    /// acknowledged records of the last interval.
    Interval(Duration),
    /// Leave writeback to the operating system.
    Never,
}

/// Settings of one partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Size in bytes at which the active segment is rolled, and the length
    /// of address space its map reserves. Disk space is allocated in steps
    /// as data arrives. From 61 (one empty batch header) to 4 GiB - 1.
    pub segment_bytes: u64,
    /// Minimum bytes written between two offset index entries.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), LogError> {
        let min = batch::HEADER_LEN as u64;
        let max = u64::from(u32::MAX);
        if !(min..=max).contains(&self.segment_bytes) {
            return Err(LogError::InvalidConfig {
                reason: format!(
                    "segment_bytes is {}, must be from {min} to {max}",
                    self.segment_bytes
                ),
            });
        }
        Ok(())
    }
}
