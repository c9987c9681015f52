//! Request and response bodies of the REST API, as the client sends and
//! reads them.
//!
//! Responses ignore fields they do not know, so a newer broker that adds
//! fields still works with this client. Optional request fields are left out
//! of the JSON when they are `None`, and the broker then applies its default.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

// The enums of the wire format are the broker's own types.
pub use crate::meta::{Access, Cleanup, Permission, StartPosition};

/// The kind of resource a grant applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// A topic, under `/v1/topics`.
    Topic,
    /// A queue, under `/v1/queues`.
    Queue,
}

impl ResourceKind {
    /// Returns the collection's path segment, `topics` or `queues`.
    pub fn path_segment(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topics",
            ResourceKind::Queue => "queues",
        }
    }
}

/// Body of `POST /v1/users` and `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password in clear text; the broker stores only a hash.
    pub password: String,
}

/// A registered user, as `POST /v1/users` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User name.
    pub username: String,
}

/// A login token, as `POST /v1/tokens` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Bearer token for the `Authorization` header.
    pub token: String,
    /// Expiry time, RFC 3339.
    pub expires_at: String,
}

/// Body of `POST /v1/topics`. Build it with [`CreateTopic::named`] or a
/// struct literal with `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateTopic {
    /// Topic name, `[A-Za-z0-9._-]{1,200}`.
    pub name: String,
    /// Visibility to other users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// Number of partitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Copies of each partition across brokers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u32>,
    /// Age in milliseconds after which segments may be deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Size in bytes per partition above which old segments may be deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// Size in bytes at which a partition rolls to a new segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// Cleanup policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<Cleanup>,
    /// Default time to live of messages, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_ttl_ms: Option<u64>,
}

impl CreateTopic {
    /// Creates a request for a topic named `name` with the broker's
    /// defaults.
    pub fn named(name: impl Into<String>) -> CreateTopic {
        CreateTopic {
            name: name.into(),
            ..CreateTopic::default()
        }
    }
}

/// A topic, as describe, list and create return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// User who created the topic.
    pub owner: String,
    /// Visibility to other users.
    pub access: Access,
    /// Number of partitions.
    pub partition_count: u32,
    /// Copies of each partition.
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// Segment size in bytes, when set for this topic.
    #[serde(default)]
    pub segment_bytes: Option<u64>,
    /// Cleanup policy.
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
    /// Default time to live of messages, in milliseconds.
    #[serde(default)]
    pub message_ttl_ms: Option<u64>,
    /// Age in milliseconds after which old segments are deleted.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// Size in bytes per partition above which old segments are deleted.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Offsets and leaders of each partition.
    #[serde(default)]
    pub partitions: Vec<PartitionInfo>,
    /// Names of the topic's subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset still retained.
    pub start_offset: u64,
    /// Offset the next message will get (the log end offset).
    pub end_offset: u64,
    /// Broker id of the partition leader.
    #[serde(default)]
    pub leader: Option<u64>,
    /// Leader epoch of the partition.
    #[serde(default)]
    pub leader_epoch: Option<u64>,
}

/// One message to publish or send.
///
/// Exactly one of `value` (any JSON, `null` included) and `value_b64` must be
/// set; [`NewMessage::json`] and [`NewMessage::binary`] do that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// JSON value.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Value>,
    /// Binary value, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
    /// Partitioning key: messages with the same key go to the same partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Dotted routing key, matched by subscription and binding patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// String headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Time to live in milliseconds; the broker never delivers the message
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Sequence number of an idempotent producer's message; set by
    /// `publish_idempotent` and `send_idempotent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

impl NewMessage {
    /// Creates a message whose value is `value`.
    pub fn json(value: impl Into<Value>) -> NewMessage {
        NewMessage {
            value: Some(value.into()),
            ..NewMessage::default()
        }
    }

    /// Creates a message whose value is the bytes `value`, sent as base64.
    pub fn binary(value: impl AsRef<[u8]>) -> NewMessage {
        NewMessage {
            value_b64: Some(BASE64.encode(value)),
            ..NewMessage::default()
        }
    }

    /// Sets the partitioning key.
    pub fn with_key(mut self, key: impl Into<String>) -> NewMessage {
        self.key = Some(key.into());
        self
    }

    /// Sets the routing key.
    pub fn with_routing_key(mut self, routing_key: impl Into<String>) -> NewMessage {
        self.routing_key = Some(routing_key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> NewMessage {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the time to live, in milliseconds.
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> NewMessage {
        self.ttl_ms = Some(ttl_ms);
        self
    }
}

/// Body of a publish or send request.
#[derive(Debug, Serialize)]
pub(crate) struct MessagesOut<'a> {
    pub messages: &'a [NewMessage],
}

/// Body of an idempotent publish or send request.
#[derive(Debug, Serialize)]
pub(crate) struct IdempotentMessagesOut<'a> {
    pub producer_id: &'a str,
    pub messages: Vec<NewMessage>,
}

/// The offsets of an idempotent publish or send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// One entry per message, in request order.
    pub offsets: Vec<PartitionOffset>,
    /// The request repeated one the broker already stored; `offsets` are
    /// those of the first time.
    #[serde(default)]
    pub duplicate: bool,
}

