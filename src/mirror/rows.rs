//! The SQL that mirrors each kind of log record.
//!
//! Metadata events become single statements applied in log order. Messages,
//! committed offsets and queue deliveries become rows that the sink inserts
//! many at a time (see `sink.rs`).

use mysql_async::Value;
use serde::Serialize;
use serde_json::{json, Map};

use crate::broker::message::ATTRIBUTE_JSON_VALUE;
use crate::broker::offsets::{parse_key, parse_offset};
use crate::broker::queue_log::EVENT_KEY;
use crate::broker::queue_state::QueueEvent;
use crate::log::Record;
use crate::meta::MetaEvent;

/// One statement with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// SQL text with `?` placeholders.
    pub sql: &'static str,
    /// One value per placeholder.
    pub params: Vec<Value>,
}

fn statement(sql: &'static str, params: Vec<Value>) -> Statement {
    Statement { sql, params }
}

/// Returns the statements that apply one `__meta` event. Events with no
/// table (token revocations, grants) give none.
pub fn meta_statements(event: &MetaEvent) -> Vec<Statement> {
    match event {
        MetaEvent::UserRegistered {
            username,
            created_ms,
            ..
        } => vec![statement(
            "INSERT INTO users (username, created_at) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE created_at = VALUES(created_at)",
            vec![username.as_str().into(), datetime(*created_ms)],
        )],
        MetaEvent::TopicCreated(spec) => vec![statement(
            "REPLACE INTO topics (id, name, owner, access, partitions, replication_factor,
                retention_ms, retention_bytes, cleanup, message_ttl_ms, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                spec.id.into(),
                spec.name.as_str().into(),
                spec.owner.as_str().into(),
                enum_text(&spec.access).into(),
                spec.partitions.into(),
                spec.replication_factor.into(),
                spec.retention_ms.into(),
                spec.retention_bytes.into(),
                enum_text(&spec.cleanup).into(),
                spec.message_ttl_ms.into(),
                datetime(spec.created_ms),
            ],
        )],
        MetaEvent::TopicDeleted { id, .. } => {
            let id = Value::from(*id);
            [
                "DELETE FROM topics WHERE id = ?",
                "DELETE FROM messages WHERE kind = 'topic' AND resource_id = ?",
                "DELETE FROM consumer_offsets WHERE topic_id = ?",
                "DELETE FROM subscriptions WHERE topic_id = ?",
                "DELETE FROM bindings WHERE topic_id = ?",
                "DELETE FROM mirror_checkpoints
                 WHERE kind IN ('topic', 'offsets') AND resource_id = ?",
            ]
            .into_iter()
            .map(|sql| statement(sql, vec![id.clone()]))
            .collect()
        }
        MetaEvent::QueueCreated(spec) => vec![statement(
            "REPLACE INTO queues (id, name, owner, access, visibility_timeout_ms,
                max_deliveries, dead_letter_queue, message_ttl_ms, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                spec.id.into(),
                spec.name.as_str().into(),
                spec.owner.as_str().into(),
                enum_text(&spec.access).into(),
                spec.visibility_timeout_ms.into(),
                spec.max_deliveries.into(),
                spec.dead_letter_queue.clone().into(),
                spec.message_ttl_ms.into(),
                datetime(spec.created_ms),
            ],
        )],
        MetaEvent::QueueDeleted { id, .. } => {
            let id = Value::from(*id);
            [
                "DELETE FROM queues WHERE id = ?",
                "DELETE FROM messages WHERE kind = 'queue' AND resource_id = ?",
                "DELETE FROM queue_deliveries WHERE queue_id = ?",
                "DELETE FROM bindings WHERE queue_id = ?",
                "DELETE FROM mirror_checkpoints
                 WHERE kind IN ('queue', 'queue_state') AND resource_id = ?",
            ]
            .into_iter()
            .map(|sql| statement(sql, vec![id.clone()]))
            .collect()
        }
        MetaEvent::SubscriptionCreated(spec) => vec![statement(
            "REPLACE INTO subscriptions (topic_id, name, topic_name, owner, pattern, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                spec.topic_id.into(),
                spec.name.as_str().into(),
                spec.topic.as_str().into(),
                spec.owner.as_str().into(),
                spec.pattern.clone().into(),
                datetime(spec.created_ms),
            ],
        )],
        // Only the live incarnation of a topic has a row under its name:
        // deleting a topic deletes its subscriptions.
        MetaEvent::SubscriptionDeleted { topic, name } => vec![
            statement(
                "DELETE FROM consumer_offsets WHERE subscription = ?
                 AND topic_id IN (SELECT topic_id FROM subscriptions
                                  WHERE topic_name = ? AND name = ?)",
                vec![
                    name.as_str().into(),
                    topic.as_str().into(),
                    name.as_str().into(),
                ],
            ),
            statement(
                "DELETE FROM subscriptions WHERE topic_name = ? AND name = ?",
                vec![topic.as_str().into(), name.as_str().into()],
            ),
        ],
        MetaEvent::BindingAdded(spec) => vec![statement(
            "REPLACE INTO bindings (id, queue_id, queue_name, topic_id, topic_name, pattern,
                owner, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                spec.id.into(),
                spec.queue_id.into(),
                spec.queue.as_str().into(),
                spec.topic_id.into(),
                spec.topic.as_str().into(),
                spec.pattern.as_str().into(),
                spec.owner.as_str().into(),
                datetime(spec.created_ms),
            ],
        )],
        MetaEvent::BindingRemoved { id } => vec![statement(
            "DELETE FROM bindings WHERE id = ?",
            vec![(*id).into()],
        )],
        MetaEvent::TokenRevoked { .. }
        | MetaEvent::GrantAdded { .. }
        | MetaEvent::GrantRevoked { .. } => Vec::new(),
    }
}

