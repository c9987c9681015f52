//! Queue operations: create, list, describe, delete, send, receive (long
//! poll), ack and nack.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::broker::error::{BrokerError, Result};
use crate::broker::message::NewMessage;
use crate::broker::queue::{AckOutcome, Delivery, Queue};
use crate::broker::users::Principal;
use crate::broker::{now_ms, read_lock, write_lock, Acks, Broker};
use crate::log::ProducerInfo;
use crate::meta::names::validate_name;
use crate::meta::{Access, MetaEvent, Permission, QueueSpec};

/// Default lease length of a received message.
pub const DEFAULT_VISIBILITY_TIMEOUT_MS: u64 = 30_000;

/// Longest lease a queue or a receive may ask for: 12 hours.
pub const MAX_VISIBILITY_TIMEOUT_MS: u64 = 12 * 3600 * 1000;

/// Most messages one receive returns.
pub const MAX_RECEIVE_MESSAGES: usize = 1000;

/// The settings a client gives to create a queue.
#[derive(Debug, Clone, Default)]
pub struct CreateQueue {
    /// Queue name.
    pub name: String,
    /// Public or private.
    pub access: Access,
    /// Lease length in ms, default 30 s.
    pub visibility_timeout_ms: Option<u64>,
    /// Deliveries before dead-lettering.
    pub max_deliveries: Option<u32>,
    /// Dead-letter queue name.
    pub dead_letter_queue: Option<String>,
    /// Default message time to live, in ms.
    pub message_ttl_ms: Option<u64>,
}

/// A queue as shown to clients.
#[derive(Debug, Clone)]
pub struct QueueView {
    /// Settings.
    pub spec: QueueSpec,
    /// Messages not yet acked, leased or not.
    pub depth: u64,
    /// Messages under lease.
    pub in_flight: u64,
    /// First retained offset of the message log.
    pub start_offset: u64,
    /// First offset not yet readable.
    pub end_offset: u64,
}

impl Broker {
    /// Creates a queue owned by `principal`.
    pub async fn create_queue(
        &self,
        principal: &Principal,
        request: CreateQueue,
    ) -> Result<QueueView> {
        validate_name(&request.name, false)
            .map_err(|message| BrokerError::invalid("name", message))?;
        let visibility_timeout_ms = request
            .visibility_timeout_ms
            .unwrap_or(DEFAULT_VISIBILITY_TIMEOUT_MS);
        check_visibility_timeout("visibility_timeout_ms", visibility_timeout_ms)?;
        if request.max_deliveries.is_some() || request.dead_letter_queue.is_some() {
            return Err(BrokerError::invalid(
                "max_deliveries/dead_letter_queue",
                "dead-lettering is not supported by this broker version yet; leave them out",
            ));
        }
        if request.message_ttl_ms.is_some() {
            return Err(BrokerError::invalid(
                "message_ttl_ms",
                "is not supported by this broker version yet; leave it out",
            ));
        }
        let queue = self
            .commit_meta(
                |id| {
                    MetaEvent::QueueCreated(QueueSpec {
                        id,
                        name: request.name.clone(),
                        owner: principal.username.clone(),
                        access: request.access,
                        visibility_timeout_ms,
                        max_deliveries: request.max_deliveries,
                        dead_letter_queue: request.dead_letter_queue.clone(),
                        message_ttl_ms: request.message_ttl_ms,
                        created_ms: now_ms(),
                    })
                },
                |event| {
                    let MetaEvent::QueueCreated(spec) = event else {
                        unreachable!("the closure above makes a QueueCreated event")
                    };
                    if self.cluster_hooks().is_some() {
                        // The leader the cluster picks opens it.
                        return Ok(Err(spec.clone()));
                    }
                    let dir = self.queue_dir(&spec.name, spec.id);
                    Queue::open(&self.logs, &self.config, &dir, spec.clone())
                        .inspect_err(|_| {
                            let _ = std::fs::remove_dir_all(&dir);
                        })
                        .map(Ok)
                },
            )
            .await?;
        let queue = match queue {
            Ok(queue) => Arc::new(queue),
            Err(spec) => {
                if let Some(cluster) = self.cluster_hooks() {
                    cluster
                        .wait_for_leader(crate::cluster::state::resource_key("queue", spec.id))
                        .await?;
                }
                info!(queue = %spec.name, id = spec.id, owner = %principal.username, "queue created");
                return Ok(remote_queue_view(&spec));
            }
        };
        write_lock(&self.queues).insert(queue.spec.name.clone(), Arc::clone(&queue));
        info!(queue = %queue.spec.name, id = queue.spec.id, owner = %principal.username, "queue created");
        Ok(queue_view(&queue))
    }

