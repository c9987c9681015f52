//! The delivery state of one queue as a pure state machine: which offsets
//! are acked, leased (and until when) or ready, and how often each was
//! delivered.
//!
//! Every change is a [`QueueEvent`] appended to the queue's state log before
//! the client learns of it; replaying the events rebuilds the state after a
//! restart. Time comes in as arguments (ms since the Unix epoch), so the
//! machine itself never reads a clock.
//!
//! Invariants: offsets below `ack_floor` are acked; an offset at or above
//! `next_new` was never delivered; below `next_new`, an offset not acked is
//! either leased or in `ready`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// A change of queue state, stored as JSON in the queue's state log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QueueEvent {
    /// The offsets were delivered under a lease that ends at `deadline_ms`.
    Leased {
        /// Offsets leased.
        offsets: Vec<u64>,
        /// End of the lease, ms since the Unix epoch.
        deadline_ms: i64,
    },
    /// The offsets were acknowledged and are gone from the queue.
    Acked {
        /// Offsets acked.
        offsets: Vec<u64>,
    },
    /// The leases on the offsets were given up; they are ready again.
    Released {
        /// Offsets released.
        offsets: Vec<u64>,
    },
    /// The messages left the queue without an ack. When the queue has a
    /// dead-letter queue, they wait to be copied there; the copies take
    /// the next dead-letter sequence numbers in log order.
    DeadLettered {
        /// The messages, in the order they are copied.
        entries: Vec<DeadLetter>,
        /// Whether they are copied to a dead-letter queue.
        copy: bool,
    },
    /// The dead-letter copies with sequences below `end_sequence` are
    /// stored in the dead-letter queue (or were given up on because it no
    /// longer exists).
    DeadLettersCopied {
        /// One past the last sequence copied.
        end_sequence: u64,
    },
}

/// The reason a message left its queue without an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Its time to live ended before a consumer received it.
    Expired,
    /// It was delivered `max_deliveries` times without an ack.
    MaxDeliveries,
    /// A consumer nacked it with `requeue=false`.
    Rejected,
}

impl DeadLetterReason {
    /// Returns the name used in the `ferry-dead-letter-reason` header.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::MaxDeliveries => "max_deliveries",
            DeadLetterReason::Rejected => "rejected",
        }
    }
}

/// One message that left its queue without an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its offset in the queue.
    pub offset: u64,
    /// The reason it left.
    pub reason: DeadLetterReason,
    /// How often it was delivered.
    pub delivery_count: u32,
}

/// Dead letters stored in the state log but not yet copied to the
/// dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCopy {
    /// Sequence of the first copy.
    pub first_sequence: u64,
    /// The messages.
    pub entries: Vec<DeadLetter>,
}

/// A message under lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// End of the lease, ms since the Unix epoch.
    pub deadline_ms: i64,
    /// Number of deliveries including this one.
    pub delivery_count: u32,
}

/// Why an ack or nack was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The offset was never delivered.
    #[error("was never delivered")]
    NotDelivered,
    /// The offset is already acked, rejected or dead-lettered.
    #[error("is already settled (acknowledged, rejected or dead-lettered)")]
    AlreadyAcked,
    /// The lease expired and the message was delivered again since.
    #[error("lease expired and the message was delivered again")]
    Redelivered,
    /// The delivery count in the id is higher than the message's.
    #[error("is not a current delivery id")]
    UnknownDelivery,
    /// Another request is settling this message right now.
    #[error("is being settled by another request")]
    Settling,
    /// The lease already expired or was released (nack only).
    #[error("is not leased")]
    NotLeased,
}

/// The delivery state of one queue.
#[derive(Debug, Default, Clone)]
pub struct QueueState {
    ack_floor: u64,
    acked: BTreeSet<u64>,
    next_new: u64,
    leases: HashMap<u64, Lease>,
    expiry: BTreeSet<(i64, u64)>,
    ready: BTreeSet<u64>,
    delivery_counts: HashMap<u64, u32>,
    /// Offsets whose ack or release is being stored: no other settlement
    /// and no new lease may take them until it is applied or abandoned.
    settling: HashSet<u64>,
    /// Sequence of the next dead-letter copy.
    next_copy_sequence: u64,
    /// Dead letters waiting to be copied, in sequence order.
    pending_copies: VecDeque<PendingCopy>,
}

