//! Bindings at work: the task that copies a topic's messages to the queues
//! bound to it.
//!
//! The broker that leads a topic runs one router task for it while the
//! topic has bindings. The task reads each partition from a cursor and
//! finds the bindings whose pattern matches each message's routing key (a
//! [`BindingTrie`], not a scan of every binding). It sends each bound queue
//! its messages as one batch of the broker's producer for that partition
//! and queue. Cursor and sequences are then committed together
//! in the topic's offsets log. After a crash or a change of leader the task
//! resends from the committed cursor with the same sequences, and the queue
//! drops what it already has (see `idempotence::Retry::Tail`).
//!
//! A binding routes the messages appended after its creation reached the
//! topic's leader: at that moment the leader notes the partitions' end
//! offsets as the binding's start, and the task commits them first.
//! Messages keep their producer, timestamp, time to live, key, routing key,
//! headers and value. Expiry is checked when the queue delivers, not here,
//! so that a resend chooses the same messages.
//!
//! NOTE: a resend chooses the same messages only if the queue's bindings
//! (and its owner's permissions) did not change between the first send and
//! the crash that forced the resend; if they did, the resend may skip or
//! repeat messages of that one step.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::broker::error::Result;
use crate::broker::idempotence;
use crate::broker::offsets::OffsetKey;
use crate::broker::routing::{BindingTrie, Pattern};
use crate::broker::topic::Topic;
use crate::broker::{read_lock, Broker};
use crate::log::Record;
use crate::meta::{BindingSpec, MetaEvent, Permission};

/// Namespace of the producer ids of routed messages; the id is
/// `<topic id>/<partition>/<queue id>`.
pub const BINDING_PRODUCERS: &str = "binding";

/// Bytes read from a partition per routing step.
const ROUTE_READ_BYTES: usize = 1 << 20;

/// Messages examined per partition and routing step.
const ROUTE_MAX_RECORDS: usize = 1000;

/// How often an idle router looks again without being woken, and how long
/// it waits after a failure.
const ROUTE_IDLE: Duration = Duration::from_secs(1);

/// The offsets-log entry (in place of a subscription name) of the cursor.
const CURSOR: &str = "~route";

fn sequence_entry(queue_id: u64) -> String {
    format!("~queue-{queue_id}")
}

fn start_entry(binding: u64) -> String {
    format!("~start-{binding}")
}

/// A running router task and the topic it routes.
type RouterTask = (Weak<Topic>, JoinHandle<()>);

/// The router tasks of the topics this broker leads, by topic id.
#[derive(Default)]
pub(crate) struct Routers {
    tasks: std::sync::Mutex<HashMap<u64, RouterTask>>,
}

impl Drop for Routers {
    fn drop(&mut self) {
        let tasks = self
            .tasks
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (_, task) in tasks.values() {
            task.abort();
        }
    }
}

impl Broker {
    /// Notes what a newly applied metadata event means for routing: a new
    /// binding of a topic led here starts at the partitions' end offsets.
    pub(crate) fn note_routing_change(&self, event: &MetaEvent) {
        let MetaEvent::BindingAdded(spec) = event else {
            if matches!(
                event,
                MetaEvent::BindingRemoved { .. } | MetaEvent::TopicDeleted { .. }
            ) {
                self.router_wakeup.notify_one();
            }
            return;
        };
        let topic = read_lock(&self.topics)
            .get(&spec.topic)
            .filter(|topic| topic.spec.id == spec.topic_id)
            .cloned();
        if let Some(topic) = topic {
            let starts = topic
                .partitions
                .iter()
                .map(|log| log.log_end_offset())
                .collect();
            topic.note_binding_start(spec.id, starts);
            // Stored at once rather than by the router's next step, which
            // may be busy with a backlog when a crash comes.
            let id = spec.id;
            tokio::spawn(async move {
                if let Err(err) = store_binding_start(&topic, id).await {
                    warn!(topic = %topic.spec.name, binding = id, error = %err, "failed to store a binding's start; the router retries");
                }
            });
        }
        self.router_wakeup.notify_one();
    }

    /// Stores the start of binding `id` of `topic`, if this broker leads
    /// the topic, before the response to the binding's creation.
    pub(crate) async fn store_binding_start(&self, topic: &str, id: u64) -> Result<()> {
        let led = read_lock(&self.topics).get(topic).cloned();
        match led {
            Some(topic) => store_binding_start(&topic, id).await,
            None => Ok(()),
        }
    }

