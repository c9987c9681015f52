//! Committed subscription offsets and routing progress, stored in a topic's
//! keyed offsets log.
//!
//! Each commit is a record whose key is `<topic id>/<subscription>/<partition>`
//! and whose value is the next offset to read, as decimal text; a record
//! without a value (a tombstone) forgets the key. The latest record per key
//! wins, so the log can be compacted without changing its meaning. The
//! router stores its progress under entries starting with `~` in place of
//! the subscription name, which no subscription name can (see `router.rs`).
//! The compaction task keeps the log to about one record per key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::broker::durable::DurableLog;
use crate::broker::error::Result;
use crate::broker::{now_ms, replay};
use crate::log::{ProducerInfo, Record};

/// Identifies one committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetKey {
    /// Id of the topic incarnation.
    pub topic_id: u64,
    /// Subscription name.
    pub subscription: String,
    /// Partition number.
    pub partition: u32,
}

/// A topic's offsets log and its folded state.
pub struct OffsetStore {
    log: Arc<DurableLog>,
    committed: Mutex<HashMap<OffsetKey, u64>>,
}

impl OffsetStore {
    /// Replays `log` into the committed-offset map.
    pub fn open(log: Arc<DurableLog>) -> Result<OffsetStore> {
        let mut committed = HashMap::new();
        replay(&log, |record| {
            let Some(key) = record.key.as_deref().and_then(parse_key) else {
                return Ok(());
            };
            match record.value.as_deref().map(parse_offset) {
                Some(Some(offset)) => {
                    committed.insert(key, offset);
                }
                Some(None) => {}
                None => {
                    committed.remove(&key);
                }
            }
            Ok(())
        })?;
        Ok(OffsetStore {
            log,
            committed: Mutex::new(committed),
        })
    }

    /// The committed offset for `key`.
    pub fn get(&self, key: &OffsetKey) -> Option<u64> {
        self.lock().get(key).copied()
    }

    /// Durably commits `offsets` (one batch for all of them).
    pub async fn commit(&self, offsets: Vec<(OffsetKey, u64)>) -> Result<()> {
        let now = now_ms();
        let records = offsets
            .iter()
            .map(|(key, offset)| Record {
                timestamp_ms: now,
                key: Some(format_key(key)),
                value: Some(Bytes::from(offset.to_string())),
                ..Record::default()
            })
            .collect();
        self.log.append(records, ProducerInfo::default()).await?;
        let mut committed = self.lock();
        for (key, offset) in offsets {
            committed.insert(key, offset);
        }
        Ok(())
    }

    /// Durably forgets every offset of `subscription` on `topic_id`.
    pub async fn forget(&self, topic_id: u64, subscription: &str) -> Result<()> {
        let keys: Vec<OffsetKey> = self
            .lock()
            .keys()
            .filter(|key| key.topic_id == topic_id && key.subscription == subscription)
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let tombstones = keys
            .iter()
            .map(|key| Record {
                timestamp_ms: now,
                key: Some(format_key(key)),
                ..Record::default()
            })
            .collect();
        self.log.append(tombstones, ProducerInfo::default()).await?;
        let mut committed = self.lock();
        for key in keys {
            committed.remove(&key);
        }
        Ok(())
    }

    /// The underlying log.
    pub fn log(&self) -> &Arc<DurableLog> {
        &self.log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OffsetKey, u64>> {
        self.committed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn format_key(key: &OffsetKey) -> Bytes {
    Bytes::from(format!(
        "{}/{}/{}",
        key.topic_id, key.subscription, key.partition
    ))
}

pub(crate) fn parse_key(bytes: &[u8]) -> Option<OffsetKey> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '/');
    let topic_id = parts.next()?.parse().ok()?;
    let subscription = parts.next()?.to_string();
    let partition = parts.next()?.parse().ok()?;
    Some(OffsetKey {
        topic_id,
        subscription,
        partition,
    })
}

pub(crate) fn parse_offset(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips() {
        let key = OffsetKey {
            topic_id: 12,
            subscription: "billing.v2".into(),
            partition: 3,
        };
        assert_eq!(parse_key(&format_key(&key)), Some(key));
        assert_eq!(parse_key(b"x/y/z"), None);
    }
}