/// The state of a queue folded from the events below `covers_below`,
/// stored in the state log so that compaction can drop those events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// The snapshot holds the events at offsets below this.
    pub covers_below: u64,
    ack_floor: u64,
    /// Acked offsets above the floor.
    acked: Vec<u64>,
    next_new: u64,
    /// (offset, deadline in ms, delivery count) of each lease.
    leases: Vec<(u64, i64, u32)>,
    /// (offset, deliveries) of messages delivered and not acked.
    delivery_counts: Vec<(u64, u32)>,
    next_copy_sequence: u64,
    /// (first sequence, messages) of each group waiting to be copied.
    pending_copies: Vec<(u64, Vec<DeadLetter>)>,
}

/// Message counts of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages not yet acked, leased or not.
    pub depth: u64,
    /// Messages under lease.
    pub in_flight: u64,
}

impl QueueState {
    /// Leases up to `max` ready offsets below `end_offset`, oldest
    /// redelivery first, then never-delivered ones. Expired leases become
    /// ready first. Returns each offset with its delivery count.
    pub fn lease(
        &mut self,
        max: usize,
        end_offset: u64,
        now_ms: i64,
        deadline_ms: i64,
    ) -> Vec<(u64, u32)> {
        self.expire(now_ms);
        let mut offsets: Vec<u64> = self
            .ready
            .iter()
            .filter(|offset| !self.settling.contains(offset))
            .take(max)
            .copied()
            .collect();
        let mut next = self.next_new.max(self.ack_floor);
        while offsets.len() < max && next < end_offset {
            offsets.push(next);
            next += 1;
        }
        self.apply_lease(&offsets, deadline_ms);
        offsets
            .into_iter()
            .map(|offset| (offset, self.delivery_counts[&offset]))
            .collect()
    }

    /// Reverts a [`QueueState::lease`] whose event could not be stored.
    pub fn undo_lease(&mut self, leased: &[(u64, u32)]) {
        for &(offset, delivery_count) in leased {
            if let Some(lease) = self.leases.remove(&offset) {
                self.expiry.remove(&(lease.deadline_ms, offset));
            }
            if delivery_count <= 1 {
                self.delivery_counts.remove(&offset);
            } else {
                self.delivery_counts.insert(offset, delivery_count - 1);
            }
            self.ready.insert(offset);
        }
    }

    /// Checks that `offset`, delivered for the `delivery_count`th time, can
    /// be acked now. An ack after the lease expired is accepted as long as
    /// nobody received the message again.
    pub fn check_ack(&self, offset: u64, delivery_count: u32) -> Result<(), SettleError> {
        if self.settling.contains(&offset) {
            return Err(SettleError::Settling);
        }
        if self.is_acked(offset) {
            return Err(SettleError::AlreadyAcked);
        }
        if offset >= self.next_new || !self.delivery_counts.contains_key(&offset) {
            return Err(SettleError::NotDelivered);
        }
        let current = self.delivery_counts[&offset];
        if delivery_count > current {
            return Err(SettleError::UnknownDelivery);
        }
        if delivery_count < current {
            return Err(SettleError::Redelivered);
        }
        Ok(())
    }

    /// Checks that `offset` is leased under `delivery_count` and can be
    /// released. Expired leases are expired first.
    pub fn check_release(
        &mut self,
        offset: u64,
        delivery_count: u32,
        now_ms: i64,
    ) -> Result<(), SettleError> {
        self.expire(now_ms);
        self.check_ack(offset, delivery_count)?;
        if !self.leases.contains_key(&offset) {
            return Err(SettleError::NotLeased);
        }
        Ok(())
    }

    /// Reserves offsets that passed a check while their settlement is
    /// stored, so that neither a receive nor another ack or nack can take
    /// them in the meantime. [`QueueState::apply`] or
    /// [`QueueState::abandon_settle`] ends the reservation.
    pub fn begin_settle(&mut self, offsets: &[u64]) {
        self.settling.extend(offsets);
    }

    /// Ends a reservation whose event could not be stored.
    pub fn abandon_settle(&mut self, offsets: &[u64]) {
        for offset in offsets {
            self.settling.remove(offset);
        }
    }

