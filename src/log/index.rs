//! Sparse offset index of one segment.
//!
//! The `.index` file next to each `.log` file is a flat array of 8-byte
//! entries: the batch's base offset minus the segment's base offset (`u32`,
//! big-endian), then the byte position of that batch in the `.log` file
//! (`u32`, big-endian). Both columns rise strictly. The log adds an entry for
//! a batch when at least `index_interval_bytes` were written since the batch
//! of the previous entry, or since the start of the segment. The first batch
//! of a segment therefore usually has no entry, and a lookup that finds no
//! entry at or below its target starts at position 0.
//!
//! The index carries no checksum. Recovery rebuilds the active segment's index
//! from a scan of its batches, and rebuilds a sealed segment's index when the
//! file fails [`validate_entries`]. See `docs/storage-format.md`.

use thiserror::Error;

/// Size of one index entry in bytes.
pub const INDEX_ENTRY_LEN: usize = 8;

/// One index entry: where the batch with a given base offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment's `.log` file.
    pub position: u32,
}

/// Error from decoding or validating an index file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexError {
    /// The file length is not a multiple of the entry size.
    #[error("index length {len} is not a multiple of {INDEX_ENTRY_LEN}")]
    InvalidLength {
        /// File length in bytes.
        len: usize,
    },
    /// An entry does not rise strictly above the previous one in both columns.
    #[error("index entry {entry} is not above the previous entry")]
    NotIncreasing {
        /// Position of the entry in the file, from 0.
        entry: usize,
    },
    /// An entry points at or beyond the end of the segment's data.
    #[error("index entry {entry} points at byte {position}, past the segment end {segment_len}")]
    PastEnd {
        /// Position of the entry in the file, from 0.
        entry: usize,
        /// Byte position stored in the entry.
        position: u32,
        /// Length of the segment's data in bytes.
        segment_len: usize,
    },
}

/// In-memory offset index of one segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct OffsetIndex {
    entries: Vec<IndexEntry>,
    /// Position of the batch of the last entry, or 0 when there is none.
    last_indexed_position: u32,
}

impl OffsetIndex {
    /// Builds an index from entries that passed [`validate_entries`].
    pub(crate) fn from_entries(entries: Vec<IndexEntry>) -> OffsetIndex {
        let last_indexed_position = entries.last().map_or(0, |e| e.position);
        OffsetIndex {
            entries,
            last_indexed_position,
        }
    }

    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Returns the position of the batch of the greatest entry whose relative
    /// offset is at or below `relative_offset`, or 0 when there is none.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let above = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        match above {
            0 => 0,
            n => self.entries[n - 1].position,
        }
    }

    /// Adds an entry for the batch at `position` when at least
    /// `interval_bytes` were written since the previous entry's batch, and
    /// returns the entry it added.
    pub(crate) fn maybe_append(
        &mut self,
        relative_offset: u32,
        position: u32,
        interval_bytes: u32,
    ) -> Option<IndexEntry> {
        if position - self.last_indexed_position < interval_bytes {
            return None;
        }
        if let Some(last) = self.entries.last() {
            if last.relative_offset >= relative_offset || last.position >= position {
                return None;
            }
        }
        let entry = IndexEntry {
            relative_offset,
            position,
        };
        self.entries.push(entry);
        self.last_indexed_position = position;
        Some(entry)
    }
}

/// Encodes entries in the `.index` file layout.
pub fn encode_entries(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
    for entry in entries {
        out.extend_from_slice(&encode_entry(entry));
    }
    out
}

pub(crate) fn encode_entry(entry: &IndexEntry) -> [u8; INDEX_ENTRY_LEN] {
    let mut out = [0; INDEX_ENTRY_LEN];
    out[..4].copy_from_slice(&entry.relative_offset.to_be_bytes());
    out[4..].copy_from_slice(&entry.position.to_be_bytes());
    out
}

