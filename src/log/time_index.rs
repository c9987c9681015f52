//! Sparse time index of one segment.
//!
//! The `.timeindex` file next to each `.log` file is a flat array of 12-byte
//! entries: a timestamp in ms (`i64`, big-endian), then a relative offset
//! (`u32`, big-endian). An entry `(T, r)` promises that every record of the
//! segment below relative offset `r` has a timestamp at or below `T`. Both
//! columns rise strictly.
//!
//! Timestamps need not grow with offsets, because producers set them, so
//! `T` is the newest timestamp seen so far, not the timestamp of the record
//! at `r`. The log considers an entry each time the offset index gets one,
//! for the same batch, and adds it when the newest timestamp rose since the
//! previous entry. Sealing does the same with the segment's end as `r`, so
//! the last entry of a sealed segment contains its newest timestamp and
//! shows whether any record in it reaches a given time.
//!
//! A lookup of time `t` starts at the `r` of the last entry whose `T` is
//! below `t`: every record before it is older than `t`. That is correct with
//! out-of-order timestamps, and costs a scan of the batch headers from there.
//! See `docs/storage-format.md`.

use thiserror::Error;

/// Size of one time index entry in bytes.
pub const TIME_INDEX_ENTRY_LEN: usize = 12;

/// One time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    /// Every record below `relative_offset` has a timestamp at or below this.
    pub timestamp_ms: i64,
    /// Offset minus the segment's base offset: the start of a batch, or the
    /// segment's end in the last entry of a sealed segment.
    pub relative_offset: u32,
}

/// Error from decoding or validating a time index file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeIndexError {
    /// The file length is not a multiple of the entry size.
    #[error("time index length {len} is not a multiple of {TIME_INDEX_ENTRY_LEN}")]
    InvalidLength {
        /// File length in bytes.
        len: usize,
    },
    /// An entry does not rise strictly above the previous one in both columns.
    #[error("time index entry {entry} is not above the previous entry")]
    NotIncreasing {
        /// Position of the entry in the file, from 0.
        entry: usize,
    },
    /// An entry names an offset past the end of the segment.
    #[error("time index entry {entry} names relative offset {relative_offset}, past the segment end {relative_end}")]
    PastEnd {
        /// Position of the entry in the file, from 0.
        entry: usize,
        /// Relative offset stored in the entry.
        relative_offset: u32,
        /// Segment's next offset minus its base offset.
        relative_end: u64,
    },
}

/// In-memory time index of one segment, with the newest timestamp of every
/// batch added so far.
#[derive(Debug, Clone)]
pub(crate) struct TimeIndex {
    entries: Vec<TimeIndexEntry>,
    newest: i64,
}

impl Default for TimeIndex {
    fn default() -> Self {
        TimeIndex {
            entries: Vec::new(),
            newest: i64::MIN,
        }
    }
}

impl TimeIndex {
    /// Builds an index from entries that passed [`validate_entries`] and
    /// the newest timestamp of the batches they cover and follow.
    pub(crate) fn from_parts(entries: Vec<TimeIndexEntry>, newest: i64) -> TimeIndex {
        let newest = entries
            .last()
            .map_or(newest, |e| newest.max(e.timestamp_ms));
        TimeIndex { entries, newest }
    }

    pub(crate) fn entries(&self) -> &[TimeIndexEntry] {
        &self.entries
    }

    /// Returns the newest timestamp of the batches added, or `i64::MIN`
    /// when there is none.
    pub(crate) fn newest(&self) -> i64 {
        self.newest
    }

    /// Takes in the next batch of the segment, which starts at
    /// `relative_offset` and whose newest record is `max_timestamp`.
    /// `indexed` is whether the offset index added an entry for it. When
    /// it did and the newest timestamp rose since the last entry, adds an
    /// entry for the batches before this one and returns it.
    pub(crate) fn add_batch(
        &mut self,
        relative_offset: u32,
        indexed: bool,
        max_timestamp: i64,
    ) -> Option<TimeIndexEntry> {
        let added = if indexed {
            self.push(relative_offset)
        } else {
            None
        };
        self.newest = self.newest.max(max_timestamp);
        added
    }

