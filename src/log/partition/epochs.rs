//! The leader epoch history of a partition: where each leader epoch starts.
//!
//! A follower that learns of a new leader requests where the follower's last
//! epoch ends in the leader's log, and truncates its own log there before it
//! fetches again. The leader looks the answer up in this history.

/// The first offset of every leader epoch present in a log, in ascending
/// order of both epoch and offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochHistory {
    starts: Vec<EpochStart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EpochStart {
    epoch: u32,
    start_offset: u64,
}

impl EpochHistory {
    /// Builds a history from (epoch, start offset) pairs in ascending order.
    pub(crate) fn from_starts(starts: &[(u32, u64)]) -> EpochHistory {
        let mut history = EpochHistory::default();
        for &(epoch, start_offset) in starts {
            history.record(epoch, start_offset);
        }
        history
    }

    /// Returns the (epoch, start offset) pairs in ascending order.
    pub(crate) fn starts(&self) -> Vec<(u32, u64)> {
        self.starts
            .iter()
            .map(|start| (start.epoch, start.start_offset))
            .collect()
    }

    /// Notes a batch of `epoch` at `base_offset`, appended at the log end.
    pub(crate) fn record(&mut self, epoch: u32, base_offset: u64) {
        if self.latest().is_none_or(|latest| epoch > latest) {
            self.starts.push(EpochStart {
                epoch,
                start_offset: base_offset,
            });
        }
    }

    /// Forgets the epochs that start at or above `end_offset`, after the log
    /// was truncated there.
    pub(crate) fn truncate(&mut self, end_offset: u64) {
        self.starts.retain(|start| start.start_offset < end_offset);
    }

    /// Returns the epoch of the last batch, or `None` for an empty log.
    pub(crate) fn latest(&self) -> Option<u32> {
        self.starts.last().map(|start| start.epoch)
    }

    /// Finds the largest epoch at or below `epoch` and the offset where it
    /// ends: the start of the next epoch, or `log_end_offset` when it is the
    /// latest. Returns `None` when every stored epoch is above `epoch`.
    pub(crate) fn end_offset_for(&self, epoch: u32, log_end_offset: u64) -> Option<(u32, u64)> {
        let index = self.starts.partition_point(|start| start.epoch <= epoch);
        let found = self.starts.get(index.checked_sub(1)?)?;
        let end = self
            .starts
            .get(index)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((found.epoch, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(starts: &[(u32, u64)]) -> EpochHistory {
        EpochHistory::from_starts(starts)
    }

    #[test]
    fn record_keeps_first_offset_of_each_epoch() {
        let history = history(&[(0, 0), (0, 5), (2, 9), (2, 12), (3, 20)]);
        assert_eq!(history.latest(), Some(3));
        assert_eq!(history.end_offset_for(0, 30), Some((0, 9)));
        assert_eq!(history.end_offset_for(2, 30), Some((2, 20)));
        assert_eq!(history.end_offset_for(3, 30), Some((3, 30)));
    }

    #[test]
    fn end_offset_for_missing_epoch_uses_lower_one() {
        let history = history(&[(1, 0), (4, 10)]);
        assert_eq!(history.end_offset_for(2, 15), Some((1, 10)));
        assert_eq!(history.end_offset_for(9, 15), Some((4, 15)));
        assert_eq!(history.end_offset_for(0, 15), None);
    }

    #[test]
    fn truncate_drops_later_epochs() {
        let mut history = history(&[(0, 0), (1, 10), (2, 20)]);
        history.truncate(15);
        assert_eq!(history.latest(), Some(1));
        assert_eq!(history.end_offset_for(2, 15), Some((1, 15)));
        history.truncate(0);
        assert_eq!(history.latest(), None);
    }
}