    /// Starts the task that keeps one router task running per led topic
    /// with bindings.
    pub(crate) fn start_routers(self: &Arc<Self>) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = broker.upgrade() else {
                    return;
                };
                let wakeup = Arc::clone(&strong.router_wakeup);
                strong.reconcile_routers();
                drop(strong);
                tokio::select! {
                    _ = wakeup.notified() => {}
                    _ = tokio::time::sleep(ROUTE_IDLE) => {}
                }
            }
        });
    }

    /// Starts router tasks for led topics with bindings and stops those of
    /// topics no longer led or bound.
    fn reconcile_routers(self: &Arc<Self>) {
        let bound: Vec<Arc<Topic>> = {
            let catalog = read_lock(&self.catalog);
            read_lock(&self.topics)
                .values()
                .filter(|topic| catalog.bindings_from(topic.spec.id).next().is_some())
                .cloned()
                .collect()
        };
        let mut tasks = self
            .routers
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tasks.retain(|id, (topic, task)| {
            let keep = !task.is_finished()
                && topic.upgrade().is_some_and(|topic| {
                    bound
                        .iter()
                        .any(|led| led.spec.id == *id && Arc::ptr_eq(led, &topic))
                });
            if !keep {
                task.abort();
            }
            keep
        });
        for topic in bound {
            if tasks.contains_key(&topic.spec.id) {
                continue;
            }
            info!(topic = %topic.spec.name, "starting router for bindings");
            let task = tokio::spawn(route_topic(Arc::downgrade(self), Arc::clone(&topic)));
            tasks.insert(topic.spec.id, (Arc::downgrade(&topic), task));
        }
    }

    /// Routes the messages past each partition's cursor of `topic`, one
    /// step per partition; returns whether anything was read.
    async fn route_step(&self, topic: &Topic) -> Result<bool> {
        // A binding routes only while its creator may still read the topic
        // and send to the queue.
        let (known, bindings): (Vec<u64>, Vec<BindingSpec>) = {
            let catalog = read_lock(&self.catalog);
            let known = catalog
                .bindings_from(topic.spec.id)
                .map(|binding| binding.id)
                .collect();
            let allowed = catalog
                .bindings_from(topic.spec.id)
                .filter(|binding| {
                    let user = &binding.owner;
                    let topic = catalog.topic(&binding.topic);
                    let queue = catalog.queue(&binding.queue);
                    Broker::authorize(
                        topic,
                        "topic",
                        &binding.topic,
                        user,
                        Some(Permission::Consume),
                    )
                    .is_ok()
                        && Broker::authorize(
                            queue,
                            "queue",
                            &binding.queue,
                            user,
                            Some(Permission::Publish),
                        )
                        .is_ok()
                })
                .cloned()
                .collect();
            (known, allowed)
        };
        let mut trie = BindingTrie::new();
        for binding in &bindings {
            match Pattern::parse(&binding.pattern) {
                Ok(pattern) => {
                    trie.insert(&pattern, binding.id);
                }
                Err(err) => {
                    warn!(binding = binding.id, error = %err, "skipping binding with an invalid pattern")
                }
            }
        }
        let mut progressed = false;
        for partition in 0..topic.partitions.len() as u32 {
            progressed |= self
                .route_partition(topic, partition, &known, &bindings, &trie)
                .await?;
        }
        Ok(progressed)
    }

    async fn route_partition(
        &self,
        topic: &Topic,
        partition: u32,
        known: &[u64],
        bindings: &[BindingSpec],
        trie: &BindingTrie<u64>,
    ) -> Result<bool> {
        let key = |entry: String| OffsetKey {
            topic_id: topic.spec.id,
            subscription: entry,
            partition,
        };
        let log = &topic.partitions[partition as usize];
        let mut commits = Vec::new();
        let mut starts = HashMap::new();
        for binding in bindings {
            let start = match topic.offsets.get(&key(start_entry(binding.id))) {
                Some(start) => start,
                None => {
                    let start = topic
                        .binding_start(binding.id, partition)
                        .unwrap_or_else(|| {
                            // NOTE: the leader that applied the binding's
                            // creation stopped before it stored the start,
                            // so messages published meanwhile are not routed.
                            warn!(
                                binding = binding.id,
                                partition,
                                "binding start unknown; starting at the end of the partition"
                            );
                            log.log_end_offset()
                        });
                    commits.push((key(start_entry(binding.id)), start));
                    start
                }
            };
            starts.insert(binding.id, start);
        }
        let Some(&earliest_start) = starts.values().min() else {
            return Ok(false);
        };
        let cursor = topic
            .offsets
            .get(&key(CURSOR.to_string()))
            .unwrap_or(earliest_start)
            .max(log.log_start_offset());

        let queue_of: HashMap<u64, u64> = bindings
            .iter()
            .map(|binding| (binding.id, binding.queue_id))
            .collect();
        // By queue id: a queue with several matching bindings gets one copy.
        let mut routed: HashMap<u64, Vec<Record>> = HashMap::new();
        let mut next = cursor;
        if cursor < log.high_watermark() {
            let batches = log.read(cursor, ROUTE_READ_BYTES)?;
            // A compacted batch may end after its last record, or hold none.
            let batches_end = batches.last().map(|batch| batch.header.next_offset());
            let records: Vec<Record> = batches
                .into_iter()
                .flat_map(|batch| batch.records)
                .filter(|record| record.offset >= cursor)
                .take(ROUTE_MAX_RECORDS + 1)
                .collect();
            if records.len() <= ROUTE_MAX_RECORDS {
                next = batches_end.unwrap_or(cursor);
            }
            for record in records.into_iter().take(ROUTE_MAX_RECORDS) {
                next = next.max(record.offset + 1);
                let routing_key = record
                    .routing_key
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let mut queues: Vec<u64> = trie
                    .matches(&routing_key)
                    .into_iter()
                    .filter(|binding| record.offset >= starts[binding])
                    .map(|binding| queue_of[&binding])
                    .collect();
                queues.sort_unstable();
                queues.dedup();
                for queue in queues {
                    let mut copy = record.clone();
                    copy.offset = 0;
                    routed.entry(queue).or_default().push(copy);
                }
            }
        }
        // A binding created while the records were read starts at or below
        // some of them, and must not miss them: route the step again.
        let current: Vec<u64> = read_lock(&self.catalog)
            .bindings_from(topic.spec.id)
            .map(|binding| binding.id)
            .collect();
        let added = current.iter().any(|id| !known.contains(id));
        if added {
            return Ok(true);
        }
        if next == cursor && commits.is_empty() {
            return Ok(false);
        }
        for binding in bindings {
            let Some(records) = routed.remove(&binding.queue_id) else {
                continue;
            };
            let sequence_key = key(sequence_entry(binding.queue_id));
            let sequence = topic.offsets.get(&sequence_key).unwrap_or(0);
            let count = records.len() as u64;
            let producer = idempotence::producer_hash(
                BINDING_PRODUCERS,
                &format!("{}/{partition}/{}", topic.spec.id, binding.queue_id),
            );
            let stored = self
                .append_to_queue(&binding.queue, records, producer, sequence)
                .await?;
            if !stored {
                // The queue was deleted; its bindings go with it.
                continue;
            }
            commits.push((sequence_key, sequence + count));
        }
        commits.push((key(CURSOR.to_string()), next));
        topic.offsets.commit(commits).await?;
        Ok(next != cursor)
    }
}

