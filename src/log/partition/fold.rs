//! The fold of batch headers into the writer state of a partition: its
//! leader epoch history and its idempotent producer table.
//!
//! `open` folds from the state a recovery checkpoint saved, starting where
//! the checkpoint ends, or from nothing at the first segment's start.
//! Either way it reads one header per batch after that place, without
//! checking CRCs.

use std::sync::Arc;

use super::checkpoint::Checkpoint;
use super::epochs::EpochHistory;
use super::producers::ProducerTable;
use crate::log::segment::Segment;
use crate::log::LogError;

/// A fold that has not run yet: its starting state and place.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    epochs: EpochHistory,
    producers: ProducerTable,
    /// Index of the segment where the fold starts.
    segment: usize,
    /// Byte position in that segment where the fold starts.
    position: usize,
    resumed: bool,
}

impl Fold {
    /// A fold that starts with the state `checkpoint` saved, at its end in
    /// segment number `segment`.
    pub(crate) fn from_checkpoint(checkpoint: &Checkpoint, segment: usize) -> Fold {
        Fold {
            epochs: checkpoint.epochs.clone(),
            producers: checkpoint.producers.clone(),
            segment,
            position: checkpoint.position as usize,
            resumed: true,
        }
    }

    /// Returns whether the fold starts at a checkpoint.
    pub(crate) fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// Folds every header from the starting place to the end of `segments`.
    pub(crate) fn run(
        mut self,
        segments: &[Arc<Segment>],
    ) -> Result<(EpochHistory, ProducerTable), LogError> {
        for (index, segment) in segments.iter().enumerate().skip(self.segment) {
            let bytes = segment.bytes();
            let mut position = if index == self.segment {
                self.position
            } else {
                0
            };
            while let Some(header) = segment.header_at(bytes, position)? {
                self.epochs.record(header.leader_epoch, header.base_offset);
                self.producers.record(&header);
                position += header.total_len();
            }
        }
        Ok((self.epochs, self.producers))
    }
}
