//! Idempotent producers: a retried request is stored once.
//!
//! A producer names itself with a string id and numbers its messages
//! 0, 1, 2, ... per topic or queue. Every message of one request goes into
//! one batch of one partition, whose header carries a 63-bit hash of the id
//! and the sequence of the first message. The partition logs keep the last
//! few batches of each producer (`ProducerTable`), folded from those
//! headers, so the state survives a restart and is already present on a
//! follower that becomes leader.
//!
//! For a request whose first sequence is `first`, with `expected` one past
//! the highest sequence stored for the producer (0 for a new producer):
//!
//! - a stored batch with exactly the request's sequences: a retry, which
//!   gets the stored offsets, and nothing is appended;
//! - `first == expected`: new, appended;
//! - anything else: [`BrokerError::OutOfOrderSequence`], nothing appended.
//!
//! Callers hold the resource's idempotence lock from [`place`] until the
//! batch is appended, so two requests of one producer are never both new.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::broker::durable::{Acks, DurableLog};
use crate::broker::error::{BrokerError, Result};
use crate::log::{ProducerInfo, Record};

/// Largest sequence number: the batch header stores it as an `i32`.
pub const MAX_SEQUENCE: u64 = i32::MAX as u64;

/// Maximum length of a producer id, in bytes.
pub const MAX_PRODUCER_ID_BYTES: usize = 200;

/// The producer fields of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRequest {
    /// The producer's own id.
    pub producer_id: String,
    /// Sequence of the request's first message; the others follow it.
    pub first_sequence: u64,
}

/// The placement of an idempotent request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Append a batch with these producer fields.
    Append(ProducerInfo),
    /// Append only the messages after the first `skip`, which are stored
    /// already (see [`Retry::Tail`]).
    AppendTail {
        /// Messages already stored.
        skip: usize,
        /// Producer fields of the batch of the others.
        producer: ProducerInfo,
    },
    /// Every message is stored already, where is no longer known.
    Stored,
    /// Already stored, in `partition` from `base_offset` on.
    Duplicate {
        /// Index of the partition log that contains it.
        partition: usize,
        /// Offset of its first message.
        base_offset: u64,
    },
}

/// Returns the number stored in batch headers for producer `id` of
/// `namespace`: the first 63 bits of SHA-256 over both. The broker's own producers use
/// other namespaces than clients, so a client cannot pose as one.
pub fn producer_hash(namespace: &str, id: &str) -> i64 {
    let mut input = Vec::with_capacity(namespace.len() + 1 + id.len());
    input.extend_from_slice(namespace.as_bytes());
    input.push(0);
    input.extend_from_slice(id.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(first) >> 1) as i64
}

/// Checks a client's producer id and the sequence range of a request of
/// `count` messages.
pub fn check_request(request: &ProducerRequest, count: usize) -> Result<()> {
    let id = &request.producer_id;
    if id.is_empty() || id.len() > MAX_PRODUCER_ID_BYTES {
        return Err(BrokerError::invalid(
            "producer_id",
            format!(
                "is {} bytes, allowed are 1 to {MAX_PRODUCER_ID_BYTES}",
                id.len()
            ),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(BrokerError::invalid(
            "producer_id",
            "contains a control character",
        ));
    }
    let last_index = count.saturating_sub(1);
    let last = request.first_sequence + last_index as u64;
    if last > MAX_SEQUENCE {
        return Err(BrokerError::invalid(
            format!("messages[{last_index}].sequence"),
            format!("{last} is above the largest sequence, {MAX_SEQUENCE}"),
        ));
    }
    Ok(())
}

/// The treatment of a request that overlaps stored sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A client's retry must repeat one stored batch exactly.
    Exact,
    /// The broker's own producers resend from a stored position and may
    /// take more messages than the first attempt. The part already stored
    /// is dropped and the rest appended.
    Tail,
}

/// Decides whether `count` messages from `producer`, starting at
/// `first_sequence`, are new or a retry, looking at every partition of the
/// resource.
pub fn place(
    logs: &[Arc<DurableLog>],
    producer: i64,
    first_sequence: u64,
    count: usize,
    retry: Retry,
) -> Result<Placement> {
    let first = first_sequence as i32;
    let last = (first_sequence + count as u64 - 1) as i32;
    let mut highest: Option<i32> = None;
    for (partition, log) in logs.iter().enumerate() {
        for batch in log.partition_log().producer_batches(producer) {
            if batch.first_sequence == first && batch.last_sequence == last {
                return Ok(Placement::Duplicate {
                    partition,
                    base_offset: batch.base_offset,
                });
            }
            highest = highest.max(Some(batch.last_sequence));
        }
    }
    let expected = highest.map_or(0, |highest| highest as u64 + 1);
    let info = |sequence: u64| ProducerInfo {
        producer_id: producer,
        producer_epoch: 0,
        base_sequence: sequence as i32,
    };
    if first_sequence == expected {
        return Ok(Placement::Append(info(first_sequence)));
    }
    // A producer without state may still be known elsewhere: the broker's
    // own producers meet targets created again (a dead-letter queue), and
    // retention may have deleted a client producer's batches. Both go on
    // at the sequence they are at.
    let retained = logs.iter().any(|log| log.log_start_offset() > 0);
    if highest.is_none() && (retry == Retry::Tail || retained) {
        return Ok(Placement::Append(info(first_sequence)));
    }
    if retry == Retry::Tail && first_sequence < expected {
        let skip = (expected - first_sequence) as usize;
        if skip >= count {
            return Ok(Placement::Stored);
        }
        return Ok(Placement::AppendTail {
            skip,
            producer: info(expected),
        });
    }
    let message = if first_sequence > expected {
        format!(
            "sequence {first_sequence} leaves a gap: the next sequence of this producer is {expected}; nothing was stored"
        )
    } else {
        format!(
            "sequences {first_sequence} to {last} overlap sequences this producer already stored \
             without repeating one of its recent requests exactly; the next sequence is {expected}; nothing was stored"
        )
    };
    Err(BrokerError::OutOfOrderSequence(message))
}

/// Namespace of the producer ids clients choose.
pub const CLIENT_PRODUCERS: &str = "client";

/// Returns the number stored for producer `producer_id` of user `user`.
/// Each user has producer ids of their own, so another user cannot take
/// over a producer's sequences by reusing its id.
pub fn client_producer(user: &str, producer_id: &str) -> i64 {
    // Producer ids have no control characters, so `\0` separates the two.
    producer_hash(CLIENT_PRODUCERS, &format!("{user}\0{producer_id}"))
}

/// The location of a stored idempotent request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Index of the partition log.
    pub partition: usize,
    /// Offset of the first message.
    pub base_offset: u64,
    /// Whether the request was a retry of a stored batch.
    pub duplicate: bool,
}

