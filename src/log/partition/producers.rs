//! The idempotent producers of a partition: the last few batches each
//! producer id appended, with their sequence numbers and offsets.
//!
//! The table is folded from batch headers, like the epoch history, so it is
//! rebuilt when a log opens and after a truncation, and a follower that
//! becomes leader already has it. The broker decides with it whether a
//! batch is new, a retry of a stored batch, or out of order.

use std::collections::{HashMap, VecDeque};

use crate::log::batch::BatchHeader;

/// Batches remembered per producer id. A retry of an older batch is still
/// recognized as a duplicate by its sequence, but its offsets are no longer
/// known.
pub const RECENT_BATCHES: usize = 5;

/// One batch a producer appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Sequence number of the first record.
    pub first_sequence: i32,
    /// Sequence number of the last record.
    pub last_sequence: i32,
    /// Offset of the first record.
    pub base_offset: u64,
}

/// Recent batches per producer id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, VecDeque<ProducerBatch>>,
}

impl ProducerTable {
    /// Builds a table from (producer id, batches oldest first) pairs.
    pub(crate) fn from_entries(entries: Vec<(i64, Vec<ProducerBatch>)>) -> ProducerTable {
        ProducerTable {
            producers: entries
                .into_iter()
                .map(|(producer_id, batches)| (producer_id, batches.into()))
                .collect(),
        }
    }

    /// Returns every producer id with its batches, oldest first, ordered by
    /// producer id.
    pub(crate) fn entries(&self) -> Vec<(i64, Vec<ProducerBatch>)> {
        let mut entries: Vec<(i64, Vec<ProducerBatch>)> = self
            .producers
            .iter()
            .map(|(&producer_id, batches)| (producer_id, batches.iter().copied().collect()))
            .collect();
        entries.sort_unstable_by_key(|(producer_id, _)| *producer_id);
        entries
    }

    /// Notes an appended batch; batches without a producer id are ignored.
    pub(crate) fn record(&mut self, header: &BatchHeader) {
        let count = header.appended_record_count();
        if header.producer_id < 0 || header.base_sequence < 0 || count == 0 {
            return;
        }
        let last_sequence = header
            .base_sequence
            .saturating_add((count - 1).min(i32::MAX as u32) as i32);
        let batches = self.producers.entry(header.producer_id).or_default();
        if batches.len() == RECENT_BATCHES {
            batches.pop_front();
        }
        batches.push_back(ProducerBatch {
            first_sequence: header.base_sequence,
            last_sequence,
            base_offset: header.base_offset,
        });
    }

    /// Returns the recent batches of `producer_id`, oldest first.
    pub(crate) fn batches(&self, producer_id: i64) -> Vec<ProducerBatch> {
        self.producers
            .get(&producer_id)
            .map(|batches| batches.iter().copied().collect())
            .unwrap_or_default()
    }
}