/// A binding of a queue to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Id, for removing it.
    pub id: u64,
    /// Queue the messages go to.
    pub queue: String,
    /// Topic they come from.
    pub topic: String,
    /// Routing-key pattern: `*` is one word, `#` zero or more.
    pub pattern: String,
    /// User who created it.
    pub owner: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// `{"bindings": [...]}`.
#[derive(Debug, Deserialize)]
pub(crate) struct BindingList {
    pub bindings: Vec<Binding>,
}

/// Partition and offset of one published message. In a commit, the offset
/// is the next one to read in the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// Partition number (always 0 for queues).
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

/// `{"offsets": [...]}`: the response to publish and send, and the body of
/// a commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offsets {
    /// One entry per message, in request order.
    pub offsets: Vec<PartitionOffset>,
}

/// A delivered message: fetched, pulled, received or pushed on a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Delivery id, for queue deliveries only; `ack` and `nack` take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// How many times the queue has handed out this message, this time
    /// included; for queue deliveries only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_count: Option<u32>,
    /// Partition number.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Time the broker stored the message, in milliseconds since the Unix
    /// epoch.
    pub timestamp: i64,
    /// User who published the message, as the broker authenticated them.
    pub producer: String,
    /// Partitioning key.
    #[serde(default)]
    pub key: Option<String>,
    /// Routing key.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// String headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON value, `Some(Value::Null)` for a `null` value.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Value>,
    /// Binary value, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

impl Message {
    /// Decodes `value_b64`; `None` when the message has a JSON value.
    ///
    /// # Errors
    ///
    /// `value_b64` is not valid base64.
    pub fn binary_value(&self) -> Option<Result<Vec<u8>, base64::DecodeError>> {
        self.value_b64.as_ref().map(|text| BASE64.decode(text))
    }
}

/// Reads a present field as `Some` even when it is JSON `null`, so that a
/// `null` value differs from a missing one.
fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Query parameters of a fetch by offset. Fields left `None` take the
/// broker's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchParams {
    /// First offset to read; the broker starts at the partition's first
    /// retained offset when it is `None`.
    pub offset: Option<u64>,
    /// Maximum number of messages returned.
    pub max_messages: Option<u32>,
    /// Maximum bytes of messages returned.
    pub max_bytes: Option<u64>,
    /// How long to wait in milliseconds for a message when none is there yet.
    pub wait_ms: Option<u64>,
}

/// The response to a fetch by offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    /// Messages from the requested offset on, in offset order.
    pub messages: Vec<Message>,
    /// Offset to fetch next.
    pub next_offset: u64,
    /// Offset after the last message consumers may read.
    pub high_watermark: u64,
}

/// `{"messages": [...]}`: the response to pull and receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Messages {
    pub messages: Vec<Message>,
}

/// Body of `POST /v1/topics/{t}/subscriptions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSubscription {
    /// Subscription name, unique within the topic.
    pub name: String,
    /// Routing key pattern; only matching messages are delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Start position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartPosition>,
}

impl CreateSubscription {
    /// Creates a request for a subscription named `name` with the broker's
    /// defaults.
    pub fn named(name: impl Into<String>) -> CreateSubscription {
        CreateSubscription {
            name: name.into(),
            pattern: None,
            start: None,
        }
    }
}

/// A subscription (consumer group) of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Subscription name.
    pub name: String,
    /// Topic it reads.
    pub topic: String,
    /// User who created it.
    pub owner: String,
    /// Routing key pattern, if any.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Start position it was created with.
    pub start: StartPosition,
    /// Per partition, the committed offset: the next one to deliver.
    #[serde(default)]
    pub committed: Vec<PartitionOffset>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// Query parameters of a subscription pull.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullParams {
    /// Maximum number of messages returned.
    pub max_messages: Option<u32>,
    /// How long to wait in milliseconds for a message when none is there yet.
    pub wait_ms: Option<u64>,
}

/// Body of `POST /v1/queues`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateQueue {
    /// Queue name, `[A-Za-z0-9._-]{1,200}`.
    pub name: String,
    /// Visibility to other users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// How long in milliseconds a received message stays leased before the
    /// queue hands it out again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_timeout_ms: Option<u64>,
    /// Deliveries after which a message goes to the dead-letter queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    /// Queue that receives messages delivered `max_deliveries` times,
    /// expired ones, and those nacked without requeue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue: Option<String>,
    /// Default time to live of messages, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_ttl_ms: Option<u64>,
}

impl CreateQueue {
    /// Creates a request for a queue named `name` with the broker's
    /// defaults.
    pub fn named(name: impl Into<String>) -> CreateQueue {
        CreateQueue {
            name: name.into(),
            ..CreateQueue::default()
        }
    }
}