    /// Applies a stored event; used both live and for replay.
    pub fn apply(&mut self, event: &QueueEvent) {
        match event {
            QueueEvent::Leased {
                offsets,
                deadline_ms,
            } => self.apply_lease(offsets, *deadline_ms),
            QueueEvent::Acked { offsets } => {
                for &offset in offsets {
                    self.settling.remove(&offset);
                    self.apply_ack(offset);
                }
            }
            QueueEvent::Released { offsets } => {
                for &offset in offsets {
                    self.settling.remove(&offset);
                    if let Some(lease) = self.leases.remove(&offset) {
                        self.expiry.remove(&(lease.deadline_ms, offset));
                        self.ready.insert(offset);
                    }
                }
            }
            QueueEvent::DeadLettered { entries, copy } => {
                for entry in entries {
                    self.settling.remove(&entry.offset);
                    // A message dead-lettered when it was due for delivery
                    // has no `Leased` event: pass next_new over it first.
                    if entry.offset >= self.next_new {
                        self.apply_lease(&[entry.offset], 0);
                    }
                    self.apply_ack(entry.offset);
                }
                if *copy && !entries.is_empty() {
                    self.pending_copies.push_back(PendingCopy {
                        first_sequence: self.next_copy_sequence,
                        entries: entries.clone(),
                    });
                    self.next_copy_sequence += entries.len() as u64;
                }
            }
            QueueEvent::DeadLettersCopied { end_sequence } => {
                while self.pending_copies.front().is_some_and(|pending| {
                    pending.first_sequence + pending.entries.len() as u64 <= *end_sequence
                }) {
                    self.pending_copies.pop_front();
                }
            }
        }
    }

    /// Returns the state as a snapshot that covers the events below
    /// `covers_below`, which must be the events folded into it.
    pub fn snapshot(&self, covers_below: u64) -> QueueSnapshot {
        let mut leases: Vec<(u64, i64, u32)> = self
            .leases
            .iter()
            .map(|(&offset, lease)| (offset, lease.deadline_ms, lease.delivery_count))
            .collect();
        leases.sort_unstable();
        let mut delivery_counts: Vec<(u64, u32)> = self
            .delivery_counts
            .iter()
            .map(|(&offset, &count)| (offset, count))
            .collect();
        delivery_counts.sort_unstable();
        QueueSnapshot {
            covers_below,
            ack_floor: self.ack_floor,
            acked: self.acked.iter().copied().collect(),
            next_new: self.next_new,
            leases,
            delivery_counts,
            next_copy_sequence: self.next_copy_sequence,
            pending_copies: self
                .pending_copies
                .iter()
                .map(|pending| (pending.first_sequence, pending.entries.clone()))
                .collect(),
        }
    }

    /// Rebuilds the state a snapshot describes. An offset between the ack
    /// floor and `next_new` that is neither acked nor leased is ready.
    pub fn from_snapshot(snapshot: &QueueSnapshot) -> QueueState {
        let mut state = QueueState {
            ack_floor: snapshot.ack_floor,
            acked: snapshot.acked.iter().copied().collect(),
            next_new: snapshot.next_new,
            delivery_counts: snapshot.delivery_counts.iter().copied().collect(),
            next_copy_sequence: snapshot.next_copy_sequence,
            pending_copies: snapshot
                .pending_copies
                .iter()
                .map(|(first_sequence, entries)| PendingCopy {
                    first_sequence: *first_sequence,
                    entries: entries.clone(),
                })
                .collect(),
            ..QueueState::default()
        };
        for &(offset, deadline_ms, delivery_count) in &snapshot.leases {
            state.leases.insert(
                offset,
                Lease {
                    deadline_ms,
                    delivery_count,
                },
            );
            state.expiry.insert((deadline_ms, offset));
        }
        for offset in state.ack_floor..state.next_new {
            if !state.acked.contains(&offset) && !state.leases.contains_key(&offset) {
                state.ready.insert(offset);
            }
        }
        state
    }

    /// Returns the oldest group of dead letters not yet copied.
    pub fn next_pending_copy(&self) -> Option<PendingCopy> {
        self.pending_copies.front().cloned()
    }

