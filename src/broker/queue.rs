//! An open queue: its message log, its state log and the lease state folded
//! from it.
//!
//! A receive first leases offsets in memory (so concurrent receivers never
//! get the same message), then stores the `Leased` event, and only then
//! returns the messages. If storing fails the lease is undone. Acks and
//! releases are stored before they are applied, so a crash can only lose
//! a settlement the client never received a response for.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::broker::durable::DurableLog;
use crate::broker::error::{BrokerError, Result};
use crate::broker::logs::Logs;
use crate::broker::message::Message;
use crate::broker::queue_state::{
    DeadLetter, DeadLetterReason, PendingCopy, QueueEvent, QueueState,
};
use crate::broker::{now_ms, queue_log};
use crate::config::Config;
use crate::log::{LogConfig, ProducerInfo};
use crate::meta::QueueSpec;

/// Segment size of a queue's state log.
const STATE_SEGMENT_BYTES: u64 = 8 << 20;

/// Most rounds of one lease when each round found only messages to
/// dead-letter.
pub const MAX_LEASE_ROUNDS: usize = 64;

/// Name of the queue's messages log under its directory.
pub const MESSAGES_LOG: &str = "messages";

/// Name of the queue's state log under its directory.
pub const STATE_LOG: &str = "state";

/// A queue with its logs open.
pub struct Queue {
    /// Settings from the catalog.
    pub spec: QueueSpec,
    /// The messages, one partition.
    pub messages: Arc<DurableLog>,
    /// Lease, ack and release events.
    pub state_log: Arc<DurableLog>,
    /// Woken when messages arrive or leases are released.
    pub changed: Arc<Notify>,
    /// Held while an idempotent request is checked and appended.
    pub idempotence: tokio::sync::Mutex<()>,
    /// Held while dead letters are stored and applied.
    dead_letter_order: tokio::sync::Mutex<()>,
    /// Held while dead letters are copied to the dead-letter queue.
    pub copying: tokio::sync::Mutex<()>,
    state: Mutex<QueueState>,
    /// The offset the latest snapshot in the state log covers.
    pub snapshot_covers: AtomicU64,
}

/// A message delivered from a queue under a lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Id to ack or nack: `<offset>-<delivery count>`.
    pub id: String,
    /// Deliveries including this one.
    pub delivery_count: u32,
    /// The message.
    pub message: Message,
}

/// The result of settling (acking or nacking) a list of ids.
#[derive(Debug, Clone, Default)]
pub struct AckOutcome {
    /// Ids that were settled.
    pub settled: Vec<String>,
    /// Ids that were not, with the reason.
    pub failed: Vec<(String, String)>,
}

impl Queue {
    /// Opens (creating if needed) the queue's logs under `dir` and replays
    /// its state.
    pub fn open(logs: &Logs, config: &Config, dir: &Path, spec: QueueSpec) -> Result<Queue> {
        let changed = Arc::new(Notify::new());
        let messages = logs.open(
            &dir.join(MESSAGES_LOG),
            LogConfig {
                segment_bytes: config.segment_bytes,
                ..LogConfig::default()
            },
            Arc::clone(&changed),
        )?;
        let state_log = logs.open(
            &dir.join(STATE_LOG),
            LogConfig {
                segment_bytes: STATE_SEGMENT_BYTES.min(config.segment_bytes),
                ..LogConfig::default()
            },
            Arc::new(Notify::new()),
        )?;
        let (state, snapshot_covers) = queue_log::replay_state(&state_log, &spec.name)?;
        Ok(Queue {
            spec,
            messages,
            state_log,
            changed,
            idempotence: tokio::sync::Mutex::new(()),
            dead_letter_order: tokio::sync::Mutex::new(()),
            copying: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            snapshot_covers: AtomicU64::new(snapshot_covers),
        })
    }

    /// Leases up to `max` messages for `visibility_ms`; returns nothing at
    /// once if none is ready.
    ///
    /// A message whose time to live ended, or that was already delivered
    /// `max_deliveries` times, is dead-lettered instead of delivered. Such
    /// messages do not count against `max`: the lease takes more, up to
    /// [`MAX_LEASE_ROUNDS`] times, and stores everything in one batch.
    pub async fn lease(&self, max: usize, visibility_ms: u64) -> Result<Vec<Delivery>> {
        let now = now_ms();
        let deadline = now.saturating_add(visibility_ms as i64);
        let mut leased = Vec::new();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for _ in 0..MAX_LEASE_ROUNDS {
            let round = {
                let mut state = self.lock_state();
                let round = state.lease(
                    max - live.len(),
                    self.messages.high_watermark(),
                    now,
                    deadline,
                );
                // Reserved until the lease is stored: a short lease may end
                // before that, and no other receive may take them then.
                let offsets: Vec<u64> = round.iter().map(|&(offset, _)| offset).collect();
                state.begin_settle(&offsets);
                round
            };
            if round.is_empty() {
                break;
            }
            leased.extend_from_slice(&round);
            let dead_before = dead.len();
            match self.read_deliveries(&round) {
                Ok(deliveries) => self.sort_out(deliveries, now, &mut live, &mut dead),
                Err(err) => {
                    self.end_lease(&leased, true);
                    return Err(err);
                }
            }
            if live.len() == max || dead.len() == dead_before {
                break;
            }
        }
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.store_lease(&live, dead, deadline).await;
        self.end_lease(&leased, result.is_err());
        result.map(|()| live)
    }

