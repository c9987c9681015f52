//! Lookups by time: the first offset whose record timestamp is at or after
//! a given time.
//!
//! Timestamps need not grow with offsets (a producer's clock may step
//! back), so a segment is skipped when its newest timestamp is below the
//! time, and the search in a segment starts where its time index says every
//! record before is older (see `time_index.rs`). From there it walks batch
//! headers: every record before the first batch whose `max_timestamp`
//! reaches the time is older, and the result is the first record of that
//! batch that reaches it.

use super::PartitionLog;
use crate::log::batch::{decode_batch, validate_batch};
use crate::log::segment::Segment;
use crate::log::LogError;

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
        for segment in &segments {
            if segment.base_offset() >= max_offset {
                break;
            }
            if segment.newest_timestamp() < timestamp_ms {
                continue;
            }
            if let Some(found) = find_in_segment(segment, timestamp_ms, max_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

fn find_in_segment(
    segment: &Segment,
    timestamp_ms: i64,
    max_offset: u64,
) -> Result<Option<TimeLookup>, LogError> {
    let start = segment.time_search_start(timestamp_ms);
    let Some(mut position) = segment.find_batch(start)? else {
        return Ok(None);
    };
    let bytes = segment.bytes();
    while let Some(header) = segment.header_at(bytes, position)? {
        if header.base_offset >= max_offset {
            return Ok(None);
        }
        let end = position + header.total_len();
        let corrupt = |reason: String| LogError::Corrupt {
            path: segment.files().log_path.clone(),
            position: position as u64,
            offset: Some(header.base_offset),
            reason,
        };
        // The walk trusts `max_timestamp` only after the CRC, which covers
        // it, matched, so a damaged header cannot move the result. The walk
        // starts about one index interval before the result.
        validate_batch(&bytes[position..end]).map_err(|err| corrupt(err.to_string()))?;
        if header.max_timestamp >= timestamp_ms {
            let batch =
                decode_batch(&bytes[position..end]).map_err(|err| corrupt(err.to_string()))?;
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
