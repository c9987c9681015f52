//! Subscriptions (consumer groups) on topics: create, list, delete, pull
//! with long poll, and commit.
//!
//! A group has a committed offset per partition, stored in the topic's
//! offsets log, and
//! an in-memory position: the next offset a pull hands out. Pulls advance
//! the position; commits make progress durable. After a restart the
//! position starts again at the committed offset, so messages pulled but
//! not committed are delivered again (at-least-once).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::broker::error::{BrokerError, Result};
use crate::broker::message::Message;
use crate::broker::offsets::OffsetKey;
use crate::broker::queues::check_max_messages;
use crate::broker::routing::Pattern;
use crate::broker::topic::Topic;
use crate::broker::topics::{read_messages, FetchLimits};
use crate::broker::users::Principal;
use crate::broker::{now_ms, read_lock, write_lock, Broker};
use crate::meta::names::validate_name;
use crate::meta::{MetaEvent, Permission, StartPosition, SubscriptionSpec};

/// Takes in a row that one pull makes without waiting while each skips
/// every message it reads.
const MAX_SKIPPING_TAKES: usize = 1000;

/// Bytes read per partition and pull step.
const PULL_READ_BYTES: usize = 1 << 20;

/// A subscription as shown to clients.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    /// Settings.
    pub spec: SubscriptionSpec,
    /// Committed offset per partition (next offset to read).
    pub committed: BTreeMap<u32, u64>,
}

/// The runtime state of one subscription.
pub struct Group {
    /// The topic it reads.
    pub topic: Arc<Topic>,
    /// Settings.
    pub spec: SubscriptionSpec,
    /// Only messages whose routing key matches are delivered.
    filter: Option<Pattern>,
    positions: Mutex<Vec<u64>>,
    /// Partition a pull starts with, rotating so no partition starves.
    next_start: AtomicUsize,
}

impl Group {
    /// Hands out up to `max` messages from the positions on, across
    /// partitions, and advances the positions past them.
    pub fn take(&self, max: usize) -> Result<Vec<Message>> {
        let count = self.topic.partitions.len();
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % count;
        let mut positions = self.lock_positions();
        let mut messages = Vec::new();
        for step in 0..count {
            if messages.len() >= max {
                break;
            }
            let partition = (start + step) % count;
            let log = &self.topic.partitions[partition];
            let position = positions[partition].max(log.log_start_offset());
            if position >= log.high_watermark() {
                continue;
            }
            let limits = FetchLimits {
                max_messages: max - messages.len(),
                max_bytes: PULL_READ_BYTES,
                wait: Duration::ZERO,
            };
            let (read, next) = read_messages(log, partition as u32, position, limits, |message| {
                self.filter.as_ref().is_none_or(|pattern| {
                    pattern.matches(message.routing_key.as_deref().unwrap_or(""))
                })
            })?;
            positions[partition] = next;
            messages.extend(read);
        }
        Ok(messages)
    }

    /// Moves the position of `partition` back to `offset` if it is past it,
    /// so messages handed out but never acknowledged are delivered again.
    pub fn rewind(&self, partition: u32, offset: u64) {
        if let Some(position) = self.lock_positions().get_mut(partition as usize) {
            *position = (*position).min(offset);
        }
    }

    /// Whether a pull would find a message now.
    pub fn has_messages(&self) -> bool {
        let positions = self.lock_positions();
        self.topic
            .partitions
            .iter()
            .zip(positions.iter())
            .any(|(log, position)| *position < log.high_watermark())
    }

