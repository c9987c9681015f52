//! The queue state log: how queue events and snapshots are stored, replayed
//! and made compactable.
//!
//! Every event is a record with the key `event` and the JSON of a
//! [`QueueEvent`] as value. From time to time the compaction task folds the
//! log into a [`QueueSnapshot`] and appends it with the key `snapshot`. A
//! snapshot covers the events below its `covers_below`, which is the log end
//! offset when it was folded; events appended between that offset and the
//! snapshot itself come after it in the replay. Replay therefore starts from
//! the latest snapshot and applies the events at or after its
//! `covers_below`, skipping the older ones wherever they lie.
//!
//! A snapshot is folded when a sealed segment ends above the latest one, so
//! the log keeps about one segment of events besides the snapshot.
//! Compaction of the state log with `clean_below` at the latest snapshot's
//! `covers_below` keeps only the newest `event` and `snapshot` records below
//! it, which replay ignores or replaces, so the log shrinks to one snapshot
//! and the events since.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::durable::DurableLog;
use crate::broker::error::{BrokerError, Result};
use crate::broker::queue_state::{QueueEvent, QueueSnapshot, QueueState};
use crate::broker::{now_ms, replay, replay_from};
use crate::log::{ProducerInfo, Record};

/// Key of a queue event record.
pub(crate) const EVENT_KEY: &[u8] = b"event";
/// Key of a snapshot record.
const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// Encodes queue events as state log records.
pub fn event_records(events: &[QueueEvent]) -> Result<Vec<Record>> {
    let timestamp_ms = now_ms();
    events
        .iter()
        .map(|event| {
            let value = serde_json::to_vec(event).map_err(|err| {
                BrokerError::Internal(format!("failed to encode queue event: {err}"))
            })?;
            Ok(Record {
                timestamp_ms,
                key: Some(Bytes::from_static(EVENT_KEY)),
                value: Some(value.into()),
                ..Record::default()
            })
        })
        .collect()
}

/// Replays the whole state log of queue `name`: returns the state and the
/// offset the latest snapshot covers (0 without a snapshot).
pub fn replay_state(log: &DurableLog, name: &str) -> Result<(QueueState, u64)> {
    replay_state_until(log, name, log.log_end_offset())
}

/// Replays the records below `end`, as [`replay_state`] does.
fn replay_state_until(log: &DurableLog, name: &str, end: u64) -> Result<(QueueState, u64)> {
    let mut latest: Option<QueueSnapshot> = None;
    replay(log, |record| {
        if record.offset < end && record.key.as_deref() == Some(SNAPSHOT_KEY) {
            latest = Some(decode(&record, name)?);
        }
        Ok(())
    })?;
    let (mut state, covers_below) = match &latest {
        Some(snapshot) => (QueueState::from_snapshot(snapshot), snapshot.covers_below),
        None => (QueueState::default(), 0),
    };
    replay_from(log, covers_below, end, |record| {
        if record.key.as_deref() != Some(SNAPSHOT_KEY) {
            state.apply(&decode::<QueueEvent>(&record, name)?);
        }
        Ok(())
    })?;
    Ok((state, covers_below))
}

/// Appends a snapshot of the whole log when a sealed segment ends above
/// the offset the latest snapshot covers (`covers`), which is when a new
/// snapshot lets compaction drop more. Updates `covers` and returns it: the
/// bound below which the log may be compacted.
///
/// The live queue is not involved: the snapshot is folded from the log, so
/// it holds exactly the events below its `covers_below`.
pub async fn snapshot_if_due(log: &Arc<DurableLog>, name: &str, covers: &AtomicU64) -> Result<u64> {
    let segments = log.partition_log().segments();
    let sealed_end = match segments.len() {
        0 | 1 => 0,
        n => segments[n - 2].next_offset,
    };
    if sealed_end <= covers.load(Ordering::Acquire) {
        return Ok(covers.load(Ordering::Acquire));
    }
    let end = log.log_end_offset();
    let (state, _) = {
        let name = name.to_string();
        let log = Arc::clone(log);
        tokio::task::spawn_blocking(move || replay_state_until(&log, &name, end))
            .await
            .map_err(|err| BrokerError::Internal(format!("queue snapshot task failed: {err}")))??
    };
    let value = serde_json::to_vec(&state.snapshot(end))
        .map_err(|err| BrokerError::Internal(format!("failed to encode queue snapshot: {err}")))?;
    let record = Record {
        timestamp_ms: now_ms(),
        key: Some(Bytes::from_static(SNAPSHOT_KEY)),
        value: Some(value.into()),
        ..Record::default()
    };
    log.append(vec![record], ProducerInfo::default()).await?;
    covers.fetch_max(end, Ordering::AcqRel);
    Ok(end)
}

fn decode<T: serde::de::DeserializeOwned>(record: &Record, name: &str) -> Result<T> {
    let value = record.value.as_deref().unwrap_or_default();
    serde_json::from_slice(value).map_err(|err| {
        BrokerError::Internal(format!(
            "undecodable queue state record at offset {} of queue `{name}`: {err}",
            record.offset
        ))
    })
}
