//! Messages the broker itself moves into queues: dead letters, and messages
//! a binding routes from a topic.
//!
//! Each move is an idempotent append under a producer id of the broker's
//! own namespaces, with sequences that the source stores before it sends,
//! so a move repeated after a crash or a change of leader is stored once.
//! The target queue may be led by another broker; the append then goes to
//! that broker over the cluster.

use bytes::Bytes;
use tracing::warn;

use crate::broker::durable::Acks;
use crate::broker::error::{BrokerError, Result};
use crate::broker::idempotence;
use crate::broker::message::Message;
use crate::broker::queue::Queue;
use crate::broker::queue_state::{DeadLetter, PendingCopy};
use crate::broker::{now_ms, read_lock, Broker};
use crate::log::Record;
use crate::meta::Permission;

/// Namespace of the producer ids of dead-letter copies; the id is the
/// source queue's id.
pub const DEAD_LETTER_PRODUCERS: &str = "dead-letter";

/// Header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "ferry-dead-letter-reason";
/// Header naming the queue a dead letter comes from.
pub const SOURCE_QUEUE_HEADER: &str = "ferry-dead-letter-queue";
/// Header with a dead letter's offset in its source queue.
pub const SOURCE_OFFSET_HEADER: &str = "ferry-dead-letter-offset";
/// Header with the number of deliveries before dead-lettering.
pub const DELIVERY_COUNT_HEADER: &str = "ferry-delivery-count";

impl Broker {
    /// Appends `records` to queue `name` as the broker's producer
    /// `producer`, from `first_sequence` on, waiting for `acks=all`.
    /// Returns `false` when the queue no longer exists.
    pub async fn append_to_queue(
        &self,
        name: &str,
        records: Vec<Record>,
        producer: i64,
        first_sequence: u64,
    ) -> Result<bool> {
        let id = read_lock(&self.catalog)
            .queue(name)
            .map(|resource| resource.spec.id);
        let Some(id) = id else {
            return Ok(false);
        };
        let led_here = read_lock(&self.queues).contains_key(name);
        match self.cluster_hooks() {
            Some(cluster) if !led_here => {
                cluster
                    .append_to_queue(name.to_string(), id, records, producer, first_sequence)
                    .await?;
            }
            _ => {
                self.append_to_led_queue(name, id, records, producer, first_sequence)
                    .await?
            }
        }
        Ok(true)
    }

    /// Appends to incarnation `id` of queue `name` if this broker leads it:
    /// the part of [`Broker::append_to_queue`] that runs on the leader.
    pub async fn append_to_led_queue(
        &self,
        name: &str,
        id: u64,
        records: Vec<Record>,
        producer: i64,
        first_sequence: u64,
    ) -> Result<()> {
        let queue = read_lock(&self.queues)
            .get(name)
            .filter(|queue| queue.spec.id == id)
            .cloned()
            .ok_or_else(|| {
                BrokerError::Unavailable(format!(
                    "this broker does not lead queue `{name}` (id {id}); retry"
                ))
            })?;
        idempotence::append_once(
            std::slice::from_ref(&queue.messages),
            0,
            records,
            producer,
            first_sequence,
            Acks::All,
            idempotence::Retry::Tail,
            &queue.idempotence,
        )
        .await?;
        Ok(())
    }

    /// Copies the queue's pending dead letters to its dead-letter queue,
    /// oldest first. A failure is logged and left for the next call, which
    /// sends the same copies with the same sequences.
    pub(crate) async fn copy_dead_letters(&self, queue: &Queue) {
        let Some(target) = &queue.spec.dead_letter_queue else {
            return;
        };
        // Another task is copying this queue's dead letters already.
        let Ok(_copying) = queue.copying.try_lock() else {
            return;
        };
        while let Some(pending) = queue.next_pending_copy() {
            if let Err(err) = self.copy_batch(queue, target, &pending).await {
                warn!(
                    queue = %queue.spec.name,
                    dead_letter_queue = %target,
                    error = %err,
                    "failed to copy dead letters; the next receive retries"
                );
                return;
            }
        }
    }

    async fn copy_batch(&self, queue: &Queue, target: &str, pending: &PendingCopy) -> Result<()> {
        let offsets: Vec<u64> = pending.entries.iter().map(|entry| entry.offset).collect();
        let messages = queue.read_messages_at(&offsets)?;
        let timestamp = now_ms();
        let records = messages
            .into_iter()
            .zip(&pending.entries)
            .map(|(message, entry)| dead_letter_record(message, entry, &queue.spec.name, timestamp))
            .collect();
        let producer =
            idempotence::producer_hash(DEAD_LETTER_PRODUCERS, &queue.spec.id.to_string());
        // The queue's owner must still be allowed to send there: the queue
        // named at creation may have been deleted and the name taken.
        let allowed = {
            let catalog = read_lock(&self.catalog);
            let resource = catalog.queue(target);
            let owner = &queue.spec.owner;
            Broker::authorize(resource, "queue", target, owner, Some(Permission::Publish)).is_ok()
        };
        let stored = allowed
            && self
                .append_to_queue(target, records, producer, pending.first_sequence)
                .await?;
        if !stored {
            warn!(
                queue = %queue.spec.name,
                dead_letter_queue = %target,
                messages = pending.entries.len(),
                "dead-letter queue no longer exists or does not take the queue owner's messages; dropped the dead letters"
            );
        }
        queue
            .confirm_copies(pending.first_sequence + pending.entries.len() as u64)
            .await
    }
}

/// Builds the copy of a dead-lettered message: the same value, key, routing key,
/// producer and headers, plus headers saying why, from where and after how
/// many deliveries. It gets a new timestamp and no time to live, so an
/// expired message can be read in the dead-letter queue.
fn dead_letter_record(
    message: Message,
    entry: &DeadLetter,
    source_queue: &str,
    timestamp_ms: i64,
) -> Record {
    let (attributes, value) = message.payload.into_stored();
    let added = [
        (REASON_HEADER, entry.reason.as_str().to_string()),
        (SOURCE_QUEUE_HEADER, source_queue.to_string()),
        (SOURCE_OFFSET_HEADER, entry.offset.to_string()),
        (DELIVERY_COUNT_HEADER, entry.delivery_count.to_string()),
    ];
    let mut headers: Vec<(String, Bytes)> = message
        .headers
        .into_iter()
        .filter(|(name, _)| !added.iter().any(|(added, _)| added == name))
        .map(|(name, value)| (name, Bytes::from(value)))
        .collect();
    headers.extend(
        added
            .into_iter()
            .map(|(name, value)| (name.to_string(), Bytes::from(value))),
    );
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    Record {
        offset: 0,
        timestamp_ms,
        attributes,
        ttl_ms: 0,
        key: message.key.map(Bytes::from),
        routing_key: message.routing_key.map(Bytes::from),
        producer: Some(Bytes::from(message.producer)),
        value,
        headers,
    }
}
