//! Lookups by time: the first offset whose record timestamp is at or after
//! a given time.
//!
//! Timestamps need not grow with offsets (a producer's clock may step
//! back), so a batch is judged by its `max_timestamp`. Every record before
//! the first batch whose `max_timestamp` reaches the time is older. The
//! result is the first record of that batch that reaches it. Sealed
//! segments are skipped by their newest timestamp, computed once from their
//! batch headers and kept, because they no longer change; the active
//! segment and the one segment that contains the answer are scanned header
//! by header.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::PartitionLog;
use crate::log::batch::decode_batch;
use crate::log::segment::Segment;
use crate::log::LogError;

/// The newest timestamp of each sealed segment, by base offset.
#[derive(Debug, Default)]
pub(crate) struct NewestTimestamps(Mutex<HashMap<u64, i64>>);

/// The result of a lookup by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLookup {
    /// The first offset whose timestamp is at or after the time.
    pub offset: u64,
    /// That record's timestamp.
    pub timestamp_ms: i64,
}

impl PartitionLog {
    /// Returns the first record below `max_offset` whose timestamp is at or
    /// after `timestamp_ms`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// `Corrupt` when the batch that contains the result does not decode.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
        max_offset: u64,
    ) -> Result<Option<TimeLookup>, LogError> {
        let segments = self.read_segments().clone();
        let last = segments.len().saturating_sub(1);
        for (index, segment) in segments.iter().enumerate() {
            if segment.base_offset() >= max_offset {
                break;
            }
            if index < last && self.newest.newest(segment)? < timestamp_ms {
                continue;
            }
            if let Some(found) = find_in_segment(segment, timestamp_ms, max_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

impl NewestTimestamps {
    /// Returns the newest timestamp in sealed `segment`, computed on first
    /// use.
    fn newest(&self, segment: &Segment) -> Result<i64, LogError> {
        let base_offset = segment.base_offset();
        if let Some(&newest) = self.lock().get(&base_offset) {
            return Ok(newest);
        }
        let newest = newest_timestamp(segment)?;
        self.lock().insert(base_offset, newest);
        Ok(newest)
    }

    /// Forgets every segment, after segments were cut or deleted.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, i64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returns the largest record timestamp in `segment`, from its batch
/// headers.
pub(crate) fn newest_timestamp(segment: &Segment) -> Result<i64, LogError> {
    let bytes = segment.bytes();
    let mut position = 0;
    let mut newest = i64::MIN;
    while let Some(header) = segment.header_at(bytes, position)? {
        newest = newest.max(header.max_timestamp);
        position += header.total_len();
    }
    Ok(newest)
}

fn find_in_segment(
    segment: &Segment,
    timestamp_ms: i64,
    max_offset: u64,
) -> Result<Option<TimeLookup>, LogError> {
    let bytes = segment.bytes();
    let mut position = 0;
    while let Some(header) = segment.header_at(bytes, position)? {
        if header.base_offset >= max_offset {
            return Ok(None);
        }
        let end = position + header.total_len();
        if header.max_timestamp >= timestamp_ms {
            let batch =
                decode_batch(&bytes[position..end]).map_err(|reason| LogError::Corrupt {
                    path: segment.files().log_path.clone(),
                    position: position as u64,
                    offset: Some(header.base_offset),
                    reason: reason.to_string(),
                })?;
            let found = batch
                .records
                .iter()
                .find(|record| record.timestamp_ms >= timestamp_ms && record.offset < max_offset);
            if let Some(record) = found {
                return Ok(Some(TimeLookup {
                    offset: record.offset,
                    timestamp_ms: record.timestamp_ms,
                }));
            }
        }
        position = end;
    }
    Ok(None)
}