/// Stores the noted start of binding `id` in `topic`'s offsets log, unless
/// a start is stored already.
async fn store_binding_start(topic: &Topic, id: u64) -> Result<()> {
    let key = |partition: u32| OffsetKey {
        topic_id: topic.spec.id,
        subscription: start_entry(id),
        partition,
    };
    let mut entries = Vec::new();
    for partition in 0..topic.partitions.len() as u32 {
        if topic.offsets.get(&key(partition)).is_some() {
            continue;
        }
        if let Some(start) = topic.binding_start(id, partition) {
            entries.push((key(partition), start));
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    topic.offsets.commit(entries).await
}

/// Runs the router of one topic: routes while there is something to route,
/// then waits for new messages, a binding change or [`ROUTE_IDLE`].
async fn route_topic(broker: Weak<Broker>, topic: Arc<Topic>) {
    loop {
        let appended = topic.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let Some(strong) = broker.upgrade() else {
            return;
        };
        let result = strong.route_step(&topic).await;
        drop(strong);
        match result {
            Ok(true) => continue,
            Ok(false) => {}
            Err(err) => {
                warn!(topic = %topic.spec.name, error = %err, "routing to bound queues failed; retrying");
                tokio::time::sleep(ROUTE_IDLE).await;
                continue;
            }
        }
        tokio::select! {
            _ = appended => {}
            _ = topic.bindings_changed.notified() => {}
            _ = tokio::time::sleep(ROUTE_IDLE) => {}
        }
    }
}
