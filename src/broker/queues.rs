//! Queue operations: create, list, describe, delete, send, receive (long
//! poll), ack and nack.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::broker::error::{BrokerError, Result};
use crate::broker::idempotence;
use crate::broker::message::{PublishRequest, PublishResult};
use crate::broker::queue::{AckOutcome, Delivery, Queue};
use crate::broker::topics::check_ttl;
use crate::broker::users::Principal;
use crate::broker::{now_ms, read_lock, write_lock, Broker};
use crate::log::{ProducerInfo, Record};
use crate::meta::names::validate_name;
use crate::meta::{Access, MetaEvent, Permission, QueueSpec};

/// Default lease length of a received message.
pub const DEFAULT_VISIBILITY_TIMEOUT_MS: u64 = 30_000;

/// Longest lease a queue or a receive may ask for: 12 hours.
pub const MAX_VISIBILITY_TIMEOUT_MS: u64 = 12 * 3600 * 1000;

/// Leases in a row that a receive without a wait still makes when each one
/// dead-lettered everything it took.
const MIN_SKIPPED_LEASES: usize = 16;

/// Largest `max_deliveries` a queue may set.
pub const MAX_DELIVERIES: u32 = 10_000;

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
        if let Some(max) = request.max_deliveries {
            if !(1..=MAX_DELIVERIES).contains(&max) {
                return Err(BrokerError::invalid(
                    "max_deliveries",
                    format!("{max} is outside 1..={MAX_DELIVERIES}"),
                ));
            }
        }
        if let Some(target) = &request.dead_letter_queue {
            self.check_dead_letter_queue(principal, &request.name, target)?;
        }
        check_ttl("message_ttl_ms", request.message_ttl_ms)?;
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

    /// Sends the request's messages to queue `name` as one batch; returns
    /// (partition, offset) per message, the partition always 0.
    pub async fn send(
        &self,
        principal: &Principal,
        name: &str,
        request: PublishRequest,
    ) -> Result<PublishResult> {
        let queue = self.open_queue(principal, name, Some(Permission::Publish))?;
        self.check_messages(&request.messages, false)?;
        let producer = Bytes::from(principal.username.clone());
        let timestamp = now_ms();
        let count = request.messages.len() as u64;
        let records: Vec<Record> = request
            .messages
            .into_iter()
            .map(|message| message.into_record(&producer, timestamp, queue.spec.message_ttl_ms))
            .collect();
        let (base_offset, duplicate) = match &request.producer {
            Some(idempotent) => {
                idempotence::check_request(idempotent, records.len())?;
                let hash =
                    idempotence::client_producer(&principal.username, &idempotent.producer_id);
                let stored = idempotence::append_once(
                    std::slice::from_ref(&queue.messages),
                    0,
                    records,
                    hash,
                    idempotent.first_sequence,
                    request.acks,
                    idempotence::Retry::Exact,
                    &queue.idempotence,
                )
                .await?;
                (stored.base_offset, stored.duplicate)
            }
            None => {
                let info = queue
                    .messages
                    .append_with(records, ProducerInfo::default(), request.acks)
                    .await?;
                (info.base_offset, false)
            }
        };
        Ok(PublishResult {
            offsets: (base_offset..base_offset + count)
                .map(|offset| (0, offset))
                .collect(),
            duplicate,
        })
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
        let mut skipped_leases = 0;
        loop {
            let notified = queue.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            self.recheck_queue(principal, queue, Permission::Consume)?;
            let deliveries = self.lease_from(queue, max, visibility_ms).await?;
            if !deliveries.is_empty() || self.is_shutting_down() {
                return Ok(deliveries);
            }
            // Everything leased was dead-lettered, and more may be ready:
            // go on until the wait ends (or a few times without a wait).
            let waiting = Instant::now() < deadline;
            if queue.has_ready() && (waiting || skipped_leases < MIN_SKIPPED_LEASES) {
                skipped_leases += 1;
                continue;
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

    /// Leases up to `max` messages of `queue` at once, and copies the
    /// messages the lease dead-lettered to the dead-letter queue.
    pub async fn lease_from(
        &self,
        queue: &Queue,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Delivery>> {
        let deliveries = queue.lease(max, visibility_ms).await;
        if queue.next_pending_copy().is_some() {
            self.copy_dead_letters(queue).await;
        }
        deliveries
    }

    /// Checks the dead-letter queue named at the creation of `queue`: it
    /// exists, is another queue, and `principal` may send to it.
    fn check_dead_letter_queue(
        &self,
        principal: &Principal,
        queue: &str,
        target: &str,
    ) -> Result<()> {
        if target == queue {
            return Err(BrokerError::invalid(
                "dead_letter_queue",
                "names the queue itself; give another queue",
            ));
        }
        let catalog = read_lock(&self.catalog);
        Broker::authorize(
            catalog.queue(target),
            "queue",
            target,
            &principal.username,
            Some(Permission::Publish),
        )
        .map_err(|err| match err {
            BrokerError::NotFound { .. } => BrokerError::invalid(
                "dead_letter_queue",
                format!("queue `{target}` does not exist; create it first"),
            ),
            other => other,
        })?;
        Ok(())
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
    /// without it they leave the queue for its dead-letter queue, or are
    /// dropped when it has none.
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
            return queue.release(ids).await;
        }
        let outcome = queue.reject(ids).await?;
        self.copy_dead_letters(&queue).await;
        Ok(outcome)
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