    /// Adds the last entry of a segment being sealed, at `relative_end`
    /// (its next offset minus its base offset), when the newest timestamp
    /// rose since the last entry.
    pub(crate) fn seal(&mut self, relative_end: u64) -> Option<TimeIndexEntry> {
        self.push(u32::try_from(relative_end).ok()?)
    }

    fn push(&mut self, relative_offset: u32) -> Option<TimeIndexEntry> {
        if self.newest == i64::MIN {
            return None;
        }
        if let Some(last) = self.entries.last() {
            if last.timestamp_ms >= self.newest || last.relative_offset >= relative_offset {
                return None;
            }
        }
        let entry = TimeIndexEntry {
            timestamp_ms: self.newest,
            relative_offset,
        };
        self.entries.push(entry);
        Some(entry)
    }

    /// Returns the relative offset where a search for the first record at
    /// or after `timestamp_ms` starts: the `r` of the last entry whose
    /// timestamp is below it, or 0.
    pub(crate) fn search_start(&self, timestamp_ms: i64) -> u32 {
        let below = self
            .entries
            .partition_point(|e| e.timestamp_ms < timestamp_ms);
        match below {
            0 => 0,
            n => self.entries[n - 1].relative_offset,
        }
    }
}

/// Encodes entries in the `.timeindex` file layout.
pub fn encode_entries(entries: &[TimeIndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TIME_INDEX_ENTRY_LEN);
    for entry in entries {
        out.extend_from_slice(&encode_entry(entry));
    }
    out
}

pub(crate) fn encode_entry(entry: &TimeIndexEntry) -> [u8; TIME_INDEX_ENTRY_LEN] {
    let mut out = [0; TIME_INDEX_ENTRY_LEN];
    out[..8].copy_from_slice(&entry.timestamp_ms.to_be_bytes());
    out[8..].copy_from_slice(&entry.relative_offset.to_be_bytes());
    out
}

/// Decodes the contents of a `.timeindex` file. Checks only the length; use
/// [`validate_entries`] to check the entries against their segment.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<TimeIndexEntry>, TimeIndexError> {
    if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY_LEN) {
        return Err(TimeIndexError::InvalidLength { len: bytes.len() });
    }
    let entries = bytes
        .chunks_exact(TIME_INDEX_ENTRY_LEN)
        .map(|chunk| {
            let (timestamp, offset) = chunk.split_at(8);
            TimeIndexEntry {
                timestamp_ms: i64::from_be_bytes(timestamp.try_into().expect("8 bytes")),
                relative_offset: u32::from_be_bytes(offset.try_into().expect("4 bytes")),
            }
        })
        .collect();
    Ok(entries)
}