    /// Moves every lease that ended at or before `now_ms` back to ready.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some(&(deadline_ms, offset)) = self.expiry.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.expiry.pop_first();
            self.leases.remove(&offset);
            self.ready.insert(offset);
        }
    }

    /// The earliest lease deadline, if any lease is held.
    pub fn next_deadline(&self) -> Option<i64> {
        self.expiry.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    /// Depth and in-flight counts for a queue whose log ends at `end_offset`.
    pub fn counts(&self, end_offset: u64) -> QueueCounts {
        let unacked = end_offset.saturating_sub(self.ack_floor);
        QueueCounts {
            depth: unacked.saturating_sub(self.acked.len() as u64),
            in_flight: self.leases.len() as u64,
        }
    }

    /// Whether some message below `end_offset` can be leased at `now_ms`.
    pub fn has_ready(&self, end_offset: u64, now_ms: i64) -> bool {
        self.ready
            .iter()
            .any(|offset| !self.settling.contains(offset))
            || self.next_new.max(self.ack_floor) < end_offset
            || self
                .next_deadline()
                .is_some_and(|deadline| deadline <= now_ms)
    }

    /// The lease on `offset`, if any.
    pub fn lease_of(&self, offset: u64) -> Option<Lease> {
        self.leases.get(&offset).copied()
    }

    fn is_acked(&self, offset: u64) -> bool {
        offset < self.ack_floor || self.acked.contains(&offset)
    }

    fn apply_lease(&mut self, offsets: &[u64], deadline_ms: i64) {
        for &offset in offsets {
            if self.is_acked(offset) {
                continue;
            }
            // Offsets skipped over by a jump of next_new were leased by an
            // event that is not (or not yet) in the log: keep them ready.
            while self.next_new < offset {
                if !self.is_acked(self.next_new) && !self.leases.contains_key(&self.next_new) {
                    self.ready.insert(self.next_new);
                }
                self.next_new += 1;
            }
            if self.next_new == offset {
                self.next_new += 1;
            }
            self.ready.remove(&offset);
            if let Some(old) = self.leases.remove(&offset) {
                self.expiry.remove(&(old.deadline_ms, offset));
            }
            let count = self.delivery_counts.entry(offset).or_insert(0);
            *count += 1;
            let lease = Lease {
                deadline_ms,
                delivery_count: *count,
            };
            self.leases.insert(offset, lease);
            self.expiry.insert((deadline_ms, offset));
        }
    }

    fn apply_ack(&mut self, offset: u64) {
        if self.is_acked(offset) {
            return;
        }
        if let Some(lease) = self.leases.remove(&offset) {
            self.expiry.remove(&(lease.deadline_ms, offset));
        }
        self.ready.remove(&offset);
        self.delivery_counts.remove(&offset);
        self.acked.insert(offset);
        while self.acked.remove(&self.ack_floor) {
            self.ack_floor += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_every_kind_of_offset() {
        let mut state = QueueState::default();
        state.lease(6, 10, 0, 100);
        state.apply(&QueueEvent::Acked {
            offsets: vec![0, 3],
        });
        state.apply(&QueueEvent::Released { offsets: vec![1] });
        state.apply(&QueueEvent::DeadLettered {
            entries: vec![DeadLetter {
                offset: 4,
                reason: DeadLetterReason::Rejected,
                delivery_count: 1,
            }],
            copy: true,
        });
        let snapshot = state.snapshot(42);
        let json = serde_json::to_vec(&snapshot).unwrap();
        let decoded: QueueSnapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(decoded, snapshot);
        let mut rebuilt = QueueState::from_snapshot(&decoded);
        assert_eq!(rebuilt.snapshot(42), snapshot);
        assert_eq!(rebuilt.counts(10), state.counts(10));
        assert_eq!(rebuilt.next_pending_copy(), state.next_pending_copy());
        // The same offsets come next, in the same order.
        assert_eq!(
            rebuilt.lease(10, 10, 200, 300),
            state.lease(10, 10, 200, 300)
        );
    }

    #[test]
    fn lease_ack_advances_floor() {
        let mut state = QueueState::default();
        let leased = state.lease(3, 10, 0, 100);
        assert_eq!(leased, vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(state.counts(10).in_flight, 3);
        state.check_ack(1, 1).unwrap();
        state.apply(&QueueEvent::Acked { offsets: vec![1] });
        assert_eq!(state.counts(10).depth, 9);
        state.apply(&QueueEvent::Acked { offsets: vec![0] });
        assert_eq!(state.ack_floor, 2);
        assert_eq!(state.check_ack(0, 1), Err(SettleError::AlreadyAcked));
        assert_eq!(state.check_ack(5, 1), Err(SettleError::NotDelivered));
    }

    #[test]
    fn expired_lease_redelivers_with_higher_count() {
        let mut state = QueueState::default();
        assert_eq!(state.lease(1, 1, 0, 100), vec![(0, 1)]);
        assert!(state.lease(1, 1, 50, 150).is_empty(), "still leased");
        assert_eq!(state.lease(1, 1, 100, 200), vec![(0, 2)]);
        assert_eq!(state.check_ack(0, 1), Err(SettleError::Redelivered));
        assert_eq!(state.check_ack(0, 3), Err(SettleError::UnknownDelivery));
        assert_eq!(state.check_ack(0, 2), Ok(()));
    }

    #[test]
    fn release_makes_ready_again() {
        let mut state = QueueState::default();
        state.lease(2, 2, 0, 1000);
        state.check_release(1, 1, 10).unwrap();
        state.apply(&QueueEvent::Released { offsets: vec![1] });
        assert_eq!(state.lease(5, 2, 10, 1000), vec![(1, 2)]);
    }

    #[test]
    fn replay_rebuilds_same_state() {
        let mut live = QueueState::default();
        let mut events = Vec::new();
        let leased = live.lease(4, 6, 0, 500);
        let offsets: Vec<u64> = leased.iter().map(|(offset, _)| *offset).collect();
        events.push(QueueEvent::Leased {
            offsets,
            deadline_ms: 500,
        });
        let ack = QueueEvent::Acked {
            offsets: vec![0, 2],
        };
        live.apply(&ack);
        events.push(ack);

        let mut replayed = QueueState::default();
        for event in &events {
            replayed.apply(event);
        }
        assert_eq!(replayed.counts(6), live.counts(6));
        assert_eq!(replayed.lease_of(1), live.lease_of(1));
        // After the lease ends, 1 and 3 come back before the new 4 and 5.
        assert_eq!(
            replayed.lease(10, 6, 600, 900),
            vec![(1, 2), (3, 2), (4, 1), (5, 1)]
        );
    }

    #[test]
    fn out_of_order_lease_events_keep_skipped_offsets() {
        // Two receivers leased 0..2 and 2..4; only the second event was stored.
        let mut replayed = QueueState::default();
        replayed.apply(&QueueEvent::Leased {
            offsets: vec![2, 3],
            deadline_ms: 100,
        });
        assert_eq!(replayed.lease(10, 4, 0, 100), vec![(0, 1), (1, 1)]);
    }

    #[test]
    fn settling_offset_is_not_leased_or_settled_twice() {
        let mut state = QueueState::default();
        state.lease(1, 1, 0, 10);
        state.check_ack(0, 1).unwrap();
        state.begin_settle(&[0]);
        // The lease ends while the ack is being stored.
        assert!(
            state.lease(1, 1, 20, 30).is_empty(),
            "not redelivered while settling"
        );
        assert_eq!(state.check_ack(0, 1), Err(SettleError::Settling));
        state.apply(&QueueEvent::Acked { offsets: vec![0] });
        assert_eq!(state.check_ack(0, 1), Err(SettleError::AlreadyAcked));

        // An abandoned settlement makes the message available again.
        let mut state = QueueState::default();
        state.lease(1, 1, 0, 10);
        state.begin_settle(&[0]);
        state.abandon_settle(&[0]);
        assert_eq!(state.lease(1, 1, 20, 30), vec![(0, 2)]);
    }

    #[test]
    fn undo_lease_restores_counts() {
        let mut state = QueueState::default();
        let leased = state.lease(2, 2, 0, 100);
        state.undo_lease(&leased);
        assert_eq!(state.counts(2).in_flight, 0);
        assert_eq!(state.lease(2, 2, 0, 100), vec![(0, 1), (1, 1)]);
    }

    #[test]
    fn dead_letters_wait_for_copies() {
        let dead = |offset, reason| DeadLetter {
            offset,
            reason,
            delivery_count: 1,
        };
        let events = vec![
            QueueEvent::Leased {
                offsets: vec![0],
                deadline_ms: 100,
            },
            // Offset 1 expired before it was delivered: never leased.
            QueueEvent::DeadLettered {
                entries: vec![
                    dead(1, DeadLetterReason::Expired),
                    dead(0, DeadLetterReason::Rejected),
                ],
                copy: true,
            },
            QueueEvent::DeadLettered {
                entries: vec![dead(2, DeadLetterReason::MaxDeliveries)],
                copy: true,
            },
        ];
        let mut state = QueueState::default();
        for event in &events {
            state.apply(event);
        }
        assert_eq!(state.counts(4).depth, 1);
        assert_eq!(state.lease(10, 4, 0, 100), vec![(3, 1)]);
        let first = state.next_pending_copy().unwrap();
        assert_eq!(first.first_sequence, 0);
        assert_eq!(first.entries.len(), 2);
        state.apply(&QueueEvent::DeadLettersCopied { end_sequence: 2 });
        let second = state.next_pending_copy().unwrap();
        assert_eq!(second.first_sequence, 2);
        state.apply(&QueueEvent::DeadLettersCopied { end_sequence: 3 });
        assert_eq!(state.next_pending_copy(), None);
        // Without a dead-letter queue nothing waits to be copied.
        let mut plain = QueueState::default();
        plain.apply(&QueueEvent::DeadLettered {
            entries: vec![dead(0, DeadLetterReason::Rejected)],
            copy: false,
        });
        assert_eq!(plain.next_pending_copy(), None);
        assert_eq!(plain.counts(1).depth, 0);
    }
}
