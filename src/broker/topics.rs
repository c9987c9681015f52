//! Topic operations: create, list, describe, delete, publish and fetch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::broker::error::{BrokerError, Result};
use crate::broker::idempotence;
use crate::broker::message::{Message, NewMessage, PublishRequest, PublishResult, MAX_TTL_MS};
use crate::broker::topic::Topic;
use crate::broker::users::Principal;
use crate::broker::{now_ms, read_lock, write_lock, Broker};
use crate::log::ProducerInfo;
use crate::meta::names::validate_name;
use crate::meta::{Access, Catalog, Cleanup, MetaEvent, Permission, TopicSpec};

/// Maximum number of partitions of one topic. Each partition holds three
/// file descriptors and allocates its first 64 KiB at once.
pub const MAX_PARTITIONS: u32 = 256;

/// Largest replication factor a topic or queue may ask for.
pub const MAX_REPLICATION_FACTOR: u32 = 7;

/// Smallest `segment_bytes` a client may ask for. Every sealed segment
/// keeps a memory map, and Linux allows about 65,000 per process by
/// default (`vm.max_map_count`), so tiny segments would let one topic
/// exhaust them.
pub const MIN_TOPIC_SEGMENT_BYTES: u64 = 1 << 20;

/// The settings a client gives to create a topic.
#[derive(Debug, Clone, Default)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Public or private.
    pub access: Access,
    /// Number of partitions, default 1.
    pub partitions: Option<u32>,
    /// Copies of each partition, default 1.
    pub replication_factor: Option<u32>,
    /// Retention by age, in ms.
    pub retention_ms: Option<u64>,
    /// Retention by size, in bytes.
    pub retention_bytes: Option<u64>,
    /// Segment size, in bytes.
    pub segment_bytes: Option<u64>,
    /// Cleanup policy.
    pub cleanup: Option<Cleanup>,
    /// Default message time to live, in ms.
    pub message_ttl_ms: Option<u64>,
}

/// A topic as shown to clients.
#[derive(Debug, Clone)]
pub struct TopicView {
    /// Settings.
    pub spec: TopicSpec,
    /// Offsets per partition.
    pub partitions: Vec<PartitionView>,
    /// Names of its subscriptions.
    pub subscriptions: Vec<String>,
}

/// Offsets of one partition.
#[derive(Debug, Clone, Copy)]
pub struct PartitionView {
    /// Partition number.
    pub partition: u32,
    /// First retained offset.
    pub start_offset: u64,
    /// First offset not yet readable (the high watermark).
    pub end_offset: u64,
}

/// The result of a fetch by offset.
#[derive(Debug, Clone)]
pub struct FetchResult {
    /// Messages in offset order.
    pub messages: Vec<Message>,
    /// Offset to fetch next.
    pub next_offset: u64,
    /// First offset not yet readable.
    pub high_watermark: u64,
}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Maximum number of messages.
    pub max_messages: usize,
    /// Approximate maximum bytes of stored batches to read; at least one
    /// message is returned if one is readable.
    pub max_bytes: usize,
    /// How long to wait for a message when none is readable yet.
    pub wait: Duration,
}

impl Broker {
    /// Creates a topic owned by `principal`.
    pub async fn create_topic(
        &self,
        principal: &Principal,
        request: CreateTopic,
    ) -> Result<TopicView> {
        validate_name(&request.name, false)
            .map_err(|message| BrokerError::invalid("name", message))?;
        let partitions = request.partitions.unwrap_or(1);
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(BrokerError::invalid(
                "partitions",
                format!("{partitions} is outside 1..={MAX_PARTITIONS}"),
            ));
        }
        let replication_factor = self.check_replication_factor(request.replication_factor)?;
        if let Some(segment_bytes) = request.segment_bytes {
            if !(MIN_TOPIC_SEGMENT_BYTES..=u32::MAX as u64).contains(&segment_bytes) {
                return Err(BrokerError::invalid(
                    "segment_bytes",
                    format!(
                        "{segment_bytes} is outside {MIN_TOPIC_SEGMENT_BYTES}..={}",
                        u32::MAX
                    ),
                ));
            }
        }
        for (field, value) in [
            ("retention_ms", request.retention_ms),
            ("retention_bytes", request.retention_bytes),
        ] {
            if value == Some(0) || value.is_some_and(|value| value > i64::MAX as u64) {
                return Err(BrokerError::invalid(
                    field,
                    format!("{} is outside 1..={}", value.unwrap_or(0), i64::MAX),
                ));
            }
        }
        check_ttl("message_ttl_ms", request.message_ttl_ms)?;