/// Appends `records` to `logs[partition]` as producer `producer`'s batch
/// from `first_sequence` on, unless they are stored already, and waits
/// until they are as durable as `acks` requires. `lock` is the resource's
/// idempotence lock.
///
/// With [`Retry::Tail`] the returned offsets may not be those of all the
/// records; the broker's own producers do not use them.
#[allow(clippy::too_many_arguments)]
pub async fn append_once(
    logs: &[Arc<DurableLog>],
    partition: usize,
    records: Vec<Record>,
    producer: i64,
    first_sequence: u64,
    acks: Acks,
    retry: Retry,
    lock: &Mutex<()>,
) -> Result<Stored> {
    let count = records.len() as u64;
    let log = &logs[partition];
    // Each branch also gives the offset below which the response depends on
    // durable records, because a retry can arrive before the original is
    // durable.
    let (stored, durable_end) = {
        let _serialized = lock.lock().await;
        match place(logs, producer, first_sequence, count as usize, retry)? {
            Placement::Duplicate {
                partition,
                base_offset,
            } => (
                Stored {
                    partition,
                    base_offset,
                    duplicate: true,
                },
                base_offset + count,
            ),
            Placement::Stored => (
                Stored {
                    partition,
                    base_offset: 0,
                    duplicate: true,
                },
                log.log_end_offset(),
            ),
            Placement::Append(info) => {
                let appended = log.append_local(&records, info, acks)?;
                let stored = Stored {
                    partition,
                    base_offset: appended.base_offset,
                    duplicate: false,
                };
                (stored, appended.last_offset + 1)
            }
            Placement::AppendTail { skip, producer } => {
                let appended = log.append_local(&records[skip..], producer, acks)?;
                let stored = Stored {
                    partition,
                    base_offset: appended.base_offset,
                    duplicate: false,
                };
                (stored, appended.last_offset + 1)
            }
        }
    };
    logs[stored.partition]
        .wait_durable(durable_end, acks)
        .await?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_positive_and_namespaced() {
        let a = producer_hash("client", "p1");
        assert_eq!(a, producer_hash("client", "p1"));
        assert!(a >= 0);
        assert_ne!(a, producer_hash("client", "p2"));
        assert_ne!(a, producer_hash("dead-letter", "p1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(producer_hash("ab", "c"), producer_hash("a", "bc"));
        assert_ne!(client_producer("alice", "p"), client_producer("bob", "p"));
    }

    #[test]
    fn request_checks() {
        let request = |id: &str, first| ProducerRequest {
            producer_id: id.into(),
            first_sequence: first,
        };
        assert!(check_request(&request("p", 0), 3).is_ok());
        assert!(check_request(&request("", 0), 1).is_err());
        assert!(check_request(&request("a\nb", 0), 1).is_err());
        assert!(check_request(&request(&"x".repeat(201), 0), 1).is_err());
        assert!(check_request(&request("ü", MAX_SEQUENCE), 1).is_ok());
        assert!(check_request(&request("p", MAX_SEQUENCE), 2).is_err());
    }
}