/// Checks that both columns rise strictly and that no entry names an offset
/// past `relative_end`, the segment's next offset minus its base offset.
///
/// It does not check the promise of each entry against the records.
/// `ferry-log index` does, by reading the batches.
pub fn validate_entries(
    entries: &[TimeIndexEntry],
    relative_end: u64,
) -> Result<(), TimeIndexError> {
    for (i, entry) in entries.iter().enumerate() {
        if u64::from(entry.relative_offset) > relative_end {
            return Err(TimeIndexError::PastEnd {
                entry: i,
                relative_offset: entry.relative_offset,
                relative_end,
            });
        }
        if i > 0 {
            let previous = entries[i - 1];
            if entry.timestamp_ms <= previous.timestamp_ms
                || entry.relative_offset <= previous.relative_offset
            {
                return Err(TimeIndexError::NotIncreasing { entry: i });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(timestamp_ms: i64, relative_offset: u32) -> TimeIndexEntry {
        TimeIndexEntry {
            timestamp_ms,
            relative_offset,
        }
    }

    #[test]
    fn entries_follow_the_newest_timestamp_of_earlier_batches() {
        let mut index = TimeIndex::default();
        // The first indexed batch has nothing before it to describe.
        assert_eq!(index.add_batch(0, true, 100), None);
        assert_eq!(index.add_batch(10, false, 300), None);
        // The clock stepped back: entries keep the newest seen so far.
        assert_eq!(index.add_batch(20, true, 50), Some(entry(300, 20)));
        assert_eq!(index.add_batch(30, true, 200), None);
        assert_eq!(index.add_batch(40, true, 400), None);
        assert_eq!(index.add_batch(50, true, 10), Some(entry(400, 50)));
        assert_eq!(index.seal(60), None);
        assert_eq!(index.newest(), 400);

        let mut index = TimeIndex::from_parts(index.entries().to_vec(), 500);
        assert_eq!(index.seal(60), Some(entry(500, 60)));
    }

    #[test]
    fn search_starts_after_records_known_to_be_older() {
        let index = TimeIndex::from_parts(vec![entry(300, 20), entry(400, 50)], 400);
        assert_eq!(index.search_start(i64::MIN), 0);
        assert_eq!(index.search_start(300), 0);
        assert_eq!(index.search_start(301), 20);
        assert_eq!(index.search_start(400), 20);
        assert_eq!(index.search_start(401), 50);
    }

    #[test]
    fn validate_rejects_bad_entries() {
        assert_eq!(validate_entries(&[entry(1, 10), entry(2, 20)], 20), Ok(()));
        assert_eq!(
            validate_entries(&[entry(1, 10), entry(1, 20)], 30),
            Err(TimeIndexError::NotIncreasing { entry: 1 })
        );
        assert_eq!(
            validate_entries(&[entry(1, 10), entry(2, 10)], 30),
            Err(TimeIndexError::NotIncreasing { entry: 1 })
        );
        assert_eq!(
            validate_entries(&[entry(1, 31)], 30),
            Err(TimeIndexError::PastEnd {
                entry: 0,
                relative_offset: 31,
                relative_end: 30
            })
        );
        assert_eq!(
            decode_entries(&[0; 13]),
            Err(TimeIndexError::InvalidLength { len: 13 })
        );
    }

    proptest! {
        #[test]
        fn entries_round_trip(raw in proptest::collection::vec(any::<(i64, u32)>(), 0..50)) {
            let entries: Vec<TimeIndexEntry> = raw.into_iter().map(|(t, o)| entry(t, o)).collect();
            let bytes = encode_entries(&entries);
            prop_assert_eq!(bytes.len(), entries.len() * TIME_INDEX_ENTRY_LEN);
            prop_assert_eq!(decode_entries(&bytes).unwrap(), entries);
        }

        /// Every entry keeps its promise for any order of timestamps, and
        /// a search that starts where the index points finds the same first
        /// record as a search from the start.
        #[test]
        fn promises_hold_with_any_timestamps(
            batches in proptest::collection::vec((any::<bool>(), -1000i64..1000), 1..60),
            target in -1100i64..1100,
        ) {
            let mut index = TimeIndex::default();
            for (i, (indexed, timestamp)) in batches.iter().enumerate() {
                index.add_batch(i as u32, *indexed, *timestamp);
            }
            index.seal(batches.len() as u64);
            for e in index.entries() {
                let newest_below = batches[..e.relative_offset as usize]
                    .iter()
                    .map(|(_, t)| *t)
                    .max()
                    .unwrap_or(i64::MIN);
                prop_assert!(newest_below <= e.timestamp_ms);
            }
            let first = batches.iter().position(|(_, t)| *t >= target);
            let start = index.search_start(target) as usize;
            let from_start = batches[start..].iter().position(|(_, t)| *t >= target).map(|p| p + start);
            prop_assert_eq!(first, from_start);
        }
    }
}
