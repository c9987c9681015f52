//! Forward scans over the batches of a segment held in memory.
//!
//! Recovery validates every batch of the active segment with
//! [`scan_batches`]. Lookups, and the opening of sealed segments (which are
//! trusted), walk headers with [`header_at`] without checking CRCs. Both stop
//! at the end of data as defined in `reader.rs`: the end of the bytes, or a
//! zero `batch_length`. See `docs/storage-format.md`.

use super::batch::{decode_batch, decode_header, BatchHeader, LENGTH_PREFIX_LEN};
use super::index::OffsetIndex;
use super::reader::{classify_frame, Frame};
use super::time_index::TimeIndex;

/// Result of scanning the batches of a segment from byte 0.
pub(crate) struct Scan {
    pub(crate) valid_size: usize,
    pub(crate) next_offset: u64,
    pub(crate) last_leader_epoch: Option<u32>,
    pub(crate) index: OffsetIndex,
    pub(crate) times: TimeIndex,
    pub(crate) invalid_reason: Option<String>,
}

/// Scans batches from byte 0 and stops at the zero tail or at the first
/// batch that fails the checks listed on `Segment::recover`.
pub(crate) fn scan_batches(
    bytes: &[u8],
    base_offset: u64,
    min_leader_epoch: u32,
    index_interval_bytes: u32,
) -> Scan {
    let start = Scan {
        valid_size: 0,
        next_offset: base_offset,
        last_leader_epoch: None,
        index: OffsetIndex::default(),
        times: TimeIndex::default(),
        invalid_reason: None,
    };
    scan_batches_from(
        bytes,
        base_offset,
        min_leader_epoch,
        index_interval_bytes,
        start,
    )
}

/// Scans like [`scan_batches`], but trusts the prefix that `start`
/// describes (its `valid_size`, `next_offset`, leader epoch and indexes)
/// and goes on from its end.
pub(crate) fn scan_batches_from(
    bytes: &[u8],
    base_offset: u64,
    min_leader_epoch: u32,
    index_interval_bytes: u32,
    start: Scan,
) -> Scan {
    let mut scan = start;
    let mut position = scan.valid_size;
    loop {
        match check_batch(bytes, position, &scan, base_offset, min_leader_epoch) {
            Ok(None) => return scan,
            Err(reason) => {
                scan.invalid_reason = Some(reason);
                return scan;
            }
            Ok(Some(header)) => {
                // `check_batch` has checked that the relative offset fits.
                let relative = (header.base_offset - base_offset) as u32;
                let indexed = scan
                    .index
                    .maybe_append(relative, position as u32, index_interval_bytes)
                    .is_some();
                scan.times
                    .add_batch(relative, indexed, header.max_timestamp);
                position += header.total_len();
                scan.valid_size = position;
                scan.next_offset = header.next_offset();
                scan.last_leader_epoch = Some(header.leader_epoch);
            }
        }
    }
}

fn check_batch(
    bytes: &[u8],
    position: usize,
    scan: &Scan,
    base_offset: u64,
    min_leader_epoch: u32,
) -> Result<Option<BatchHeader>, String> {
    let remaining = bytes.len() - position;
    let prefix = &bytes[position..position + remaining.min(LENGTH_PREFIX_LEN)];
    let len = match classify_frame(prefix, remaining as u64) {
        Frame::End => return Ok(None),
        Frame::Invalid(reason) => return Err(reason.to_string()),
        Frame::Batch { len } => len as usize,
    };

    // Records are decoded too: a batch whose CRC matches but whose records
    // do not decode could never be read, so recovery cuts it like a torn one.
    let header = decode_batch(&bytes[position..position + len])
        .map_err(|e| e.to_string())?
        .header;
    header.check_follows(scan.next_offset)?;
    if u32::try_from(header.base_offset - base_offset).is_err() {
        return Err("base offset is more than 2^32 above the segment base offset".into());
    }
    let min_epoch = scan.last_leader_epoch.unwrap_or(min_leader_epoch);
    if header.leader_epoch < min_epoch {
        return Err(format!(
            "leader epoch {} is below the previous epoch {min_epoch}",
            header.leader_epoch
        ));
    }
    Ok(Some(header))
}

/// Decodes the header at `position` without checking the CRC. Returns
/// `None` at the end of data, or the reason the bytes are not a batch.
pub(crate) fn header_at(bytes: &[u8], position: usize) -> Result<Option<BatchHeader>, String> {
    let remaining = bytes.len().saturating_sub(position);
    let prefix = &bytes[position.min(bytes.len())..][..remaining.min(LENGTH_PREFIX_LEN)];
    match classify_frame(prefix, remaining as u64) {
        Frame::End => Ok(None),
        Frame::Invalid(reason) => Err(reason.to_string()),
        Frame::Batch { .. } => decode_header(&bytes[position..])
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// Builds the time index of the batches in `bytes`, which start at byte 0
/// and end at a batch boundary, with entries at the batches that the offset
/// index `offsets` has entries for. Walks headers without checking CRCs.
pub(crate) fn build_time_index(bytes: &[u8], base_offset: u64, offsets: &OffsetIndex) -> TimeIndex {
    let mut times = TimeIndex::default();
    let mut indexed = offsets.entries().iter().peekable();
    let mut position = 0;
    while let Ok(Some(header)) = header_at(bytes, position) {
        while indexed
            .next_if(|e| (e.position as usize) < position)
            .is_some()
        {}
        let is_indexed = indexed
            .next_if(|e| e.position as usize == position)
            .is_some();
        let relative = header.base_offset.checked_sub(base_offset);
        if let Some(Ok(relative)) = relative.map(u32::try_from) {
            times.add_batch(relative, is_indexed, header.max_timestamp);
        }
        position += header.total_len();
    }
    times
}

/// Walks headers from `start`, which must be a batch boundary, and returns
/// the last one before the end of data or the first unreadable batch.
pub(crate) fn last_header_from(bytes: &[u8], start: usize) -> Option<BatchHeader> {
    let mut position = start;
    let mut last = None;
    while let Ok(Some(header)) = header_at(bytes, position) {
        position += header.total_len();
        last = Some(header);
    }
    last
}

/// Returns whether a batch of `bytes` ends exactly at `position` and is
/// followed by `next_offset` (for position 0: whether `next_offset` is the
/// segment's base offset). Walks headers from the index entry at or below
/// the batch, so the cost is about one index interval.
pub(crate) fn batch_ends_at(
    bytes: &[u8],
    base_offset: u64,
    index: &OffsetIndex,
    position: usize,
    next_offset: u64,
) -> bool {
    if position == 0 {
        return next_offset == base_offset;
    }
    if position > bytes.len() || next_offset <= base_offset {
        return false;
    }
    let Ok(relative) = u32::try_from(next_offset - 1 - base_offset) else {
        return false;
    };
    let prefix = &bytes[..position];
    let mut at = index.lookup(relative) as usize;
    while at < position {
        match header_at(prefix, at) {
            Ok(Some(header)) => {
                at += header.total_len();
                if at == position {
                    return header.next_offset() == next_offset;
                }
            }
            _ => return false,
        }
    }
    false
}
