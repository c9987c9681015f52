//! Truncation of `PartitionLog`, which replication uses to cut a follower's
//! log back to the point where it matches the leader's.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tracing::{error, info};

use super::fold::Fold;
use super::PartitionLog;
use crate::log::files::{remove_segment_files, sync_dir};
use crate::log::segment::Segment;
use crate::log::LogError;

impl PartitionLog {
    /// Removes every record at or above `offset`, in whole batches: an
    /// offset inside a batch truncates at that batch's base offset. Segments
    /// above it are deleted. An offset at or above the log end offset
    /// changes nothing. The truncation is synced before this returns.
    ///
    /// # Errors
    ///
    /// `OffsetOutOfRange` when `offset` is below the log start offset,
    /// `Closed`, and `Io`. After an I/O error while files are being cut, the
    /// log refuses writes until it is reopened, and reopening recovers it.
    pub fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        let mut checkpoint = self.lock_checkpoint();
        let mut writer = self.lock_writer();
        if writer.closed {
            return Err(self.closed_error());
        }
        if offset < self.log_end_offset() {
            self.forget_checkpoint(&mut checkpoint)?;
        }
        let _flush = self
            .flush_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);

        let log_end_offset = self.log_end_offset();
        let log_start_offset = segments.first().map_or(0, |s| s.base_offset());
        if offset >= log_end_offset {
            return Ok(());
        }
        if offset < log_start_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }

        let keep = segments.partition_point(|s| s.base_offset() <= offset) - 1;
        let segment = &segments[keep];
        let (position, new_end_offset) = match segment.find_batch(offset)? {
            Some(position) => {
                let header = segment.header_at(segment.bytes(), position)?;
                (position, header.map_or(offset, |h| h.base_offset))
            }
            None => (segment.size(), segment.next_offset()),
        };

        let result = self.cut_segments(&mut segments, keep, position, new_end_offset);
        let end_offset = match &result {
            Ok(_) => new_end_offset,
            Err(err) => {
                // The segment list may have lost segments, so writing on would
                // build on a state the files do not have. Reopening recovers
                // from the files.
                error!(
                    dir = %self.dir.display(),
                    offset,
                    %err,
                    "truncation failed, refusing writes until the log is reopened"
                );
                writer.closed = true;
                segments.last().map_or(new_end_offset, |s| s.next_offset())
            }
        };
        writer.latest_leader_epoch = segments
            .iter()
            .rev()
            .find_map(|s| s.last_header())
            .map_or(0, |h| h.leader_epoch);
        writer.epochs.truncate(end_offset);
        match Fold::default().run(&segments) {
            Ok((_, producers)) => writer.producers = producers,
            // Only a corrupt header fails the walk, and the log refuses
            // writes until it is reopened, which rebuilds the table.
            Err(_) => writer.closed = true,
        }
        self.log_end_offset.store(end_offset, Ordering::Release);
        self.flushed_offset.fetch_min(end_offset, Ordering::AcqRel);
        let removed_segments = result?;

        info!(
            dir = %self.dir.display(),
            offset,
            log_end_offset = end_offset,
            removed_segments,
            "truncated partition log"
        );
        Ok(())
    }

    /// Deletes the segments after `keep`, cuts segment `keep` at `position`
    /// and reopens it as the active segment. Returns the number of segments
    /// deleted.
    fn cut_segments(
        &self,
        segments: &mut Vec<Arc<Segment>>,
        keep: usize,
        position: usize,
        next_offset: u64,
    ) -> Result<usize, LogError> {
        // Delete the highest segments first, so that a crash in between
        // leaves a log without holes.
        let mut removed = 0;
        while segments.len() > keep + 1 {
            let Some(segment) = segments.pop() else {
                break;
            };
            let files = segment.files().clone();
            drop(segment);
            remove_segment_files(&files)?;
            removed += 1;
        }

        // The old value is dropped before its file is cut, because a map over
        // cut pages raises SIGBUS when touched.
        let Some(old) = segments.pop() else {
            return Ok(removed);
        };
        let files = old.files().clone();
        let entries = old.index_entries();
        drop(old);
        let reopened = Segment::reopen_truncated(
            files.clone(),
            position,
            next_offset,
            entries,
            self.config.segment_bytes,
            self.config.index_interval_bytes,
        );
        match reopened {
            Ok(active) => segments.push(Arc::new(active)),
            Err(err) => {
                // Keep the segment readable at whatever length it has now.
                if let Ok(sealed) = Segment::open_sealed(files, self.config.index_interval_bytes) {
                    segments.push(Arc::new(sealed));
                }
                return Err(err);
            }
        }
        sync_dir(&self.dir)?;
        Ok(removed)
    }
}

pub(super) fn remove_file(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(LogError::Io {
            path: path.to_path_buf(),
            source: err,
        }),
    }
}
