//! The mirror task: sessions of one database connection that tail every
//! log into the database, one transaction per log and read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Transaction, TxOpts, Value};
use tracing::{info, warn};

use super::lock::MirrorLock;
use super::rows::{
    self, delivery_rows, message_row, meta_statements, offset_change, OffsetChange, OffsetKey,
    DELIVERY_COLUMNS, MESSAGE_COLUMNS, OFFSET_COLUMNS,
};
use super::schema;
use super::source::{Fetched, LogKind, LogSource, MirroredLog, READ_BYTES};
use super::status::{LogLag, MirrorStatus};
use super::MirrorError;
use crate::broker::now_ms;
use crate::log::Record;
use crate::meta::MetaEvent;

/// Pause between two passes over the logs when the last found nothing new.
const IDLE_PAUSE: Duration = Duration::from_millis(100);

/// Pause before a new session after an error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A session that ran at least this long before its error starts a new run
/// of failures, whose first lines are all logged.
const FAILURE_RUN_RESET: Duration = Duration::from_secs(60);

/// Maximum wait for the database in one step (connect, one transaction,
/// one listing), after which the session ends and a new one starts: a
/// stalled server must not stall the mirror for good.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Rows per multi-row `INSERT`.
const ROWS_PER_INSERT: usize = 500;

/// Parameter bytes after which a multi-row `INSERT` is sent early, well
/// below the server's default `max_allowed_packet` of 16 MiB.
const BYTES_PER_INSERT: usize = 4 << 20;

/// A log's row in `mirror_checkpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    next_offset: u64,
    log_start_offset: u64,
}

/// Starts the mirror task. It runs while `lock` is held (always, for a
/// broker alone) and returns the status it keeps up to date.
///
/// `owner` names this broker, or the cluster, in `ferry_schema`: a database
/// that another owner mirrors into is left alone.
pub fn start<S: LogSource>(
    source: S,
    url: String,
    lock: MirrorLock,
    owner: String,
) -> Arc<MirrorStatus> {
    let status = Arc::new(MirrorStatus::default());
    let task_status = Arc::clone(&status);
    tokio::spawn(async move {
        let source = Arc::new(source);
        let mut lock = lock;
        loop {
            let held = lock.acquire().await;
            task_status.set_active(true);
            info!("mirror started");
            tokio::select! {
                () = run_sessions(&*source, &url, &owner, &task_status) => {}
                () = held.lost() => {
                    warn!("mirror stopped: this broker lost the mirror lock");
                }
            }
            task_status.set_active(false);
        }
    });
    status
}