/// Decodes the contents of an `.index` file. Checks only the length; use
/// [`validate_entries`] to check the entries against their segment.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<IndexEntry>, IndexError> {
    if !bytes.len().is_multiple_of(INDEX_ENTRY_LEN) {
        return Err(IndexError::InvalidLength { len: bytes.len() });
    }
    let entries = bytes
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|chunk| IndexEntry {
            relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        })
        .collect();
    Ok(entries)
}

/// Checks that both columns rise strictly and that every position lies
/// inside the first `segment_len` bytes of the segment.
///
/// It does not check that each position is the start of the batch with that
/// offset. `ferry-log verify` does, by reading the batches.
pub fn validate_entries(entries: &[IndexEntry], segment_len: usize) -> Result<(), IndexError> {
    for (i, entry) in entries.iter().enumerate() {
        if entry.position as usize >= segment_len {
            return Err(IndexError::PastEnd {
                entry: i,
                position: entry.position,
                segment_len,
            });
        }
        if i > 0 {
            let previous = entries[i - 1];
            if entry.relative_offset <= previous.relative_offset
                || entry.position <= previous.position
            {
                return Err(IndexError::NotIncreasing { entry: i });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(relative_offset: u32, position: u32) -> IndexEntry {
        IndexEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn lookup_returns_greatest_entry_at_or_below() {
        let index = OffsetIndex::from_entries(vec![entry(10, 100), entry(20, 200)]);
        assert_eq!(index.lookup(0), 0);
        assert_eq!(index.lookup(9), 0);
        assert_eq!(index.lookup(10), 100);
        assert_eq!(index.lookup(19), 100);
        assert_eq!(index.lookup(20), 200);
        assert_eq!(index.lookup(u32::MAX), 200);
    }

    #[test]
    fn maybe_append_waits_for_interval() {
        let mut index = OffsetIndex::default();
        assert_eq!(index.maybe_append(0, 0, 100), None);
        assert_eq!(index.maybe_append(5, 60, 100), None);
        assert_eq!(index.maybe_append(9, 120, 100), Some(entry(9, 120)));
        assert_eq!(index.maybe_append(12, 180, 100), None);
        assert_eq!(index.maybe_append(15, 220, 100), Some(entry(15, 220)));
        assert_eq!(index.entries(), &[entry(9, 120), entry(15, 220)]);
    }

    #[test]
    fn maybe_append_with_zero_interval_indexes_every_batch() {
        let mut index = OffsetIndex::default();
        assert_eq!(index.maybe_append(0, 0, 0), Some(entry(0, 0)));
        assert_eq!(index.maybe_append(3, 50, 0), Some(entry(3, 50)));
    }

    #[test]
    fn validate_rejects_bad_entries() {
        assert_eq!(validate_entries(&[entry(1, 10), entry(2, 20)], 30), Ok(()));
        assert_eq!(
            validate_entries(&[entry(1, 10), entry(1, 20)], 30),
            Err(IndexError::NotIncreasing { entry: 1 })
        );
        assert_eq!(
            validate_entries(&[entry(1, 10), entry(2, 10)], 30),
            Err(IndexError::NotIncreasing { entry: 1 })
        );
        assert_eq!(
            validate_entries(&[entry(1, 30)], 30),
            Err(IndexError::PastEnd {
                entry: 0,
                position: 30,
                segment_len: 30
            })
        );
    }

    #[test]
    fn decode_rejects_partial_entry() {
        assert_eq!(
            decode_entries(&[0; 9]),
            Err(IndexError::InvalidLength { len: 9 })
        );
    }

    proptest! {
        #[test]
        fn entries_round_trip(raw in proptest::collection::vec(any::<(u32, u32)>(), 0..50)) {
            let entries: Vec<IndexEntry> = raw.into_iter().map(|(o, p)| entry(o, p)).collect();
            let bytes = encode_entries(&entries);
            prop_assert_eq!(bytes.len(), entries.len() * INDEX_ENTRY_LEN);
            prop_assert_eq!(decode_entries(&bytes).unwrap(), entries);
        }
    }
}
