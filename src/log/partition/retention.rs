//! Retention: deleting a partition's oldest sealed segments by age or by
//! size, which advances the log start offset.
//!
//! Only whole sealed segments below a given offset (the high watermark) are
//! deleted, the oldest first, so the log never has a hole. The segment list
//! is changed under the locks for a moment only, and the files are unlinked
//! after. Readers that still have a deleted segment keep reading its memory
//! map until they drop it.

use std::sync::{Arc, PoisonError};

use tracing::info;

use super::PartitionLog;
use crate::log::files::{remove_segment_files, sync_dir};
use crate::log::segment::Segment;
use crate::log::LogError;

/// The retention limits of a partition; `None` keeps data forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// A sealed segment whose newest record is older than this, in ms, is
    /// deleted.
    pub max_age_ms: Option<u64>,
    /// While the partition is larger than this without its oldest sealed
    /// segment, that segment is deleted.
    pub max_bytes: Option<u64>,
}

/// The result of one retention pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes of batches deleted.
    pub bytes: u64,
    /// The log start offset afterwards.
    pub log_start_offset: u64,
}

impl PartitionLog {
    /// Deletes the oldest sealed segments that `retention` no longer keeps
    /// at `now_ms`, never one that contains an offset at or above `keep_from`.
    /// The active segment is never deleted.
    ///
    /// # Errors
    ///
    /// `Io` when a file cannot be removed. The segments removed from the
    /// list before it stay removed, and a restart finds and deletes the
    /// leftover files again.
    pub fn apply_retention(
        &self,
        retention: Retention,
        now_ms: i64,
        keep_from: u64,
    ) -> Result<RetentionOutcome, LogError> {
        if retention == Retention::default() {
            return Ok(RetentionOutcome {
                log_start_offset: self.log_start_offset(),
                ..RetentionOutcome::default()
            });
        }
        let removed = {
            let _writer = self.lock_writer();
            let mut segments = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let count = deletable(&segments, retention, now_ms, keep_from)?;
            segments.drain(..count).collect::<Vec<Arc<Segment>>>()
        };
        let mut outcome = RetentionOutcome {
            log_start_offset: self.log_start_offset(),
            ..RetentionOutcome::default()
        };
        if removed.is_empty() {
            return Ok(outcome);
        }
        for segment in removed {
            let files = segment.files().clone();
            outcome.bytes += segment.size() as u64;
            outcome.segments += 1;
            drop(segment);
            remove_segment_files(&files)?;
        }
        sync_dir(&self.dir)?;
        info!(
            dir = %self.dir.display(),
            segments = outcome.segments,
            bytes = outcome.bytes,
            log_start_offset = outcome.log_start_offset,
            "retention deleted old segments"
        );
        Ok(outcome)
    }
}

/// Counts the leading segments that retention deletes.
fn deletable(
    segments: &[Arc<Segment>],
    retention: Retention,
    now_ms: i64,
    keep_from: u64,
) -> Result<usize, LogError> {
    let mut total: u64 = segments.iter().map(|s| s.size() as u64).sum();
    let mut count = 0;
    // The last segment is the active one.
    for segment in &segments[..segments.len().saturating_sub(1)] {
        if segment.next_offset() > keep_from {
            break;
        }
        let too_large = retention
            .max_bytes
            .is_some_and(|max| total.saturating_sub(segment.size() as u64) >= max);
        let too_old = match retention.max_age_ms {
            Some(max_age_ms) => {
                let newest = segment.newest_timestamp();
                now_ms.saturating_sub(newest) > max_age_ms.min(i64::MAX as u64) as i64
            }
            None => false,
        };
        if !too_large && !too_old {
            break;
        }
        total -= segment.size() as u64;
        count += 1;
    }
    Ok(count)
}