        let topic = self
            .commit_meta(
                |id| {
                    MetaEvent::TopicCreated(TopicSpec {
                        id,
                        name: request.name.clone(),
                        owner: principal.username.clone(),
                        access: request.access,
                        partitions,
                        replication_factor,
                        retention_ms: request.retention_ms,
                        retention_bytes: request.retention_bytes,
                        segment_bytes: request.segment_bytes,
                        cleanup: request.cleanup.unwrap_or_default(),
                        message_ttl_ms: request.message_ttl_ms,
                        created_ms: now_ms(),
                    })
                },
                |event| {
                    let MetaEvent::TopicCreated(spec) = event else {
                        unreachable!("the closure above makes a TopicCreated event")
                    };
                    if self.cluster_hooks().is_some() {
                        // The leader the cluster picks opens it.
                        return Ok(Err(spec.clone()));
                    }
                    let dir = self.topic_dir(&spec.name, spec.id);
                    Topic::open(&self.logs, &self.config, &dir, spec.clone())
                        .inspect_err(|_| {
                            let _ = std::fs::remove_dir_all(&dir);
                        })
                        .map(Ok)
                },
            )
            .await?;
        let topic = match topic {
            Ok(topic) => Arc::new(topic),
            Err(spec) => {
                if let Some(cluster) = self.cluster_hooks() {
                    cluster
                        .wait_for_leader(crate::cluster::state::resource_key("topic", spec.id))
                        .await?;
                }
                info!(topic = %spec.name, id = spec.id, partitions, owner = %principal.username, "topic created");
                return Ok(self.remote_topic_view(&spec));
            }
        };
        write_lock(&self.topics).insert(topic.spec.name.clone(), Arc::clone(&topic));
        info!(topic = %topic.spec.name, id = topic.spec.id, partitions, owner = %principal.username, "topic created");
        Ok(self.topic_view(&topic))
    }

    /// Checks a requested replication factor against the cluster size;
    /// returns the factor to store (the broker default when absent).
    fn check_replication_factor(&self, requested: Option<u32>) -> Result<u32> {
        let Some(cluster) = &self.config.cluster else {
            let factor = requested.unwrap_or(1);
            if factor != 1 {
                return Err(BrokerError::invalid(
                    "replication_factor",
                    format!("is {factor}, but a single broker takes only 1"),
                ));
            }
            return Ok(1);
        };
        let factor = requested.unwrap_or(cluster.replication_factor);
        if !(1..=MAX_REPLICATION_FACTOR).contains(&factor) {
            return Err(BrokerError::invalid(
                "replication_factor",
                format!("{factor} is outside 1..={MAX_REPLICATION_FACTOR}"),
            ));
        }
        Ok(factor)
    }

    /// Topics visible to `principal`, by name.
    pub fn list_topics(&self, principal: &Principal) -> Vec<TopicView> {
        let visible: Vec<String> = read_lock(&self.catalog)
            .topics()
            .filter(|resource| resource.is_visible_to(&principal.username))
            .map(|resource| resource.spec.name.clone())
            .collect();
        let catalog = read_lock(&self.catalog);
        let topics = read_lock(&self.topics);
        visible
            .iter()
            .filter_map(|name| match topics.get(name) {
                Some(topic) => Some(self.topic_view_with(topic, &catalog)),
                None => catalog
                    .topic(name)
                    .map(|resource| remote_view(&resource.spec, &catalog)),
            })
            .collect()
    }

    /// The view of a topic another broker leads: settings and
    /// subscriptions, with offsets that only its leader knows left at 0.
    fn remote_topic_view(&self, spec: &TopicSpec) -> TopicView {
        remote_view(spec, &read_lock(&self.catalog))
    }

    /// Describes a topic visible to `principal`.
    pub fn describe_topic(&self, principal: &Principal, name: &str) -> Result<TopicView> {
        let topic = self.open_topic(principal, name, None)?;
        Ok(self.topic_view(&topic))
    }

    /// Deletes a topic with its messages and subscriptions; owner only.
    pub async fn delete_topic(&self, principal: &Principal, name: &str) -> Result<()> {
        let topic = self.open_topic(principal, name, None)?;
        if topic.spec.owner != principal.username {
            return Err(BrokerError::Forbidden(format!(
                "only the owner `{}` may delete topic `{name}`",
                topic.spec.owner
            )));
        }
        let id = topic.spec.id;
        self.commit_meta(
            |_| MetaEvent::TopicDeleted {
                name: name.to_string(),
                id,
            },
            |_| Ok(()),
        )
        .await?;
        write_lock(&self.topics).remove(name);
        write_lock(&self.groups).retain(|(topic, _), _| topic != name);
        // Long polls and streams wake up, find the topic gone and end.
        topic.appended.notify_waiters();
        if self.cluster_hooks().is_some() {
            // Followers stop replicating a deleted topic, so a publish that
            // raced the deletion would wait for them in vain.
            for log in topic.logs() {
                log.fence();
            }
        }
        // In a cluster the brokers remove the files once their catalog
        // shows the deletion.
        if self.cluster_hooks().is_none() {
            let dir = self.topic_dir(name, id);
            tokio::task::spawn_blocking(move || {
                if let Err(err) = std::fs::remove_dir_all(&dir) {
                    // The next start removes what is left.
                    warn!(dir = %dir.display(), error = %err, "failed to remove deleted topic's files");
                }
            });
        }
        info!(topic = %name, id, "topic deleted");
        Ok(())
    }

    /// Publishes the request's messages to topic `name`; returns (partition,
    /// offset) per message in request order. Each partition's messages are
    /// appended as one batch.
    ///
    /// A request that spans partitions is not atomic: if one partition's
    /// append fails, the others may already hold their messages, and the
    /// client gets the error. An idempotent request goes to one partition
    /// as one batch, so it is stored whole or not at all.
    pub async fn publish(
        &self,
        principal: &Principal,
        name: &str,
        request: PublishRequest,
    ) -> Result<PublishResult> {
        let topic = self.open_topic(principal, name, Some(Permission::Publish))?;
        self.check_messages(&request.messages, topic.spec.cleanup == Cleanup::Compact)?;
        let producer = Bytes::from(principal.username.clone());
        let timestamp = now_ms();
        let default_ttl = topic.spec.message_ttl_ms;
        let acks = request.acks;
        if let Some(idempotent) = &request.producer {
            idempotence::check_request(idempotent, request.messages.len())?;
            let hash = idempotence::client_producer(&principal.username, &idempotent.producer_id);
            let partition = idempotent_partition(&topic, &request.messages, hash)?;
            let count = request.messages.len() as u64;
            let records = request
                .messages
                .into_iter()
                .map(|message| message.into_record(&producer, timestamp, default_ttl))
                .collect();
            let stored = idempotence::append_once(
                &topic.partitions,
                partition as usize,
                records,
                hash,
                idempotent.first_sequence,
                acks,
                idempotence::Retry::Exact,
                &topic.idempotence,
            )
            .await?;
            return Ok(PublishResult {
                offsets: (stored.base_offset..stored.base_offset + count)
                    .map(|offset| (stored.partition as u32, offset))
                    .collect(),
                duplicate: stored.duplicate,
            });
        }

        let request_partition = topic.next_request_partition();
        let mut groups: Vec<Vec<(usize, NewMessage)>> = vec![Vec::new(); topic.partitions.len()];
        for (index, message) in request.messages.into_iter().enumerate() {
            let partition = topic.partition_for(message.key.as_deref(), request_partition);
            groups[partition as usize].push((index, message));
        }

        let mut offsets = vec![(0u32, 0u64); groups.iter().map(Vec::len).sum()];
        let appends = groups
            .into_iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(partition, group)| {
                let log = Arc::clone(&topic.partitions[partition]);
                let producer = producer.clone();
                async move {
                    let indexes: Vec<usize> = group.iter().map(|(index, _)| *index).collect();
                    let records = group
                        .into_iter()
                        .map(|(_, message)| message.into_record(&producer, timestamp, default_ttl))
                        .collect();
                    let info = log
                        .append_with(records, ProducerInfo::default(), acks)
                        .await?;
                    Ok::<_, BrokerError>((partition as u32, info.base_offset, indexes))
                }
            });
        for result in futures_util::future::join_all(appends).await {
            let (partition, base_offset, indexes) = result?;
            for (position, index) in indexes.into_iter().enumerate() {
                offsets[index] = (partition, base_offset + position as u64);
            }
        }
        Ok(PublishResult {
            offsets,
            duplicate: false,
        })
    }

    /// Fetches messages of one partition from `offset`, waiting up to
    /// `limits.wait` when none is readable yet.
    pub async fn fetch(
        &self,
        principal: &Principal,
        name: &str,
        partition: u32,
        offset: Option<u64>,
        limits: FetchLimits,
    ) -> Result<FetchResult> {
        let topic = self.open_topic(principal, name, Some(Permission::Consume))?;
        let log = partition_log(&topic, partition)?;
        let offset = offset.unwrap_or_else(|| log.log_start_offset());
        let deadline = Instant::now() + limits.wait;
        loop {
            let notified = topic.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            self.recheck_topic(principal, &topic, Permission::Consume)?;
            let high_watermark = log.high_watermark();
            let log_start_offset = log.log_start_offset();
            if offset < log_start_offset || offset > high_watermark {
                return Err(BrokerError::OffsetOutOfRange {
                    partition,
                    offset,
                    log_start_offset,
                    high_watermark,
                });
            }
            if offset < high_watermark || self.is_shutting_down() {
                let (messages, next_offset) =
                    read_messages(log, partition, offset, limits, |_| true)?;
                return Ok(FetchResult {
                    messages,
                    next_offset,
                    high_watermark,
                });
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(FetchResult { messages: Vec::new(), next_offset: offset, high_watermark });
                }
            }
        }
    }

    /// Finds the first offset of `partition` whose message was stored at or
    /// after `timestamp_ms`, below the high watermark. Returns it with its
    /// timestamp, or the high watermark and `None` when no message is that
    /// recent.
    pub fn offset_for_timestamp(
        &self,
        principal: &Principal,
        name: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<(u64, Option<i64>)> {
        let topic = self.open_topic(principal, name, Some(Permission::Consume))?;
        let log = partition_log(&topic, partition)?;
        let high_watermark = log.high_watermark();
        let found = log.offset_for_timestamp(timestamp_ms)?;
        Ok(match found {
            Some(found) => (found.offset, Some(found.timestamp_ms)),
            None => (high_watermark, None),
        })
    }

    /// Checks message sizes against the configured maximum.
    ///
    /// A message for a compacted log (`compacted`) needs a key, and only
    /// such a message may be a tombstone.
    pub(crate) fn check_messages(&self, messages: &[NewMessage], compacted: bool) -> Result<()> {
        if messages.is_empty() {
            return Err(BrokerError::invalid(
                "messages",
                "must contain at least one message",
            ));
        }
        let max = self.config.max_message_bytes;
        for (index, message) in messages.iter().enumerate() {
            if compacted && message.key.is_none() {
                return Err(BrokerError::invalid(
                    format!("messages[{index}].key"),
                    "is required: the topic is compacted, which keeps the latest message per key",
                ));
            }
            if !compacted && message.payload == crate::broker::Payload::Tombstone {
                return Err(BrokerError::invalid(
                    format!("messages[{index}].tombstone"),
                    "only a topic with cleanup compact takes tombstones",
                ));
            }
            if message.value_len() > max {
                return Err(BrokerError::TooLarge {
                    what: format!("messages[{index}].value"),
                    size: message.value_len(),
                    max,
                });
            }
        }
        Ok(())
    }

    /// The topic `name` if `principal` may see it and, when given, holds
    /// `permission` on it.
    pub(crate) fn open_topic(
        &self,
        principal: &Principal,
        name: &str,
        permission: Option<Permission>,
    ) -> Result<Arc<Topic>> {
        {
            let catalog = read_lock(&self.catalog);
            Broker::authorize(
                catalog.topic(name),
                "topic",
                name,
                &principal.username,
                permission,
            )?;
        }
        read_lock(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound {
                kind: "topic",
                name: name.to_string(),
            })
    }

    fn topic_view(&self, topic: &Topic) -> TopicView {
        self.topic_view_with(topic, &read_lock(&self.catalog))
    }

    fn topic_view_with(&self, topic: &Topic, catalog: &Catalog) -> TopicView {
        let partitions = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(partition, log)| PartitionView {
                partition: partition as u32,
                start_offset: log.log_start_offset(),
                end_offset: log.high_watermark(),
            })
            .collect();
        let subscriptions = catalog
            .subscriptions_of(&topic.spec.name)
            .map(|spec| spec.name.clone())
            .collect();
        TopicView {
            spec: topic.spec.clone(),
            partitions,
            subscriptions,
        }
    }
}