    /// Ends the reservation of `leased`, and undoes the lease when it could
    /// not be stored.
    fn end_lease(&self, leased: &[(u64, u32)], failed: bool) {
        let offsets: Vec<u64> = leased.iter().map(|&(offset, _)| offset).collect();
        let mut state = self.lock_state();
        state.abandon_settle(&offsets);
        if failed {
            state.undo_lease(leased);
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// Splits leased deliveries into those to deliver and those to
    /// dead-letter.
    fn sort_out(
        &self,
        deliveries: Vec<Delivery>,
        now: i64,
        live: &mut Vec<Delivery>,
        dead: &mut Vec<DeadLetter>,
    ) {
        for delivery in deliveries {
            let reason = if delivery.message.is_expired(now) {
                DeadLetterReason::Expired
            } else if self
                .spec
                .max_deliveries
                .is_some_and(|max| delivery.delivery_count > max)
            {
                DeadLetterReason::MaxDeliveries
            } else {
                live.push(delivery);
                continue;
            };
            dead.push(DeadLetter {
                offset: delivery.message.offset,
                reason,
                // This lease did not deliver it.
                delivery_count: delivery.delivery_count - 1,
            });
        }
    }

    /// Stores the lease of `live` and the dead letters as one batch.
    async fn store_lease(
        &self,
        live: &[Delivery],
        dead: Vec<DeadLetter>,
        deadline: i64,
    ) -> Result<()> {
        let mut events = Vec::with_capacity(2);
        if !live.is_empty() {
            events.push(QueueEvent::Leased {
                offsets: live
                    .iter()
                    .map(|delivery| delivery.message.offset)
                    .collect(),
                deadline_ms: deadline,
            });
        }
        if dead.is_empty() {
            return self.store(events).await;
        }
        let dead_letters = self.dead_letters(dead);
        let _ordered = self.dead_letter_order.lock().await;
        events.push(dead_letters.clone());
        self.store(events).await?;
        self.lock_state().apply(&dead_letters);
        Ok(())
    }

    /// Builds the event that dead-letters `entries`.
    fn dead_letters(&self, entries: Vec<DeadLetter>) -> QueueEvent {
        QueueEvent::DeadLettered {
            entries,
            copy: self.spec.dead_letter_queue.is_some(),
        }
    }

    /// Dead-letters the given delivery ids (a nack without requeue). Like
    /// an ack, it is accepted after the lease ended unless the message was
    /// delivered again since.
    pub async fn reject(&self, ids: &[String]) -> Result<AckOutcome> {
        self.settle(
            ids,
            |state, offset, count, _| state.check_ack(offset, count),
            |settled| {
                self.dead_letters(
                    settled
                        .iter()
                        .map(|&(offset, delivery_count)| DeadLetter {
                            offset,
                            reason: DeadLetterReason::Rejected,
                            delivery_count,
                        })
                        .collect(),
                )
            },
        )
        .await
    }

    /// Returns the oldest dead letters not yet copied to the dead-letter
    /// queue.
    pub fn next_pending_copy(&self) -> Option<PendingCopy> {
        self.lock_state().next_pending_copy()
    }

    /// Notes that the dead-letter copies below `end_sequence` are stored.
    pub async fn confirm_copies(&self, end_sequence: u64) -> Result<()> {
        let event = QueueEvent::DeadLettersCopied { end_sequence };
        self.store(vec![event.clone()]).await?;
        self.lock_state().apply(&event);
        Ok(())
    }

    /// Reads the messages at `offsets`, which must be readable.
    pub fn read_messages_at(&self, offsets: &[u64]) -> Result<Vec<Message>> {
        let leased: Vec<(u64, u32)> = offsets.iter().map(|&offset| (offset, 0)).collect();
        Ok(self
            .read_deliveries(&leased)?
            .into_iter()
            .map(|delivery| delivery.message)
            .collect())
    }

    /// Acks the given delivery ids.
    pub async fn ack(&self, ids: &[String]) -> Result<AckOutcome> {
        self.settle(
            ids,
            |state, offset, count, _| state.check_ack(offset, count),
            |settled| QueueEvent::Acked {
                offsets: settled.iter().map(|&(offset, _)| offset).collect(),
            },
        )
        .await
    }

    /// Releases the leases of the given delivery ids, so the messages are
    /// delivered again.
    pub async fn release(&self, ids: &[String]) -> Result<AckOutcome> {
        let outcome = self
            .settle(
                ids,
                |state, offset, count, now| state.check_release(offset, count, now),
                |settled| QueueEvent::Released {
                    offsets: settled.iter().map(|&(offset, _)| offset).collect(),
                },
            )
            .await?;
        if !outcome.settled.is_empty() {
            self.changed.notify_waiters();
        }
        Ok(outcome)
    }

    /// Whether a receive could lease something now.
    pub fn has_ready(&self) -> bool {
        self.lock_state()
            .has_ready(self.messages.high_watermark(), now_ms())
    }

    /// The earliest lease deadline, ms since the Unix epoch.
    pub fn next_deadline(&self) -> Option<i64> {
        self.lock_state().next_deadline()
    }

    /// Depth and in-flight counts.
    pub fn counts(&self) -> crate::broker::queue_state::QueueCounts {
        let mut state = self.lock_state();
        state.expire(now_ms());
        state.counts(self.messages.high_watermark())
    }

    async fn settle(
        &self,
        ids: &[String],
        check: impl Fn(
            &mut QueueState,
            u64,
            u32,
            i64,
        ) -> std::result::Result<(), crate::broker::queue_state::SettleError>,
        event: impl FnOnce(&[(u64, u32)]) -> QueueEvent,
    ) -> Result<AckOutcome> {
        let mut outcome = AckOutcome::default();
        let mut settled = Vec::new();
        let mut offsets = Vec::new();
        {
            let mut state = self.lock_state();
            let now = now_ms();
            for id in ids {
                let Some((offset, count)) = parse_delivery_id(id) else {
                    outcome
                        .failed
                        .push((id.clone(), "is not a delivery id".into()));
                    continue;
                };
                if offsets.contains(&offset) {
                    outcome
                        .failed
                        .push((id.clone(), "appears twice in the request".into()));
                    continue;
                }
                match check(&mut state, offset, count, now) {
                    Ok(()) => {
                        offsets.push(offset);
                        settled.push((offset, count));
                        outcome.settled.push(id.clone());
                    }
                    Err(err) => outcome.failed.push((id.clone(), err.to_string())),
                }
            }
            // Reserved under the same lock as the checks, so no other
            // request can pass them for these offsets meanwhile.
            state.begin_settle(&offsets);
        }
        if offsets.is_empty() {
            return Ok(outcome);
        }
        let event = event(&settled);
        // Dead letters take copy sequences in the order they are applied,
        // which must be the order of the log.
        let _ordered = match event {
            QueueEvent::DeadLettered { .. } => Some(self.dead_letter_order.lock().await),
            _ => None,
        };
        if let Err(err) = self.store(vec![event.clone()]).await {
            self.lock_state().abandon_settle(&offsets);
            return Err(err);
        }
        self.lock_state().apply(&event);
        Ok(outcome)
    }

    /// Appends `events` to the state log as one batch.
    async fn store(&self, events: Vec<QueueEvent>) -> Result<()> {
        let records = queue_log::event_records(&events)?;
        if records.is_empty() {
            return Ok(());
        }
        self.state_log
            .append(records, ProducerInfo::default())
            .await?;
        Ok(())
    }

    fn read_deliveries(&self, leased: &[(u64, u32)]) -> Result<Vec<Delivery>> {
        let mut deliveries = Vec::with_capacity(leased.len());
        let mut pending: &[(u64, u32)] = leased;
        while let Some(&(offset, _)) = pending.first() {
            // One read covers a run of consecutive offsets.
            let batches = self.messages.read(offset, 1 << 20)?;
            let mut records = batches
                .into_iter()
                .flat_map(|batch| batch.records)
                .filter(|record| record.offset >= offset)
                .peekable();
            let before = pending.len();
            while let (Some(&(wanted, count)), Some(record)) = (pending.first(), records.peek()) {
                if record.offset != wanted {
                    break;
                }
                let record = records.next().expect("peeked");
                deliveries.push(Delivery {
                    id: format_delivery_id(wanted, count),
                    delivery_count: count,
                    message: Message::from_record(0, record),
                });
                pending = &pending[1..];
            }
            if pending.len() == before {
                return Err(BrokerError::Internal(format!(
                    "leased offset {offset} of queue `{}` is not readable",
                    self.spec.name
                )));
            }
        }
        Ok(deliveries)
    }

    fn lock_state(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Formats the id of a delivery: the offset and the delivery count, so an
/// ack from a consumer whose lease expired and whose message went to
/// someone else is recognized and rejected.
pub fn format_delivery_id(offset: u64, delivery_count: u32) -> String {
    format!("{offset}-{delivery_count}")
}

/// Parses an id made by [`format_delivery_id`].
pub fn parse_delivery_id(id: &str) -> Option<(u64, u32)> {
    let (offset, count) = id.split_once('-')?;
    // Digits only: `parse` would also take a leading `+`.
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(offset) || !digits(count) {
        return None;
    }
    Some((offset.parse().ok()?, count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_id_round_trips() {
        assert_eq!(parse_delivery_id(&format_delivery_id(17, 3)), Some((17, 3)));
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "+1-1",
            "1-+1",
            "1-1-1",
            "a-1",
            "1-99999999999",
        ] {
            assert_eq!(parse_delivery_id(bad), None, "{bad:?}");
        }
    }
}
