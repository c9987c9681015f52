//! Recovery checkpoints: where the durable, validated prefix of a partition
//! ends, and the writer state (leader epochs and idempotent producers) at
//! that point, so that `open` scans only what follows it.
//!
//! The file `recovery-checkpoint` in the partition directory holds, in
//! big-endian order:
//!
//! ```text
//! magic "FRC1" (4 bytes)
//! segment_base u64      base offset of the segment the checkpoint is in
//! position u64          end of the last batch covered, in that segment
//! next_offset u64       offset after that batch
//! newest_timestamp i64  newest record timestamp in that segment up to there
//! epoch_count u32, then (epoch u32, start_offset u64) per leader epoch
//! producer_count u32, then per producer:
//!   producer_id i64, batch_count u8,
//!   then (first_sequence i32, last_sequence i32, base_offset u64) per batch
//! crc u32               CRC-32 (IEEE) of every byte before it
//! ```
//!
//! It is written to `recovery-checkpoint.tmp`, synced and renamed over the
//! old one, so a crash leaves the old or the new file whole. Every byte it
//! covers was synced before it was written. A checkpoint that fails its CRC,
//! names a segment that is gone, or does not end at a batch boundary with
//! its `next_offset` is ignored, and `open` falls back to a full scan.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{MutexGuard, PoisonError};

use tracing::warn;

use super::epochs::EpochHistory;
use super::producers::{ProducerBatch, ProducerTable};
use super::PartitionLog;
use crate::log::files::{io_error, sync_dir};
use crate::log::reader::SegmentFiles;
use crate::log::segment::Resume;
use crate::log::LogError;

/// Name of the checkpoint file in a partition directory.
pub const CHECKPOINT_FILE_NAME: &str = "recovery-checkpoint";

const MAGIC: &[u8; 4] = b"FRC1";

/// A decoded recovery checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) segment_base: u64,
    pub(crate) position: u64,
    pub(crate) next_offset: u64,
    /// Newest record timestamp of the segment's batches below `position`,
    /// or `i64::MIN`. The time index of the active segment starts from it.
    pub(crate) newest_timestamp: i64,
    pub(crate) epochs: EpochHistory,
    pub(crate) producers: ProducerTable,
}