/// Columns of `messages`, in the order of [`message_row`].
pub const MESSAGE_COLUMNS: &str = "kind, resource_id, partition_id, log_offset, created_at, \
    timestamp_ms, message_key, routing_key, headers, value, value_is_json, ttl_ms, producer";

/// Returns the `messages` row of a topic or queue message.
pub fn message_row(kind: &str, resource_id: u64, partition: u32, record: &Record) -> Vec<Value> {
    let mut headers = Map::new();
    for (name, value) in &record.headers {
        let value = match std::str::from_utf8(value) {
            Ok(text) => json!(text),
            Err(_) => json!({ "base64": base64_text(value) }),
        };
        headers.insert(name.clone(), value);
    }
    vec![
        kind.into(),
        resource_id.into(),
        partition.into(),
        record.offset.into(),
        datetime(record.timestamp_ms),
        record.timestamp_ms.into(),
        record.key.as_ref().map(|k| k.to_vec()).into(),
        record.routing_key.as_ref().map(|k| k.to_vec()).into(),
        serde_json::Value::Object(headers).to_string().into(),
        record.value.as_ref().map(|v| v.to_vec()).into(),
        (record.attributes & ATTRIBUTE_JSON_VALUE != 0).into(),
        (record.ttl_ms > 0).then_some(record.ttl_ms).into(),
        record
            .producer
            .as_ref()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .into(),
    ]
}

/// Topic id, subscription and partition of a committed offset.
pub type OffsetKey = (u64, String, u32);

/// A change to `consumer_offsets` from one record of a topic's offsets log.
#[derive(Debug, Clone, PartialEq)]
pub enum OffsetChange {
    /// The subscription committed an offset: the key and the full row.
    Commit(OffsetKey, Vec<Value>),
    /// The key was deleted: the key and its row's key columns.
    Delete(OffsetKey, Vec<Value>),
}

/// Columns of `consumer_offsets`, in the order of [`OffsetChange::Commit`].
pub const OFFSET_COLUMNS: &str = "topic_id, subscription, partition_id, next_offset, committed_at";

/// Returns the change a record of an offsets log makes, or `None` for the
/// router's own entries (their subscription name starts with `~`) and
/// records that do not parse.
pub fn offset_change(record: &Record) -> Option<OffsetChange> {
    let key = parse_key(record.key.as_deref()?)?;
    if key.subscription.starts_with('~') {
        return None;
    }
    let id: Vec<Value> = vec![
        key.topic_id.into(),
        key.subscription.as_str().into(),
        key.partition.into(),
    ];
    let key = (key.topic_id, key.subscription, key.partition);
    match record.value.as_deref() {
        None => Some(OffsetChange::Delete(key, id)),
        Some(value) => {
            let offset = parse_offset(value)?;
            let mut row = id;
            row.push(offset.into());
            row.push(datetime(record.timestamp_ms));
            Some(OffsetChange::Commit(key, row))
        }
    }
}

/// Columns of `queue_deliveries`, in the order of [`delivery_rows`].
pub const DELIVERY_COLUMNS: &str =
    "queue_id, state_offset, message_offset, event, at, lease_deadline, dead_letter_reason";

