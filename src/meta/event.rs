//! The metadata events stored in `__meta`, one JSON document per record.
//!
//! Events are facts that already passed validation; the catalog applies them
//! in log order. New fields must be optional (`#[serde(default)]`) so old
//! logs keep decoding.

use serde::{Deserialize, Serialize};

use crate::auth::PasswordHash;

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetaEvent {
    /// A user account was created.
    UserRegistered {
        /// Unique user name.
        username: String,
        /// Hash of the password; the password itself is never stored.
        password: PasswordHash,
        /// Creation time, ms since the Unix epoch.
        created_ms: i64,
    },
    /// A token was logged out before its expiry.
    TokenRevoked {
        /// The token's `jti` claim.
        token_id: String,
        /// The token's expiry, seconds since the Unix epoch; after it the
        /// revocation can be forgotten.
        expires_at: u64,
    },
    /// A topic was created.
    TopicCreated(TopicSpec),
    /// A topic and its messages were deleted.
    TopicDeleted {
        /// Topic name.
        name: String,
        /// Id of the deleted incarnation.
        id: u64,
    },
    /// A queue was created.
    QueueCreated(QueueSpec),
    /// A queue and its messages were deleted.
    QueueDeleted {
        /// Queue name.
        name: String,
        /// Id of the deleted incarnation.
        id: u64,
    },
    /// The owner granted a permission on a private resource.
    GrantAdded {
        /// Topic or queue.
        kind: ResourceKind,
        /// Resource name.
        name: String,
        /// User receiving the permission.
        user: String,
        /// Permission granted.
        permission: Permission,
    },
    /// The owner revoked a permission.
    GrantRevoked {
        /// Topic or queue.
        kind: ResourceKind,
        /// Resource name.
        name: String,
        /// User losing the permission.
        user: String,
        /// Permission revoked.
        permission: Permission,
    },
    /// A subscription (consumer group) was created on a topic.
    SubscriptionCreated(SubscriptionSpec),
    /// A subscription was deleted.
    SubscriptionDeleted {
        /// Topic name.
        topic: String,
        /// Subscription name.
        name: String,
    },
    /// A queue was bound to a topic with a routing-key pattern.
    BindingAdded(BindingSpec),
    /// A binding was removed.
    BindingRemoved {
        /// Id of the binding.
        id: u64,
    },
}

impl MetaEvent {
    /// Returns the event with `id` as the id of the resource or binding it
    /// creates.
    /// A resource's id is the `__meta` offset of its creation event, which
    /// only the `__meta` leader knows when it appends the event; other
    /// events are returned unchanged.
    pub fn with_id(mut self, id: u64) -> MetaEvent {
        match &mut self {
            MetaEvent::TopicCreated(spec) => spec.id = id,
            MetaEvent::QueueCreated(spec) => spec.id = id,
            MetaEvent::BindingAdded(spec) => spec.id = id,
            _ => {}
        }
        self
    }
}

/// Whether other users can see a resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Every user may publish and consume.
    #[default]
    Public,
    /// Only the owner and users with grants; for others it does not exist.
    Private,
}

/// Topic or queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A topic.
    Topic,
    /// A queue.
    Queue,
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Publish to a topic or send to a queue.
    Publish,
    /// Fetch, subscribe to or receive from the resource.
    Consume,
}

/// Cleanup policy of a topic's partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    /// Old segments are deleted by retention.
    #[default]
    Delete,
    /// Only the latest record per key is kept.
    Compact,
}

/// Where a new subscription starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// At the first retained message.
    Earliest,
    /// After the last message present at creation.
    #[default]
    Latest,
}

/// A topic's settings, fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Unique id of this incarnation: the `__meta` offset of its creation.
    pub id: u64,
    /// Topic name.
    pub name: String,
    /// User who created it.
    pub owner: String,
    /// Public or private.
    pub access: Access,
    /// Number of partitions.
    pub partitions: u32,
    /// Copies of each partition.
    pub replication_factor: u32,
    /// Retention by age, in ms.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, in bytes.
    pub retention_bytes: Option<u64>,
    /// Segment size of the partitions, in bytes.
    pub segment_bytes: Option<u64>,
    /// Cleanup policy.
    pub cleanup: Cleanup,
    /// Default time to live of messages, in ms.
    pub message_ttl_ms: Option<u64>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// A queue's settings, fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Unique id of this incarnation: the `__meta` offset of its creation.
    pub id: u64,
    /// Queue name.
    pub name: String,
    /// User who created it.
    pub owner: String,
    /// Public or private.
    pub access: Access,
    /// How long a received message stays leased, in ms.
    pub visibility_timeout_ms: u64,
    /// Deliveries after which a message goes to the dead-letter queue.
    pub max_deliveries: Option<u32>,
    /// Name of the dead-letter queue.
    pub dead_letter_queue: Option<String>,
    /// Default time to live of messages, in ms.
    pub message_ttl_ms: Option<u64>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// A subscription (consumer group) on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    /// Topic name.
    pub topic: String,
    /// Id of the topic incarnation it belongs to.
    pub topic_id: u64,
    /// Subscription name, unique per topic.
    pub name: String,
    /// User who created it.
    pub owner: String,
    /// Routing-key pattern filter, if any.
    pub pattern: Option<String>,
    /// Where it started.
    pub start: StartPosition,
    /// First offset to read, indexed by partition, fixed at creation.
    pub start_offsets: Vec<u64>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// A binding: messages published to `topic` whose routing key matches
/// `pattern` are also sent to `queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingSpec {
    /// Unique id: the `__meta` offset of its creation.
    pub id: u64,
    /// Queue the messages go to.
    pub queue: String,
    /// Id of that queue's incarnation.
    pub queue_id: u64,
    /// Topic the messages come from.
    pub topic: String,
    /// Id of that topic's incarnation.
    pub topic_id: u64,
    /// Routing-key pattern (`*` one word, `#` zero or more words).
    pub pattern: String,
    /// User who created it.
    pub owner: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}