/// A queue, as describe, list and create return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// Queue name.
    pub name: String,
    /// User who created the queue.
    pub owner: String,
    /// Visibility to other users.
    pub access: Access,
    /// Messages waiting to be received.
    pub depth: u64,
    /// Messages received and not yet acked, nacked or expired.
    pub in_flight: u64,
    /// First offset of the queue's log still retained.
    #[serde(default)]
    pub start_offset: u64,
    /// Offset the next sent message will get.
    #[serde(default)]
    pub end_offset: u64,
    /// Default lease length of received messages, in milliseconds.
    pub visibility_timeout_ms: u64,
    /// Deliveries after which a message is dead-lettered.
    #[serde(default)]
    pub max_deliveries: Option<u32>,
    /// Queue that receives dead letters.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// Default time to live of messages, in milliseconds.
    #[serde(default)]
    pub message_ttl_ms: Option<u64>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// Body of `POST /v1/queues/{q}/receive`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveParams {
    /// Maximum number of messages leased (the broker's default is 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u32>,
    /// How long to wait in milliseconds for a message when none is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Lease length in milliseconds for these messages, instead of the
    /// queue's visibility timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_timeout_ms: Option<u64>,
}

/// Body of `ack` and `nack`.
#[derive(Debug, Serialize)]
pub(crate) struct SettleRequest<'a> {
    pub ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeue: Option<bool>,
}

/// A delivery id that could not be acked or nacked, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedId {
    /// The delivery id as given.
    pub id: String,
    /// Reason it was not settled, e.g. its lease expired.
    pub reason: String,
}

/// The response to an ack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    /// Ids acked: those messages are gone from the queue.
    #[serde(default)]
    pub acked: Vec<String>,
    /// Ids not acked.
    #[serde(default)]
    pub failed: Vec<FailedId>,
}

/// The response to a nack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nacked {
    /// Ids released: requeued, or not to be delivered again when `requeue`
    /// was false.
    #[serde(default)]
    pub nacked: Vec<String>,
    /// Ids not nacked.
    #[serde(default)]
    pub failed: Vec<FailedId>,
}

/// Body of the grant routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GrantRequest<'a> {
    pub user: &'a str,
    pub permission: Permission,
}

/// The response to `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the broker serves requests.
    pub status: String,
}

/// The response to `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Every known broker.
    pub brokers: Vec<BrokerInfo>,
    /// Id of the controller broker.
    #[serde(default)]
    pub controller: Option<u64>,
    /// Leader and replicas of every partition the caller can see.
    #[serde(default)]
    pub partitions: Vec<ClusterPartition>,
    /// In a cluster: the ZooKeeper state of every resource, as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<serde_json::Value>,
}

/// One broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Broker id.
    pub id: u64,
    /// REST address, host:port.
    #[serde(default)]
    pub rest: Option<String>,
    /// gRPC address between brokers, host:port.
    #[serde(default)]
    pub grpc: Option<String>,
    /// Whether the broker is a live cluster member.
    pub alive: bool,
}

/// Leader and replicas of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Broker id of the leader; `None` while no leader is elected.
    pub leader: Option<u64>,
    /// Leader epoch.
    pub leader_epoch: Option<u64>,
    /// Ids of the in-sync replicas.
    #[serde(default)]
    pub isr: Option<Vec<u64>>,
    /// Offset after the last message consumers may read; `None` when the
    /// leader did not answer.
    pub high_watermark: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TopicList {
    pub topics: Vec<Topic>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueueList {
    pub queues: Vec<Queue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_value_differs_from_missing() {
        let null: Message = serde_json::from_str(
            r#"{"partition":0,"offset":1,"timestamp":5,"producer":"al","value":null}"#,
        )
        .unwrap();
        assert_eq!(null.value, Some(Value::Null));

        let binary: Message = serde_json::from_str(
            r#"{"partition":0,"offset":1,"timestamp":5,"producer":"al","value_b64":"AP8="}"#,
        )
        .unwrap();
        assert_eq!(binary.value, None);
        assert_eq!(binary.binary_value().unwrap().unwrap(), vec![0, 255]);
    }

    #[test]
    fn message_round_trips() {
        let text = r#"{"id":"0-1","delivery_count":2,"partition":0,"offset":7,"timestamp":9,"producer":"al","key":null,"routing_key":"a.b","headers":{"h":"v"},"value":{"x":[1]}}"#;
        let message: Message = serde_json::from_str(text).unwrap();
        let again: Value = serde_json::to_value(&message).unwrap();
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(again, original);
    }

    #[test]
    fn new_message_leaves_out_unset_fields() {
        let message = NewMessage::json(Value::Null).with_header("h", "v");
        let json = serde_json::to_string(&message).unwrap();
        assert_eq!(json, r#"{"value":null,"headers":{"h":"v"}}"#);

        let binary = serde_json::to_string(&NewMessage::binary([0u8, 255])).unwrap();
        assert_eq!(binary, r#"{"value_b64":"AP8="}"#);
    }

    #[test]
    fn create_topic_sends_only_set_fields() {
        let request = CreateTopic {
            partitions: Some(3),
            ..CreateTopic::named("orders")
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(json, r#"{"name":"orders","partitions":3}"#);
    }
}