// NOTE: partition offsets of a topic led by another broker are shown as 0;
// describing the topic (routed to its leader) returns them exactly.
fn remote_view(spec: &TopicSpec, catalog: &Catalog) -> TopicView {
    let partitions = (0..spec.partitions)
        .map(|partition| PartitionView {
            partition,
            start_offset: 0,
            end_offset: 0,
        })
        .collect();
    TopicView {
        spec: spec.clone(),
        partitions,
        subscriptions: catalog
            .subscriptions_of(&spec.name)
            .map(|subscription| subscription.name.clone())
            .collect(),
    }
}

/// Returns the log of `partition` of `topic`, or an error naming the
/// partitions.
fn partition_log(topic: &Topic, partition: u32) -> Result<&Arc<crate::broker::DurableLog>> {
    topic.partitions.get(partition as usize).ok_or_else(|| {
        BrokerError::invalid(
            "partition",
            format!(
                "topic `{}` has partitions 0 to {}",
                topic.spec.name,
                topic.partitions.len() - 1
            ),
        )
    })
}

/// Maximum number of reads one call of [`read_messages`] makes while every
/// message it finds is skipped.
const MAX_SKIPPING_READS: usize = 64;

/// Reads up to `limits.max_messages` live messages from `offset` on that
/// `wanted` accepts. Expired messages (by the broker's clock now) and
/// unwanted ones are skipped. Returns the messages and the offset after the
/// last record examined, which is where the next read starts.
pub(crate) fn read_messages(
    log: &crate::broker::DurableLog,
    partition: u32,
    offset: u64,
    limits: FetchLimits,
    wanted: impl Fn(&Message) -> bool,
) -> Result<(Vec<Message>, u64)> {
    let now = now_ms();
    let high_watermark = log.high_watermark();
    let mut messages = Vec::new();
    let mut next = offset;
    for _ in 0..MAX_SKIPPING_READS {
        if !messages.is_empty() || next >= high_watermark {
            break;
        }
        let batches = log.read(next, limits.max_bytes)?;
        let before = next;
        // A compacted batch may end after its last record, or hold none.
        let batches_end = batches.last().map(|batch| batch.header.next_offset());
        let records = batches
            .into_iter()
            .flat_map(|batch| batch.records)
            .filter(|record| record.offset >= before);
        let mut full = false;
        for record in records {
            if messages.len() >= limits.max_messages {
                full = true;
                break;
            }
            next = record.offset + 1;
            let message = Message::from_record(partition, record);
            if !message.is_expired(now) && wanted(&message) {
                messages.push(message);
            }
        }
        if !full {
            next = next.max(batches_end.unwrap_or(next));
        }
        if next == before {
            break;
        }
    }
    Ok((messages, next))
}