    /// Queues visible to `principal`, by name.
    pub fn list_queues(&self, principal: &Principal) -> Vec<QueueView> {
        let visible: Vec<String> = read_lock(&self.catalog)
            .queues()
            .filter(|resource| resource.is_visible_to(&principal.username))
            .map(|resource| resource.spec.name.clone())
            .collect();
        let catalog = read_lock(&self.catalog);
        let queues = read_lock(&self.queues);
        visible
            .iter()
            .filter_map(|name| match queues.get(name) {
                Some(queue) => Some(queue_view(queue)),
                None => catalog
                    .queue(name)
                    .map(|resource| remote_queue_view(&resource.spec)),
            })
            .collect()
    }

    /// Describes a queue visible to `principal`.
    pub fn describe_queue(&self, principal: &Principal, name: &str) -> Result<QueueView> {
        let queue = self.open_queue(principal, name, None)?;
        Ok(queue_view(&queue))
    }

    /// Deletes a queue with its messages; owner only.
    pub async fn delete_queue(&self, principal: &Principal, name: &str) -> Result<()> {
        let queue = self.open_queue(principal, name, None)?;
        if queue.spec.owner != principal.username {
            return Err(BrokerError::Forbidden(format!(
                "only the owner `{}` may delete queue `{name}`",
                queue.spec.owner
            )));
        }
        let id = queue.spec.id;
        self.commit_meta(
            |_| MetaEvent::QueueDeleted {
                name: name.to_string(),
                id,
            },
            |_| Ok(()),
        )
        .await?;
        write_lock(&self.queues).remove(name);
        // Long polls and streams wake up, find the queue gone and end.
        queue.changed.notify_waiters();
        if self.cluster_hooks().is_some() {
            // Followers stop replicating a deleted queue, so a send that
            // raced the deletion would wait for them in vain.
            queue.messages.fence();
            queue.state_log.fence();
        }
        // In a cluster the brokers remove the files once their catalog
        // shows the deletion.
        if self.cluster_hooks().is_none() {
            let dir = self.queue_dir(name, id);
            tokio::task::spawn_blocking(move || {
                if let Err(err) = std::fs::remove_dir_all(&dir) {
                    // The next start removes what is left.
                    warn!(dir = %dir.display(), error = %err, "failed to remove deleted queue's files");
                }
            });
        }
        info!(queue = %name, id, "queue deleted");
        Ok(())
    }

    /// Sends `messages` to queue `name` as one batch; returns (partition,
    /// offset) per message, the partition always 0.
    pub async fn send(
        &self,
        principal: &Principal,
        name: &str,
        messages: Vec<NewMessage>,
        acks: Acks,
    ) -> Result<Vec<(u32, u64)>> {
        let queue = self.open_queue(principal, name, Some(Permission::Publish))?;
        self.check_messages(&messages)?;
        let producer = Bytes::from(principal.username.clone());
        let timestamp = now_ms();
        let count = messages.len() as u64;
        let records = messages
            .into_iter()
            .map(|message| message.into_record(&producer, timestamp))
            .collect();
        let info = queue
            .messages
            .append_with(records, ProducerInfo::default(), acks)
            .await?;
        Ok((info.base_offset..info.base_offset + count)
            .map(|offset| (0, offset))
            .collect())
    }

    /// Leases up to `max_messages` messages, waiting up to `wait` for the
    /// first one. `visibility_timeout_ms` overrides the queue's lease length.
    pub async fn receive(
        &self,
        principal: &Principal,
        name: &str,
        max_messages: usize,
        wait: Duration,
        visibility_timeout_ms: Option<u64>,
    ) -> Result<Vec<Delivery>> {
        let queue = self.open_queue(principal, name, Some(Permission::Consume))?;
        check_max_messages(max_messages)?;
        let visibility_ms = visibility_timeout_ms.unwrap_or(queue.spec.visibility_timeout_ms);
        check_visibility_timeout("visibility_timeout_ms", visibility_ms)?;
        self.receive_from(principal, &queue, max_messages, wait, visibility_ms)
            .await
    }

