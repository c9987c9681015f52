//! The sources of the mirror's reads: this broker's own logs, or in a
//! cluster each resource's leader (`cluster::mirror_source`).

use std::future::Future;
use std::sync::{Arc, Weak};

use crate::broker::queue::{MESSAGES_LOG, STATE_LOG};
use crate::broker::topic::OFFSETS_LOG;
use crate::broker::{Broker, DurableLog};
use crate::log::RecordBatch;

/// Bytes read from one log per transaction.
pub const READ_BYTES: usize = 4 << 20;

/// The kind of a mirrored log, as stored in `mirror_checkpoints.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogKind {
    /// `__meta`: users, topics, queues, bindings, subscriptions.
    Meta,
    /// One partition of a topic.
    Topic,
    /// A topic's committed offsets.
    Offsets,
    /// A queue's messages.
    Queue,
    /// A queue's lease, ack and dead-letter events.
    QueueState,
}

impl LogKind {
    /// Returns the kind's name in `mirror_checkpoints`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Meta => "meta",
            LogKind::Topic => "topic",
            LogKind::Offsets => "offsets",
            LogKind::Queue => "queue",
            LogKind::QueueState => "queue_state",
        }
    }

    /// Returns the name of the log within its resource, as the broker and
    /// replication name it.
    pub fn log_name(self, partition: u32) -> String {
        match self {
            LogKind::Meta => crate::broker::META_LOG.to_string(),
            LogKind::Topic => partition.to_string(),
            LogKind::Offsets => OFFSETS_LOG.to_string(),
            LogKind::Queue => MESSAGES_LOG.to_string(),
            LogKind::QueueState => STATE_LOG.to_string(),
        }
    }
}

/// One log the mirror tails.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MirroredLog {
    /// Kind of records in the log.
    pub kind: LogKind,
    /// Id of the topic or queue, 0 for `__meta`.
    pub resource_id: u64,
    /// Partition of a topic, 0 for other logs.
    pub partition: u32,
    /// Name for people: `__meta`, `topics/orders@3/0`, `queues/jobs@5/state`.
    pub display: String,
}

impl MirroredLog {
    /// Returns `__meta`.
    pub fn meta() -> MirroredLog {
        MirroredLog {
            kind: LogKind::Meta,
            resource_id: 0,
            partition: 0,
            display: "__meta".to_string(),
        }
    }

    /// Returns the logs of a topic: its partitions and its offsets log.
    pub fn of_topic(name: &str, id: u64, partitions: u32) -> Vec<MirroredLog> {
        let mut logs: Vec<MirroredLog> = (0..partitions)
            .map(|partition| MirroredLog {
                kind: LogKind::Topic,
                resource_id: id,
                partition,
                display: format!("topics/{name}@{id}/{partition}"),
            })
            .collect();
        logs.push(MirroredLog {
            kind: LogKind::Offsets,
            resource_id: id,
            partition: 0,
            display: format!("topics/{name}@{id}/{OFFSETS_LOG}"),
        });
        logs
    }

    /// Returns the logs of a queue: its messages and its state.
    pub fn of_queue(name: &str, id: u64) -> Vec<MirroredLog> {
        [
            (LogKind::Queue, MESSAGES_LOG),
            (LogKind::QueueState, STATE_LOG),
        ]
        .into_iter()
        .map(|(kind, log)| MirroredLog {
            kind,
            resource_id: id,
            partition: 0,
            display: format!("queues/{name}@{id}/{log}"),
        })
        .collect()
    }

    /// Returns the log's primary key in `mirror_checkpoints`.
    pub fn checkpoint_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind.as_str(),
            self.resource_id,
            self.partition
        )
    }
}

/// The batches of one read, with the log's offsets at that moment.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Whole batches from the requested offset, below the high watermark.
    pub batches: Vec<RecordBatch>,
    /// First offset not yet readable: the mirror stops below it.
    pub high_watermark: u64,
    /// First offset the log still holds; retention moves it up.
    pub log_start_offset: u64,
}

/// Reads logs for the mirror.
pub trait LogSource: Send + Sync + 'static {
    /// Reads whole batches of `log` from `offset`, or from the log start
    /// offset when that is above it, up to about `max_bytes` and below the
    /// high watermark. Fails when the log cannot be reached now.
    fn read(
        &self,
        log: &MirroredLog,
        offset: u64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Fetched, String>> + Send;
}

/// Reads the logs of a broker that runs alone, and so leads every log.
pub struct BrokerSource {
    broker: Weak<Broker>,
}

impl BrokerSource {
    /// Returns a source over `broker`'s logs.
    pub fn new(broker: &Arc<Broker>) -> BrokerSource {
        BrokerSource {
            broker: Arc::downgrade(broker),
        }
    }
}

impl LogSource for BrokerSource {
    async fn read(
        &self,
        log: &MirroredLog,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Fetched, String> {
        let broker = self.broker.upgrade().ok_or("the broker is shutting down")?;
        let id = (log.kind != LogKind::Meta).then_some(log.resource_id);
        let name = log.kind.log_name(log.partition);
        let durable = broker
            .leader_logs(id)
            .and_then(|logs| logs.into_iter().find(|(n, _)| *n == name))
            .map(|(_, durable)| durable)
            .ok_or_else(|| format!("log {} is not open on this broker", log.display))?;
        read_durable(&durable, offset, max_bytes)
    }
}

/// Reads `durable` as [`LogSource::read`] describes.
pub fn read_durable(
    durable: &DurableLog,
    offset: u64,
    max_bytes: usize,
) -> Result<Fetched, String> {
    let log_start_offset = durable.log_start_offset();
    let batches = durable
        .read(offset.max(log_start_offset), max_bytes)
        .map_err(|err| err.to_string())?;
    // Taken after the read, so that it is at or above every batch read.
    let high_watermark = durable.high_watermark();
    Ok(Fetched {
        batches,
        high_watermark,
        log_start_offset,
    })
}