/// Returns the `queue_deliveries` rows of one record of a queue's state
/// log: one per message the event names. Snapshots, which repeat earlier
/// events, and records that do not parse give none.
pub fn delivery_rows(queue_id: u64, record: &Record) -> Vec<Vec<Value>> {
    if record.key.as_deref() != Some(EVENT_KEY) {
        return Vec::new();
    }
    let Some(event) = record
        .value
        .as_deref()
        .and_then(|value| serde_json::from_slice::<QueueEvent>(value).ok())
    else {
        return Vec::new();
    };
    let at = datetime(record.timestamp_ms);
    let row = |offset: u64, event: &str, deadline: Value, reason: Option<&str>| {
        vec![
            queue_id.into(),
            record.offset.into(),
            offset.into(),
            event.into(),
            at.clone(),
            deadline,
            reason.into(),
        ]
    };
    match &event {
        QueueEvent::Leased {
            offsets,
            deadline_ms,
        } => offsets
            .iter()
            .map(|&o| row(o, "leased", datetime(*deadline_ms), None))
            .collect(),
        QueueEvent::Acked { offsets } => offsets
            .iter()
            .map(|&o| row(o, "acked", Value::NULL, None))
            .collect(),
        QueueEvent::Released { offsets } => offsets
            .iter()
            .map(|&o| row(o, "released", Value::NULL, None))
            .collect(),
        QueueEvent::DeadLettered { entries, .. } => entries
            .iter()
            .map(|e| {
                row(
                    e.offset,
                    "dead_lettered",
                    Value::NULL,
                    Some(e.reason.as_str()),
                )
            })
            .collect(),
        QueueEvent::DeadLettersCopied { .. } => Vec::new(),
    }
}

/// Returns a `DATETIME(3)` value, in UTC, for ms since the Unix epoch.
pub fn datetime(ms: i64) -> Value {
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000) as u32;
    let (year, month, day) = civil_date(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400) as u32;
    // MySQL's DATETIME spans years 1000 to 9999; clamp what lies outside.
    let year = year.clamp(1000, 9999) as u16;
    Value::Date(
        year,
        month,
        day,
        (second_of_day / 3600) as u8,
        (second_of_day / 60 % 60) as u8,
        (second_of_day % 60) as u8,
        millis * 1000,
    )
}

/// Returns the proleptic Gregorian (year, month, day) of a day number,
/// counted from 1970-01-01.
fn civil_date(days: i64) -> (i64, u8, u8) {
    // Shift to an era count from 0000-03-01, so that leap days fall at the
    // end of each 400-year era and of each year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u8;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u8;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Returns the JSON string form of a unit enum (`"public"`, `"compact"`).
fn enum_text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn base64_text(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_matches_known_dates() {
        let cases = [
            (0, (1970, 1, 1, 0, 0, 0, 0)),
            (951_782_400_000, (2000, 2, 29, 0, 0, 0, 0)),
            (1_796_431_737_638, (2026, 12, 5, 0, 48, 57, 638_000)),
            (-1, (1969, 12, 31, 23, 59, 59, 999_000)),
            (4_107_542_400_000, (2100, 3, 1, 0, 0, 0, 0)),
        ];
        for (ms, (y, mo, d, h, mi, s, us)) in cases {
            assert_eq!(datetime(ms), Value::Date(y, mo, d, h, mi, s, us), "{ms}");
        }
    }

    #[test]
    fn offsets_log_records_become_commits_and_deletes() {
        let record = |key: &str, value: Option<&str>| Record {
            key: Some(key.as_bytes().to_vec().into()),
            value: value.map(|v| v.as_bytes().to_vec().into()),
            timestamp_ms: 0,
            ..Record::default()
        };
        assert_eq!(
            offset_change(&record("7/billing/2", Some("41"))),
            Some(OffsetChange::Commit(
                (7, "billing".to_string(), 2),
                vec![
                    7u64.into(),
                    "billing".into(),
                    2u32.into(),
                    41u64.into(),
                    datetime(0),
                ]
            ))
        );
        assert_eq!(
            offset_change(&record("7/billing/2", None)),
            Some(OffsetChange::Delete(
                (7, "billing".to_string(), 2),
                vec![7u64.into(), "billing".into(), 2u32.into()]
            ))
        );
        assert_eq!(offset_change(&record("7/~route/2", Some("5"))), None);
        assert_eq!(offset_change(&record("not a key", Some("5"))), None);
    }
}
