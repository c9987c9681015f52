//! Reads of `PartitionLog`: whole batches from the segment that contains an
//! offset onwards, decoded or as stored.

use bytes::Bytes;

use super::PartitionLog;
use crate::log::batch::{decode_batch, decode_header, RecordBatch};
use crate::log::segment::Segment;
use crate::log::LogError;

impl PartitionLog {
    /// Reads whole batches, starting with the one that contains `offset`.
    ///
    /// Stops before the first batch whose base offset is at or above
    /// `max_offset`, and before a batch that would take the total past
    /// `max_bytes`. The first batch is returned whatever its size. Reading at
    /// the log end offset returns no batches.
    ///
    /// # Errors
    ///
    /// `OffsetOutOfRange` when `offset` is below the log start offset or
    /// above the log end offset, and `Corrupt` when a stored batch fails its
    /// CRC or does not decode.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        self.collect_batches(offset, max_bytes, max_offset, |segment, position, bytes| {
            decode_batch(bytes).map_err(|reason| LogError::Corrupt {
                path: segment.files().log_path.clone(),
                position: position as u64,
                offset: decode_header(bytes).ok().map(|header| header.base_offset),
                reason: reason.to_string(),
            })
        })
    }

    /// Reads like [`read`](Self::read) but returns the encoded batches. The
    /// CRC is not checked here. `append_batch` checks it on the receiving
    /// side.
    pub fn read_raw(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<Vec<Bytes>, LogError> {
        self.collect_batches(offset, max_bytes, max_offset, |_, _, bytes| {
            Ok(Bytes::copy_from_slice(bytes))
        })
    }

    /// Calls `convert` on each batch that `read` returns.
    fn collect_batches<T>(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
        mut convert: impl FnMut(&Segment, usize, &[u8]) -> Result<T, LogError>,
    ) -> Result<Vec<T>, LogError> {
        // The lock keeps truncation out while bytes are copied from the maps.
        let segments = self.read_segments();
        let log_end_offset = self.log_end_offset();
        // The list is empty only after a failed truncation.
        let log_start_offset = segments.first().map_or(log_end_offset, |s| s.base_offset());
        if offset < log_start_offset || offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }

        let mut batches = Vec::new();
        let mut total_bytes = 0;
        let first = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        for (i, segment) in segments.iter().skip(first).enumerate() {
            let mut position = if i == 0 {
                match segment.find_batch(offset)? {
                    Some(position) => position,
                    None => continue,
                }
            } else {
                0
            };
            let bytes = segment.bytes();
            while let Some(header) = segment.header_at(bytes, position)? {
                let len = header.total_len();
                if header.base_offset >= max_offset {
                    return Ok(batches);
                }
                if !batches.is_empty() && total_bytes + len > max_bytes {
                    return Ok(batches);
                }
                match convert(segment, position, &bytes[position..position + len]) {
                    Ok(batch) => batches.push(batch),
                    // The good batches before a damaged one are served; the
                    // next read starts at the damage and gets the error.
                    Err(_) if !batches.is_empty() => return Ok(batches),
                    Err(err) => return Err(err),
                }
                total_bytes += len;
                position += len;
                if total_bytes >= max_bytes {
                    return Ok(batches);
                }
            }
        }
        Ok(batches)
    }
}
