//! Messages as the broker sees them, and their mapping to log records.
//!
//! A message value is either JSON text (record attribute bit 0 set) or
//! opaque bytes. The authenticated producer is stored in every record, so a
//! consumer can trust who sent a message.

use bytes::Bytes;

use crate::broker::durable::Acks;
use crate::broker::idempotence::ProducerRequest;
use crate::log::Record;

/// Maximum time to live, in ms: timestamps are `i64` milliseconds.
pub const MAX_TTL_MS: u64 = i64::MAX as u64;

/// Record attribute bit: the value is JSON text.
pub const ATTRIBUTE_JSON_VALUE: u8 = 0b0000_0001;

/// A message value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Valid JSON text, stored as sent.
    Json(Bytes),
    /// Opaque bytes (travels as base64 in the REST API).
    Binary(Bytes),
    /// No value: in a compacted topic, deletes the key.
    Tombstone,
}

impl Payload {
    /// The record attributes and value that store this payload.
    pub(crate) fn into_stored(self) -> (u8, Option<Bytes>) {
        match self {
            Payload::Json(bytes) => (ATTRIBUTE_JSON_VALUE, Some(bytes)),
            Payload::Binary(bytes) => (0, Some(bytes)),
            Payload::Tombstone => (0, None),
        }
    }

    /// The payload of a record's attributes and value.
    fn from_stored(attributes: u8, value: Option<Bytes>) -> Payload {
        match value {
            None => Payload::Tombstone,
            Some(value) if attributes & ATTRIBUTE_JSON_VALUE != 0 => Payload::Json(value),
            Some(value) => Payload::Binary(value),
        }
    }
}

/// A message to publish or send, as the client gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The value.
    pub payload: Payload,
    /// Partitioning key.
    pub key: Option<String>,
    /// Dotted routing key.
    pub routing_key: Option<String>,
    /// Application headers. The REST API takes them as a JSON object, so
    /// they arrive sorted by name and without duplicates.
    pub headers: Vec<(String, String)>,
    /// Time to live in ms; `None` uses the resource's default.
    pub ttl_ms: Option<u64>,
}

/// A publish or send request.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The messages, in order; sequences, when given, follow this order.
    pub messages: Vec<NewMessage>,
    /// The idempotent producer and its first sequence, if any.
    pub producer: Option<ProducerRequest>,
    /// The durability the messages need before the response.
    pub acks: Acks,
}

/// The offsets a publish or send stored its messages at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    /// (partition, offset) per message, in request order.
    pub offsets: Vec<(u32, u64)>,
    /// The request repeated one an idempotent producer already stored, and
    /// `offsets` are those of the first time.
    pub duplicate: bool,
}

/// A stored message, as delivered to consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Partition it was read from (0 for queues).
    pub partition: u32,
    /// Offset in that partition.
    pub offset: u64,
    /// Time the broker appended it, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// User who sent it, as the broker authenticated them.
    pub producer: String,
    /// Partitioning key.
    pub key: Option<String>,
    /// Dotted routing key.
    pub routing_key: Option<String>,
    /// Application headers.
    pub headers: Vec<(String, String)>,
    /// The value.
    pub payload: Payload,
    /// Time to live in ms, 0 for none.
    pub ttl_ms: u64,
}

impl NewMessage {
    /// Bytes of the value as stored.
    pub fn value_len(&self) -> usize {
        match &self.payload {
            Payload::Json(bytes) | Payload::Binary(bytes) => bytes.len(),
            Payload::Tombstone => 0,
        }
    }