    /// Leases up to `max` messages from `queue`, waiting up to `wait` for
    /// one; a deletion, a revoked grant or a shutdown ends the wait.
    pub async fn receive_from(
        &self,
        principal: &Principal,
        queue: &Queue,
        max: usize,
        wait: Duration,
        visibility_ms: u64,
    ) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = queue.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            self.recheck_queue(principal, queue, Permission::Consume)?;
            let deliveries = queue.lease(max, visibility_ms).await?;
            if !deliveries.is_empty() || self.is_shutting_down() {
                return Ok(deliveries);
            }
            // Wake up for a new message, a release, the end of the earliest
            // lease, or the caller's deadline, whichever comes first.
            let mut wake = deadline;
            if let Some(lease_end) = queue.next_deadline() {
                let until = (lease_end - now_ms()).max(0) as u64;
                wake = wake.min(Instant::now() + Duration::from_millis(until));
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Acks delivery ids of queue `name`.
    pub async fn ack(
        &self,
        principal: &Principal,
        name: &str,
        ids: &[String],
    ) -> Result<AckOutcome> {
        let queue = self.open_queue(principal, name, Some(Permission::Consume))?;
        check_ids(ids)?;
        queue.ack(ids).await
    }

    /// Nacks delivery ids: with `requeue` the messages are delivered again,
    /// without it they are removed from the queue.
    pub async fn nack(
        &self,
        principal: &Principal,
        name: &str,
        ids: &[String],
        requeue: bool,
    ) -> Result<AckOutcome> {
        let queue = self.open_queue(principal, name, Some(Permission::Consume))?;
        check_ids(ids)?;
        if requeue {
            queue.release(ids).await
        } else {
            queue.ack(ids).await
        }
    }

    /// The queue `name` if `principal` may see it and, when given, holds
    /// `permission` on it.
    pub fn open_queue(
        &self,
        principal: &Principal,
        name: &str,
        permission: Option<Permission>,
    ) -> Result<Arc<Queue>> {
        {
            let catalog = read_lock(&self.catalog);
            Broker::authorize(
                catalog.queue(name),
                "queue",
                name,
                &principal.username,
                permission,
            )?;
        }
        read_lock(&self.queues)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound {
                kind: "queue",
                name: name.to_string(),
            })
    }
}

fn queue_view(queue: &Queue) -> QueueView {
    let counts = queue.counts();
    QueueView {
        spec: queue.spec.clone(),
        depth: counts.depth,
        in_flight: counts.in_flight,
        start_offset: queue.messages.log_start_offset(),
        end_offset: queue.messages.high_watermark(),
    }
}

// NOTE: the counts and offsets of a queue led by another broker are shown
// as 0; describing the queue (routed to its leader) returns them exactly.
fn remote_queue_view(spec: &QueueSpec) -> QueueView {
    QueueView {
        spec: spec.clone(),
        depth: 0,
        in_flight: 0,
        start_offset: 0,
        end_offset: 0,
    }
}

fn check_visibility_timeout(field: &str, value: u64) -> Result<()> {
    if !(1..=MAX_VISIBILITY_TIMEOUT_MS).contains(&value) {
        return Err(BrokerError::invalid(
            field,
            format!("{value} is outside 1..={MAX_VISIBILITY_TIMEOUT_MS} ms"),
        ));
    }
    Ok(())
}

/// Checks a receive or pull size against [`MAX_RECEIVE_MESSAGES`].
pub(crate) fn check_max_messages(max_messages: usize) -> Result<()> {
    if !(1..=MAX_RECEIVE_MESSAGES).contains(&max_messages) {
        return Err(BrokerError::invalid(
            "max_messages",
            format!("{max_messages} is outside 1..={MAX_RECEIVE_MESSAGES}"),
        ));
    }
    Ok(())
}

fn check_ids(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Err(BrokerError::invalid(
            "ids",
            "must contain at least one delivery id",
        ));
    }
    if ids.len() > MAX_RECEIVE_MESSAGES {
        return Err(BrokerError::invalid(
            "ids",
            format!("{} ids, the maximum is {MAX_RECEIVE_MESSAGES}", ids.len()),
        ));
    }
    Ok(())
}