impl Checkpoint {
    /// Returns where the recovery of the active segment `active` may resume,
    /// when the checkpoint is in that segment.
    pub(crate) fn resume_in(&self, active: &SegmentFiles) -> Option<Resume> {
        (self.segment_base == active.base_offset).then(|| Resume {
            position: self.position as usize,
            next_offset: self.next_offset,
            last_leader_epoch: self.epochs.latest(),
            newest_timestamp: self.newest_timestamp,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.segment_base.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.next_offset.to_be_bytes());
        out.extend_from_slice(&self.newest_timestamp.to_be_bytes());
        let starts = self.epochs.starts();
        out.extend_from_slice(&(starts.len() as u32).to_be_bytes());
        for (epoch, start) in starts {
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&start.to_be_bytes());
        }
        let producers = self.producers.entries();
        out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
        for (producer_id, batches) in producers {
            out.extend_from_slice(&producer_id.to_be_bytes());
            out.push(batches.len() as u8);
            for batch in batches {
                out.extend_from_slice(&batch.first_sequence.to_be_bytes());
                out.extend_from_slice(&batch.last_sequence.to_be_bytes());
                out.extend_from_slice(&batch.base_offset.to_be_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err("file is shorter than its CRC".into());
        };
        if crc32fast::hash(body) != u32::from_be_bytes(*crc) {
            return Err("CRC mismatch".into());
        }
        let mut reader = Reader(body);
        if reader.take(4)? != MAGIC {
            return Err("unknown magic".into());
        }
        let segment_base = reader.u64()?;
        let position = reader.u64()?;
        let next_offset = reader.u64()?;
        let newest_timestamp = reader.u64()? as i64;
        let mut starts = Vec::new();
        for _ in 0..reader.u32()? {
            starts.push((reader.u32()?, reader.u64()?));
        }
        let mut producers = Vec::new();
        for _ in 0..reader.u32()? {
            let producer_id = reader.u64()? as i64;
            let mut batches = Vec::new();
            for _ in 0..reader.take(1)?[0] {
                batches.push(ProducerBatch {
                    first_sequence: reader.u32()? as i32,
                    last_sequence: reader.u32()? as i32,
                    base_offset: reader.u64()?,
                });
            }
            producers.push((producer_id, batches));
        }
        if !reader.0.is_empty() {
            return Err("bytes follow the last producer".into());
        }
        Ok(Checkpoint {
            segment_base,
            position,
            next_offset,
            newest_timestamp,
            epochs: EpochHistory::from_starts(&starts),
            producers: ProducerTable::from_entries(producers),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("file ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }
}

impl PartitionLog {
    /// Writes a recovery checkpoint at the log end offset of this moment,
    /// after making everything below it durable, unless the last checkpoint
    /// is there already. The writer is blocked only while its state is
    /// copied. Returns whether a checkpoint was written.
    ///
    /// The broker calls this in the background, and `close` calls it. With
    /// `fsync = never` the broker does not, as the flush would change that
    /// policy.
    ///
    /// # Errors
    ///
    /// `Io`, `DiskFull`. The old checkpoint stays valid on error.
    pub fn write_checkpoint(&self) -> Result<bool, LogError> {
        let mut last = self.lock_checkpoint();
        let (checkpoint, segment) = {
            let writer = self.lock_writer();
            let segment = self.active_segment()?;
            let checkpoint = Checkpoint {
                segment_base: segment.base_offset(),
                position: segment.size() as u64,
                next_offset: segment.next_offset(),
                newest_timestamp: segment.newest_timestamp(),
                epochs: writer.epochs.clone(),
                producers: writer.producers.clone(),
            };
            (checkpoint, segment)
        };
        let place = (checkpoint.segment_base, checkpoint.position);
        if *last == Some(place) {
            return Ok(false);
        }
        self.flush_to(checkpoint.next_offset)?;
        segment.sync_index()?;
        write(&self.dir, &checkpoint)?;
        *last = Some(place);
        Ok(true)
    }

    /// Deletes the recovery checkpoint before a change that would make it
    /// wrong. The caller holds the guard of [`lock_checkpoint`](Self::lock_checkpoint).
    pub(crate) fn forget_checkpoint(
        &self,
        last: &mut MutexGuard<'_, Option<(u64, u64)>>,
    ) -> Result<(), LogError> {
        remove(&self.dir)?;
        **last = None;
        Ok(())
    }

    /// Locks the checkpoint state: the place of the last checkpoint written.
    /// Taken before the writer lock.
    pub(crate) fn lock_checkpoint(&self) -> MutexGuard<'_, Option<(u64, u64)>> {
        self.checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the checkpoint of `dir`, or `None` when there is none or it cannot
/// be used (with a warning).
pub(crate) fn read(dir: &Path) -> Option<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            warn!(file = %path.display(), error = %err, "cannot read the recovery checkpoint; scanning the whole log");
            return None;
        }
    };
    match Checkpoint::decode(&bytes) {
        Ok(checkpoint) => Some(checkpoint),
        Err(reason) => {
            warn!(file = %path.display(), %reason, "ignoring an invalid recovery checkpoint; scanning the whole log");
            None
        }
    }
}

/// Replaces the checkpoint of `dir` with `checkpoint`, durably.
pub(crate) fn write(dir: &Path, checkpoint: &Checkpoint) -> Result<(), LogError> {
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let temporary = temporary_path(dir);
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(&checkpoint.encode())
        .map_err(io_error(&temporary))?;
    file.sync_data().map_err(io_error(&temporary))?;
    fs::rename(&temporary, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

/// Deletes the checkpoint of `dir`, durably, before a change that would
/// make it wrong (truncation, or a rewrite of its segment).
pub(crate) fn remove(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(CHECKPOINT_FILE_NAME);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(LogError::Io { path, source: err }),
    }
}

fn temporary_path(dir: &Path) -> PathBuf {
    dir.join(format!("{CHECKPOINT_FILE_NAME}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::BatchHeader;

    fn producer_header(producer_id: i64, base_sequence: i32, base_offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            leader_epoch: 0,
            magic: 1,
            crc: 0,
            attributes: 0,
            last_offset_delta: 2,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: 0,
            base_sequence,
            record_count: 3,
        }
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let mut producers = ProducerTable::default();
        producers.record(&producer_header(7, 0, 10));
        producers.record(&producer_header(7, 3, 20));
        producers.record(&producer_header(-5, 0, 30));
        let checkpoint = Checkpoint {
            segment_base: 100,
            position: 4096,
            next_offset: 180,
            newest_timestamp: 1_700_000_000_000,
            epochs: EpochHistory::from_starts(&[(0, 0), (3, 150)]),
            producers,
        };
        let bytes = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&bytes).unwrap(), checkpoint);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(Checkpoint::decode(&damaged).is_err(), "flip at {at}");
        }
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Checkpoint::decode(&[]).is_err());
    }
}