    /// Builds the record that stores this message for `producer`. A
    /// message without its own time to live gets `default_ttl_ms`.
    pub fn into_record(
        self,
        producer: &Bytes,
        timestamp_ms: i64,
        default_ttl_ms: Option<u64>,
    ) -> Record {
        let (attributes, value) = self.payload.into_stored();
        Record {
            offset: 0,
            timestamp_ms,
            attributes,
            ttl_ms: self.ttl_ms.or(default_ttl_ms).unwrap_or(0),
            key: self.key.map(Bytes::from),
            routing_key: self.routing_key.map(Bytes::from),
            producer: Some(producer.clone()),
            value,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| (name, Bytes::from(value)))
                .collect(),
        }
    }
}

impl Message {
    /// Returns whether the message's time to live ended at or before
    /// `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        // A time to live beyond i64 milliseconds never ends.
        match i64::try_from(self.ttl_ms) {
            Ok(ttl_ms) => ttl_ms > 0 && self.timestamp_ms.saturating_add(ttl_ms) <= now_ms,
            Err(_) => false,
        }
    }

    /// The message stored in `record` of `partition`.
    ///
    /// Text fields that are not valid UTF-8 (never written by this broker)
    /// are decoded lossily rather than dropped.
    pub fn from_record(partition: u32, record: Record) -> Message {
        let payload = Payload::from_stored(record.attributes, record.value);
        Message {
            partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            producer: record.producer.as_deref().map(lossy).unwrap_or_default(),
            key: record.key.as_deref().map(lossy),
            routing_key: record.routing_key.as_deref().map(lossy),
            headers: record
                .headers
                .into_iter()
                .map(|(name, value)| (name, lossy(&value)))
                .collect(),
            payload,
            ttl_ms: record.ttl_ms,
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_through_record() {
        let new = NewMessage {
            payload: Payload::Json(Bytes::from_static(b"{\"a\":1}")),
            key: Some("k".into()),
            routing_key: Some("orders.eu".into()),
            headers: vec![("h".into(), "ü".into())],
            ttl_ms: Some(5),
        };
        let mut record = new
            .clone()
            .into_record(&Bytes::from_static(b"alice"), 42, Some(9));
        record.offset = 7;
        let message = Message::from_record(3, record);
        assert_eq!(message.partition, 3);
        assert_eq!(message.offset, 7);
        assert_eq!(message.timestamp_ms, 42);
        assert_eq!(message.producer, "alice");
        assert_eq!(message.key, new.key);
        assert_eq!(message.routing_key, new.routing_key);
        assert_eq!(message.headers, new.headers);
        assert_eq!(message.payload, new.payload);
        assert_eq!(message.ttl_ms, 5);
    }

    #[test]
    fn binary_payload_keeps_kind() {
        let new = NewMessage {
            payload: Payload::Binary(Bytes::from_static(&[0, 159, 255])),
            key: None,
            routing_key: None,
            headers: vec![],
            ttl_ms: None,
        };
        let record = new
            .clone()
            .into_record(&Bytes::from_static(b"bob"), 1, None);
        assert_eq!(record.attributes & ATTRIBUTE_JSON_VALUE, 0);
        let message = Message::from_record(0, record);
        assert_eq!(message.payload, new.payload);
        assert_eq!(message.key, None);
        assert_eq!(message.ttl_ms, 0);
        assert!(!message.is_expired(i64::MAX));
    }

    #[test]
    fn default_ttl_applies_only_without_own() {
        let mut new = NewMessage {
            payload: Payload::Json(Bytes::from_static(b"1")),
            key: None,
            routing_key: None,
            headers: vec![],
            ttl_ms: None,
        };
        let producer = Bytes::from_static(b"p");
        assert_eq!(new.clone().into_record(&producer, 0, Some(7)).ttl_ms, 7);
        new.ttl_ms = Some(3);
        let message = Message::from_record(0, new.into_record(&producer, 100, Some(7)));
        assert_eq!(message.ttl_ms, 3);
        assert!(!message.is_expired(102));
        assert!(message.is_expired(103));
        let forever = Message {
            ttl_ms: u64::MAX,
            ..message
        };
        assert!(!forever.is_expired(i64::MAX));
    }
}