/// Runs sessions one after the other; each ends with an error.
async fn run_sessions<S: LogSource>(source: &S, url: &str, owner: &str, status: &MirrorStatus) {
    let mut failures: u64 = 0;
    loop {
        let started = Instant::now();
        if let Err(err) = session(source, url, owner, status).await {
            // A session that ran a while ends a run of failures.
            if started.elapsed() > FAILURE_RUN_RESET {
                failures = 0;
            }
            failures += 1;
            // An outage logs its first lines, then one in ten.
            if failures <= 3 || failures.is_multiple_of(10) {
                warn!(error = %err, failures, "mirror session ended; starting a new one");
            }
            status.count_error();
            refresh_lags(source, status).await;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Recomputes the lag of every log with a recorded lag from the logs alone,
/// while the database cannot be written, so that the lag grows with the
/// records that wait.
async fn refresh_lags<S: LogSource>(source: &S, status: &MirrorStatus) {
    for lag in status.lags() {
        if let Ok(fetched) = source.read(&lag.mirrored, lag.mirrored_offset, 1).await {
            status.record_lag(log_lag(&lag.mirrored, lag.mirrored_offset, &fetched));
        }
    }
}

/// Returns the lag of `log` mirrored up to `mirrored_offset`, from a read
/// that starts there: the records below the high watermark, and the age of
/// the first of them.
fn log_lag(log: &MirroredLog, mirrored_offset: u64, fetched: &Fetched) -> LogLag {
    let records = fetched.high_watermark.saturating_sub(mirrored_offset);
    let oldest_waiting = fetched
        .batches
        .iter()
        .flat_map(|batch| &batch.records)
        .find(|record| record.offset >= mirrored_offset)
        .map(|record| record.timestamp_ms);
    let seconds = match (records, oldest_waiting) {
        (0, _) | (_, None) => 0.0,
        (_, Some(ms)) => (now_ms() - ms).max(0) as f64 / 1000.0,
    };
    LogLag {
        log: log.display.clone(),
        key: log.checkpoint_key(),
        mirrored: log.clone(),
        mirrored_offset,
        high_watermark: fetched.high_watermark.max(mirrored_offset),
        records,
        seconds,
    }
}

/// Connects, migrates the schema, loads the checkpoints and tails the logs
/// until an error.
async fn session<S: LogSource>(
    source: &S,
    url: &str,
    owner: &str,
    status: &MirrorStatus,
) -> Result<(), MirrorError> {
    let mut conn = within(connect(url)).await?;
    let found = within(schema::migrate(&mut conn, owner)).await?;
    if found < schema::SCHEMA_VERSION {
        info!(
            from = found,
            to = schema::SCHEMA_VERSION,
            "migrated the mirror schema"
        );
    }
    status.set_connected(true);
    let mut checkpoints = within(load_checkpoints(&mut conn)).await?;
    loop {
        within(check_meta_checkpoint(&mut conn, &checkpoints)).await?;
        let logs = within(mirrored_logs(&mut conn)).await?;
        let mut progressed = false;
        for log in &logs {
            progressed |=
                within(mirror_log(&mut conn, source, log, &mut checkpoints, status)).await?;
        }
        let names: Vec<String> = logs.iter().map(|log| log.display.clone()).collect();
        status.retain_lags(&names);
        if !progressed {
            tokio::time::sleep(IDLE_PAUSE).await;
        }
    }
}

/// Runs one step of a session, failing it after [`STEP_TIMEOUT`].
async fn within<T>(
    step: impl std::future::Future<Output = Result<T, MirrorError>>,
) -> Result<T, MirrorError> {
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .unwrap_or(Err(MirrorError::Timeout(STEP_TIMEOUT)))
}

async fn connect(url: &str) -> Result<Conn, MirrorError> {
    let opts = Opts::from_url(url).map_err(|err| MirrorError::Url(err.to_string()))?;
    Ok(Conn::new(opts).await?)
}

async fn load_checkpoints(conn: &mut Conn) -> Result<HashMap<String, Checkpoint>, MirrorError> {
    let rows: Vec<(String, u64, u64)> = conn
        .query("SELECT log, next_offset, log_start_offset FROM mirror_checkpoints")
        .await?;
    Ok(rows
        .into_iter()
        .map(|(log, next_offset, log_start_offset)| {
            (
                log,
                Checkpoint {
                    next_offset,
                    log_start_offset,
                },
            )
        })
        .collect())
}

/// Fails with `Conflict` when the `__meta` checkpoint in the database is
/// not the one in `checkpoints`. An idle mirror writes no transaction that
/// would notice a rebuild, so each pass starts with this check.
async fn check_meta_checkpoint(
    conn: &mut Conn,
    checkpoints: &HashMap<String, Checkpoint>,
) -> Result<(), MirrorError> {
    let key = MirroredLog::meta().checkpoint_key();
    let stored: Option<u64> = conn
        .exec_first(
            "SELECT next_offset FROM mirror_checkpoints WHERE log = ?",
            (key.as_str(),),
        )
        .await?;
    if stored != checkpoints.get(&key).map(|c| c.next_offset) {
        return Err(MirrorError::Conflict { log: key });
    }
    Ok(())
}

/// Returns `__meta` and the logs of every topic and queue the database
/// holds, which are the live ones as far as `__meta` is mirrored.
async fn mirrored_logs(conn: &mut Conn) -> Result<Vec<MirroredLog>, MirrorError> {
    let mut logs = vec![MirroredLog::meta()];
    let topics: Vec<(u64, String, u32)> = conn
        .query("SELECT id, name, partitions FROM topics ORDER BY id")
        .await?;
    for (id, name, partitions) in topics {
        logs.extend(MirroredLog::of_topic(&name, id, partitions));
    }
    let queues: Vec<(u64, String)> = conn
        .query("SELECT id, name FROM queues ORDER BY id")
        .await?;
    for (id, name) in queues {
        logs.extend(MirroredLog::of_queue(&name, id));
    }
    Ok(logs)
}

/// Mirrors one read of `log` in one transaction. Returns whether it moved
/// the checkpoint. A log that cannot be read now is skipped.
async fn mirror_log<S: LogSource>(
    conn: &mut Conn,
    source: &S,
    log: &MirroredLog,
    checkpoints: &mut HashMap<String, Checkpoint>,
    status: &MirrorStatus,
) -> Result<bool, MirrorError> {
    let key = log.checkpoint_key();
    let stored = checkpoints.get(&key).copied();
    let from = stored.map_or(0, |c| c.next_offset);
    let fetched = match source.read(log, from, READ_BYTES).await {
        Ok(fetched) => fetched,
        Err(reason) => {
            // A topic or queue deleted a moment ago, or its leader being
            // elected: the next pass tries again.
            tracing::debug!(log = %log.display, %reason, "mirror skipped a log it cannot read");
            return Ok(false);
        }
    };

    let start = fetched.log_start_offset;
    let stored_start = stored.map_or(0, |c| c.log_start_offset);
    let mut next = from.max(start);
    let mut batch_rows = Rows::default();
    let mut newest_ms = None;
    for batch in &fetched.batches {
        for record in batch.records.iter().filter(|r| r.offset >= next) {
            batch_rows.add(log, record);
            newest_ms = Some(record.timestamp_ms);
        }
        next = next.max(batch.header.next_offset());
    }

    if stored.is_some() && next == from && start <= stored_start {
        status.record_lag(log_lag(log, from, &fetched));
        return Ok(false);
    }
    if start > from {
        warn!(log = %log.display, mirrored_offset = from, log_start_offset = start,
            "records were deleted from the log before the mirror read them");
    }

    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut written = batch_rows.write(&mut tx).await?;
    if start > stored_start {
        written += delete_below(&mut tx, log, start).await?;
    }
    let checkpoint = Checkpoint {
        next_offset: next,
        log_start_offset: start,
    };
    save_checkpoint(&mut tx, log, &key, stored, checkpoint).await?;
    tx.commit().await?;
    checkpoints.insert(key, checkpoint);
    status.count_transaction(written);
    // The read ended at `next`, so the records that wait are not in it.
    // The age of the newest record written is used in place of theirs.
    let mut lag = log_lag(log, next, &fetched);
    if lag.records > 0 {
        lag.seconds = newest_ms.map_or(0.0, |ms| (now_ms() - ms).max(0) as f64 / 1000.0);
    }
    status.record_lag(lag);
    Ok(true)
}

/// Deletes the rows of records below `start`, which retention removed from
/// the log. Returns the rows deleted.
async fn delete_below(
    tx: &mut Transaction<'_>,
    log: &MirroredLog,
    start: u64,
) -> Result<u64, MirrorError> {
    let kind = match log.kind {
        LogKind::Topic => "topic",
        LogKind::Queue => "queue",
        _ => return Ok(0),
    };
    tx.exec_drop(
        "DELETE FROM messages WHERE kind = ? AND resource_id = ? AND partition_id = ?
         AND log_offset < ?",
        (kind, log.resource_id, log.partition, start),
    )
    .await?;
    Ok(tx.affected_rows())
}

/// Moves the log's checkpoint from `stored` to `next`, or inserts it.
/// Fails with `Conflict` when the row is not `stored` any more.
async fn save_checkpoint(
    tx: &mut Transaction<'_>,
    log: &MirroredLog,
    key: &str,
    stored: Option<Checkpoint>,
    next: Checkpoint,
) -> Result<(), MirrorError> {
    let now = rows::datetime(now_ms());
    match stored {
        Some(stored) => {
            tx.exec_drop(
                "UPDATE mirror_checkpoints SET next_offset = ?, log_start_offset = ?, updated_at = ?
                 WHERE log = ? AND next_offset = ? AND log_start_offset = ?",
                (
                    next.next_offset,
                    next.log_start_offset,
                    now,
                    key,
                    stored.next_offset,
                    stored.log_start_offset,
                ),
            )
            .await?;
            if tx.affected_rows() != 1 {
                return Err(MirrorError::Conflict {
                    log: key.to_string(),
                });
            }
        }
        None => {
            let inserted = tx
                .exec_drop(
                    "INSERT INTO mirror_checkpoints
                     (log, kind, resource_id, partition_id, next_offset, log_start_offset, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        log.kind.as_str(),
                        log.resource_id,
                        log.partition,
                        next.next_offset,
                        next.log_start_offset,
                        now,
                    ),
                )
                .await;
            if let Err(err) = inserted {
                return Err(match err {
                    mysql_async::Error::Server(ref server) if server.code == 1062 => {
                        MirrorError::Conflict {
                            log: key.to_string(),
                        }
                    }
                    err => err.into(),
                });
            }
        }
    }
    Ok(())
}

/// The rows of one read, by table.
#[derive(Default)]
struct Rows {
    meta: Vec<rows::Statement>,
    messages: Vec<Vec<Value>>,
    /// The last commit of each key in the read, unless a delete followed.
    commits: HashMap<OffsetKey, Vec<Value>>,
    /// The keys whose last record in the read is a delete.
    offset_deletes: HashMap<OffsetKey, Vec<Value>>,
    deliveries: Vec<Vec<Value>>,
}

impl Rows {
    fn add(&mut self, log: &MirroredLog, record: &Record) {
        match log.kind {
            LogKind::Meta => {
                let value = record.value.as_deref().unwrap_or_default();
                match serde_json::from_slice::<MetaEvent>(value) {
                    Ok(event) => self.meta.extend(meta_statements(&event)),
                    Err(err) => {
                        warn!(offset = record.offset, error = %err, "mirror skipped an undecodable metadata event");
                    }
                }
            }
            LogKind::Topic => {
                self.messages
                    .push(message_row("topic", log.resource_id, log.partition, record))
            }
            LogKind::Queue => self
                .messages
                .push(message_row("queue", log.resource_id, 0, record)),
            // Only the last record of each key in the read counts, so
            // deletes and commits of different keys need no order.
            LogKind::Offsets => match offset_change(record) {
                Some(OffsetChange::Commit(key, row)) => {
                    self.offset_deletes.remove(&key);
                    self.commits.insert(key, row);
                }
                Some(OffsetChange::Delete(key, row)) => {
                    self.commits.remove(&key);
                    self.offset_deletes.insert(key, row);
                }
                None => {}
            },
            LogKind::QueueState => self
                .deliveries
                .extend(delivery_rows(log.resource_id, record)),
        }
    }

    /// Writes every row in `tx` and returns how many statements and rows
    /// it wrote.
    async fn write(self, tx: &mut Transaction<'_>) -> Result<u64, MirrorError> {
        let mut written = 0;
        for statement in self.meta {
            tx.exec_drop(statement.sql, statement.params).await?;
            written += 1;
        }
        for row in self.offset_deletes.into_values() {
            tx.exec_drop(
                "DELETE FROM consumer_offsets
                 WHERE topic_id = ? AND subscription = ? AND partition_id = ?",
                row,
            )
            .await?;
            written += 1;
        }
        written += insert_many(
            tx,
            "INSERT INTO messages",
            MESSAGE_COLUMNS,
            "",
            self.messages,
        )
        .await?;
        written += insert_many(
            tx,
            "INSERT INTO consumer_offsets",
            OFFSET_COLUMNS,
            " ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset),
              committed_at = VALUES(committed_at)",
            self.commits.into_values().collect(),
        )
        .await?;
        written += insert_many(
            tx,
            "INSERT INTO queue_deliveries",
            DELIVERY_COLUMNS,
            "",
            self.deliveries,
        )
        .await?;
        Ok(written)
    }
}

/// Inserts `rows` with multi-row `INSERT` statements of at most
/// [`ROWS_PER_INSERT`] rows or about [`BYTES_PER_INSERT`] bytes. Returns the
/// rows inserted.
async fn insert_many(
    tx: &mut Transaction<'_>,
    insert: &str,
    columns: &str,
    suffix: &str,
    rows: Vec<Vec<Value>>,
) -> Result<u64, MirrorError> {
    let total = rows.len() as u64;
    let mut chunk: Vec<Value> = Vec::new();
    let mut chunk_rows = 0;
    let mut chunk_bytes = 0;
    let width = columns.split(',').count();
    for row in rows {
        chunk_bytes += row.iter().map(value_len).sum::<usize>();
        chunk.extend(row);
        chunk_rows += 1;
        if chunk_rows == ROWS_PER_INSERT || chunk_bytes >= BYTES_PER_INSERT {
            send_insert(
                tx,
                insert,
                columns,
                suffix,
                width,
                chunk_rows,
                std::mem::take(&mut chunk),
            )
            .await?;
            chunk_rows = 0;
            chunk_bytes = 0;
        }
    }
    if chunk_rows > 0 {
        send_insert(tx, insert, columns, suffix, width, chunk_rows, chunk).await?;
    }
    Ok(total)
}

async fn send_insert(
    tx: &mut Transaction<'_>,
    insert: &str,
    columns: &str,
    suffix: &str,
    width: usize,
    rows: usize,
    params: Vec<Value>,
) -> Result<(), MirrorError> {
    let row = format!("({})", vec!["?"; width].join(", "));
    let values = vec![row.as_str(); rows].join(", ");
    let sql = format!("{insert} ({columns}) VALUES {values}{suffix}");
    tx.exec_drop(sql, params).await?;
    Ok(())
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Bytes(bytes) => bytes.len(),
        _ => 8,
    }
}

/// Drops the mirror's tables. The running mirror notices within one pass
/// (its `__meta` checkpoint is gone), creates them again, takes ownership
/// and writes every log again from its start.
///
/// # Errors
///
/// The database cannot be reached or contains no mirror, or a statement
/// fails.
pub async fn rebuild(url: &str) -> Result<(), MirrorError> {
    let mut conn = connect(url).await?;
    schema::drop_all(&mut conn).await?;
    conn.disconnect().await?;
    Ok(())
}