    fn lock_positions(&self) -> MutexGuard<'_, Vec<u64>> {
        self.positions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Broker {
    /// Creates subscription `name` on `topic`.
    pub async fn create_subscription(
        &self,
        principal: &Principal,
        topic: &str,
        name: &str,
        pattern: Option<String>,
        start: StartPosition,
    ) -> Result<SubscriptionView> {
        let topic = self.open_topic(principal, topic, Some(Permission::Consume))?;
        validate_name(name, false).map_err(|message| BrokerError::invalid("name", message))?;
        if let Some(pattern) = &pattern {
            Pattern::parse(pattern)
                .map_err(|err| BrokerError::invalid("pattern", err.to_string()))?;
        }
        let start_offsets = topic
            .partitions
            .iter()
            .map(|log| match start {
                StartPosition::Earliest => log.log_start_offset(),
                StartPosition::Latest => log.high_watermark(),
            })
            .collect();
        let spec = SubscriptionSpec {
            topic: topic.spec.name.clone(),
            topic_id: topic.spec.id,
            name: name.to_string(),
            owner: principal.username.clone(),
            pattern,
            start,
            start_offsets,
            created_ms: now_ms(),
        };
        self.commit_meta(|_| MetaEvent::SubscriptionCreated(spec.clone()), |_| Ok(()))
            .await?;
        info!(topic = %spec.topic, subscription = %name, "subscription created");
        Ok(subscription_view(&topic, &spec))
    }

    /// Subscriptions of a topic visible to `principal`.
    pub fn list_subscriptions(
        &self,
        principal: &Principal,
        topic: &str,
    ) -> Result<Vec<SubscriptionView>> {
        let topic = self.open_topic(principal, topic, None)?;
        let specs: Vec<SubscriptionSpec> = read_lock(&self.catalog)
            .subscriptions_of(&topic.spec.name)
            .cloned()
            .collect();
        Ok(specs
            .iter()
            .map(|spec| subscription_view(&topic, spec))
            .collect())
    }

    /// Deletes a subscription; its creator or the topic's owner may.
    pub async fn delete_subscription(
        &self,
        principal: &Principal,
        topic: &str,
        name: &str,
    ) -> Result<()> {
        let topic = self.open_topic(principal, topic, None)?;
        let spec = self.subscription_spec(&topic.spec.name, name)?;
        if spec.owner != principal.username && topic.spec.owner != principal.username {
            return Err(BrokerError::Forbidden(format!(
                "only `{}` or the topic's owner may delete subscription `{name}`",
                spec.owner
            )));
        }
        self.commit_meta(
            |_| MetaEvent::SubscriptionDeleted {
                topic: spec.topic.clone(),
                name: name.to_string(),
            },
            |_| Ok(()),
        )
        .await?;
        write_lock(&self.groups).remove(&(spec.topic.clone(), name.to_string()));
        // Pulls and streams of the subscription wake up and end.
        topic.appended.notify_waiters();
        topic.offsets.forget(spec.topic_id, name).await?;
        info!(topic = %spec.topic, subscription = %name, "subscription deleted");
        Ok(())
    }

    /// Pulls up to `max_messages` for the subscription, waiting up to `wait`
    /// for the first one.
    pub async fn pull(
        &self,
        principal: &Principal,
        topic: &str,
        name: &str,
        max_messages: usize,
        wait: Duration,
    ) -> Result<Vec<Message>> {
        let group = self.group(principal, topic, name)?;
        check_max_messages(max_messages)?;
        let deadline = Instant::now() + wait;
        let mut skipping = 0;
        loop {
            let notified = group.topic.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.recheck_group(principal, &group)?;
            let messages = group.take(max_messages)?;
            if !messages.is_empty() || Instant::now() >= deadline || self.is_shutting_down() {
                return Ok(messages);
            }
            // The take skipped messages (filtered or expired) and stopped
            // before the end: go on at once rather than wait for an append.
            if group.has_messages() && skipping < MAX_SKIPPING_TAKES {
                skipping += 1;
                continue;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Commits the next offset to read for each given partition.
    pub async fn commit(
        &self,
        principal: &Principal,
        topic: &str,
        name: &str,
        offsets: &[(u32, u64)],
    ) -> Result<()> {
        let group = self.group(principal, topic, name)?;
        if offsets.is_empty() {
            return Err(BrokerError::invalid(
                "offsets",
                "must contain at least one partition",
            ));
        }
        let mut keyed = Vec::with_capacity(offsets.len());
        for (index, &(partition, offset)) in offsets.iter().enumerate() {
            if offsets[..index]
                .iter()
                .any(|(earlier, _)| *earlier == partition)
            {
                return Err(BrokerError::invalid(
                    format!("offsets[{index}].partition"),
                    format!("partition {partition} appears more than once"),
                ));
            }
            let log = group
                .topic
                .partitions
                .get(partition as usize)
                .ok_or_else(|| {
                    BrokerError::invalid(
                        format!("offsets[{index}].partition"),
                        format!(
                            "topic has partitions 0 to {}",
                            group.topic.partitions.len() - 1
                        ),
                    )
                })?;
            if offset > log.high_watermark() {
                return Err(BrokerError::invalid(
                    format!("offsets[{index}].offset"),
                    format!(
                        "{offset} is past the end of partition {partition} ({})",
                        log.high_watermark()
                    ),
                ));
            }
            let key = OffsetKey {
                topic_id: group.spec.topic_id,
                subscription: name.to_string(),
                partition,
            };
            keyed.push((key, offset));
        }
        group.topic.offsets.commit(keyed).await?;
        let mut positions = group.lock_positions();
        for &(partition, offset) in offsets {
            let position = &mut positions[partition as usize];
            *position = (*position).max(offset);
        }
        Ok(())
    }

    /// The runtime state of a subscription `principal` may consume from.
    pub fn group(&self, principal: &Principal, topic: &str, name: &str) -> Result<Arc<Group>> {
        let topic = self.open_topic(principal, topic, Some(Permission::Consume))?;
        let key = (topic.spec.name.clone(), name.to_string());
        if let Some(group) = read_lock(&self.groups).get(&key) {
            return Ok(Arc::clone(group));
        }
        let spec = self.subscription_spec(&topic.spec.name, name)?;
        let positions = (0..topic.partitions.len() as u32)
            .map(|partition| committed_offset(&topic, &spec, partition))
            .collect();
        let filter = spec
            .pattern
            .as_deref()
            .map(Pattern::parse)
            .transpose()
            .map_err(|err| {
                BrokerError::Internal(format!(
                    "stored pattern of subscription `{name}` does not parse: {err}"
                ))
            })?;
        let group = Arc::new(Group {
            topic,
            spec,
            filter,
            positions: Mutex::new(positions),
            next_start: AtomicUsize::new(0),
        });
        let mut groups = write_lock(&self.groups);
        Ok(Arc::clone(groups.entry(key).or_insert(group)))
    }

    /// Checks again that the subscription and its topic still exist and
    /// that `principal` may still consume from it.
    pub fn recheck_group(&self, principal: &Principal, group: &Group) -> Result<()> {
        self.recheck_topic(principal, &group.topic, Permission::Consume)?;
        self.subscription_spec(&group.spec.topic, &group.spec.name)
            .map(|_| ())
    }

    /// Returns messages a stream sent but no consumer acked to the subscription:
    /// its position moves back to `oldest_unacked`, but never below the
    /// committed offset, which other consumers may have moved past it.
    pub fn return_unacked(&self, group: &Group, partition: u32, oldest_unacked: u64) {
        let committed = committed_offset(&group.topic, &group.spec, partition);
        group.rewind(partition, oldest_unacked.max(committed));
    }

    fn subscription_spec(&self, topic: &str, name: &str) -> Result<SubscriptionSpec> {
        read_lock(&self.catalog)
            .subscription(topic, name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound {
                kind: "subscription",
                name: name.to_string(),
            })
    }
}

fn committed_offset(topic: &Topic, spec: &SubscriptionSpec, partition: u32) -> u64 {
    let key = OffsetKey {
        topic_id: spec.topic_id,
        subscription: spec.name.clone(),
        partition,
    };
    topic
        .offsets
        .get(&key)
        .or_else(|| spec.start_offsets.get(partition as usize).copied())
        .unwrap_or(0)
}

fn subscription_view(topic: &Topic, spec: &SubscriptionSpec) -> SubscriptionView {
    let committed = (0..spec.start_offsets.len() as u32)
        .map(|partition| (partition, committed_offset(topic, spec, partition)))
        .collect();
    SubscriptionView {
        spec: spec.clone(),
        committed,
    }
}