/// The one partition of an idempotent request: the partition of its keys,
/// which must agree, or for keyless messages one chosen by the producer
/// id, so a producer's keyless messages stay in order.
fn idempotent_partition(topic: &Topic, messages: &[NewMessage], producer: i64) -> Result<u32> {
    let by_producer = (producer as u64 % topic.partitions.len() as u64) as u32;
    let mut chosen: Option<(usize, u32)> = None;
    for (index, message) in messages.iter().enumerate() {
        let Some(key) = message.key.as_deref() else {
            continue;
        };
        let partition = topic.partition_for(Some(key), by_producer);
        match chosen {
            None => chosen = Some((index, partition)),
            Some((first, other)) if other != partition => {
                return Err(BrokerError::invalid(
                    format!("messages[{index}].key"),
                    format!(
                        "maps to partition {partition} but messages[{first}].key to partition {other}; \
                         an idempotent request is stored in one partition, so send keys of different partitions in separate requests"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(chosen.map_or(by_producer, |(_, partition)| partition))
}

/// Checks a time to live: when given, 1 ms to [`MAX_TTL_MS`].
pub(crate) fn check_ttl(field: &str, ttl_ms: Option<u64>) -> Result<()> {
    match ttl_ms {
        Some(ttl_ms) if !(1..=MAX_TTL_MS).contains(&ttl_ms) => Err(BrokerError::invalid(
            field,
            format!("{ttl_ms} is outside 1..={MAX_TTL_MS} ms"),
        )),
        _ => Ok(()),
    }
}
