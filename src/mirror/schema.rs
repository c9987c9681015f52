//! The mirror's tables, created and migrated by the broker.
//!
//! The table `ferry_schema` contains one row with the schema version. At start
//! the mirror applies, in order, every migration above that version, under
//! the named lock `ferry_mirror_schema`, so two brokers never migrate at
//! once. A database whose version is above [`SCHEMA_VERSION`] was written
//! by a newer broker, and the mirror stops rather than guess its layout.
//! `docs/mirror.md` describes each table.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::MirrorError;

/// The schema version this broker writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Named lock held while the schema is checked and migrated.
const SCHEMA_LOCK: &str = "ferry_mirror_schema";

/// Seconds to wait for [`SCHEMA_LOCK`].
const SCHEMA_LOCK_TIMEOUT_SECS: u32 = 30;

/// The statements of each migration: `MIGRATIONS[n]` takes the schema from
/// version `n` to `n + 1`.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE mirror_checkpoints (
        log VARCHAR(64) NOT NULL PRIMARY KEY,
        kind VARCHAR(16) NOT NULL,
        resource_id BIGINT UNSIGNED NOT NULL,
        partition_id INT UNSIGNED NOT NULL,
        next_offset BIGINT UNSIGNED NOT NULL,
        log_start_offset BIGINT UNSIGNED NOT NULL,
        updated_at DATETIME(3) NOT NULL,
        KEY by_resource (kind, resource_id, partition_id)
    ) ENGINE=InnoDB",
    "CREATE TABLE users (
        username VARCHAR(200) NOT NULL PRIMARY KEY,
        created_at DATETIME(3) NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE topics (
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        owner VARCHAR(200) NOT NULL,
        access VARCHAR(16) NOT NULL,
        partitions INT UNSIGNED NOT NULL,
        replication_factor INT UNSIGNED NOT NULL,
        retention_ms BIGINT UNSIGNED NULL,
        retention_bytes BIGINT UNSIGNED NULL,
        cleanup VARCHAR(16) NOT NULL,
        message_ttl_ms BIGINT UNSIGNED NULL,
        created_at DATETIME(3) NOT NULL,
        KEY by_name (name)
    ) ENGINE=InnoDB",
    "CREATE TABLE queues (
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        name VARCHAR(200) NOT NULL,
        owner VARCHAR(200) NOT NULL,
        access VARCHAR(16) NOT NULL,
        visibility_timeout_ms BIGINT UNSIGNED NOT NULL,
        max_deliveries INT UNSIGNED NULL,
        dead_letter_queue VARCHAR(200) NULL,
        message_ttl_ms BIGINT UNSIGNED NULL,
        created_at DATETIME(3) NOT NULL,
        KEY by_name (name)
    ) ENGINE=InnoDB",
    "CREATE TABLE bindings (
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        queue_id BIGINT UNSIGNED NOT NULL,
        queue_name VARCHAR(200) NOT NULL,
        topic_id BIGINT UNSIGNED NOT NULL,
        topic_name VARCHAR(200) NOT NULL,
        pattern VARCHAR(1024) NOT NULL,
        owner VARCHAR(200) NOT NULL,
        created_at DATETIME(3) NOT NULL,
        KEY by_topic (topic_id),
        KEY by_queue (queue_id)
    ) ENGINE=InnoDB",
    "CREATE TABLE subscriptions (
        topic_id BIGINT UNSIGNED NOT NULL,
        name VARCHAR(200) NOT NULL,
        topic_name VARCHAR(200) NOT NULL,
        owner VARCHAR(200) NOT NULL,
        pattern VARCHAR(1024) NULL,
        created_at DATETIME(3) NOT NULL,
        PRIMARY KEY (topic_id, name)
    ) ENGINE=InnoDB",
    "CREATE TABLE messages (
        kind ENUM('topic', 'queue') NOT NULL,
        resource_id BIGINT UNSIGNED NOT NULL,
        partition_id INT UNSIGNED NOT NULL,
        log_offset BIGINT UNSIGNED NOT NULL,
        created_at DATETIME(3) NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        message_key VARBINARY(4096) NULL,
        routing_key VARBINARY(4096) NULL,
        headers JSON NOT NULL,
        value LONGBLOB NULL,
        value_is_json BOOLEAN NOT NULL,
        ttl_ms BIGINT UNSIGNED NULL,
        producer VARCHAR(200) NULL,
        PRIMARY KEY (kind, resource_id, partition_id, log_offset),
        KEY by_producer_time (producer, created_at)
    ) ENGINE=InnoDB",
    "CREATE TABLE consumer_offsets (
        topic_id BIGINT UNSIGNED NOT NULL,
        subscription VARCHAR(200) NOT NULL,
        partition_id INT UNSIGNED NOT NULL,
        next_offset BIGINT UNSIGNED NOT NULL,
        committed_at DATETIME(3) NOT NULL,
        PRIMARY KEY (topic_id, subscription, partition_id)
    ) ENGINE=InnoDB",
    "CREATE TABLE queue_deliveries (
        queue_id BIGINT UNSIGNED NOT NULL,
        state_offset BIGINT UNSIGNED NOT NULL,
        message_offset BIGINT UNSIGNED NOT NULL,
        event ENUM('leased', 'acked', 'released', 'dead_lettered') NOT NULL,
        at DATETIME(3) NOT NULL,
        lease_deadline DATETIME(3) NULL,
        dead_letter_reason VARCHAR(32) NULL,
        PRIMARY KEY (queue_id, state_offset, message_offset),
        KEY by_message (queue_id, message_offset)
    ) ENGINE=InnoDB",
]];

/// Every table of the schema, for a rebuild.
const TABLES: &[&str] = &[
    "mirror_checkpoints",
    "users",
    "topics",
    "queues",
    "bindings",
    "subscriptions",
    "messages",
    "consumer_offsets",
    "queue_deliveries",
    "ferry_schema",
];

/// Brings the database to [`SCHEMA_VERSION`] and returns the version it
/// found.
///
/// # Errors
///
/// `Schema` when the database is newer than this broker or the lock is not
/// granted in time, `Sql` for a failed statement.
pub async fn migrate(conn: &mut Conn) -> Result<u32, MirrorError> {
    lock(conn).await?;
    let result = migrate_locked(conn).await;
    let unlocked = conn
        .exec_drop("SELECT RELEASE_LOCK(?)", (SCHEMA_LOCK,))
        .await;
    let found = result?;
    unlocked?;
    Ok(found)
}

async fn migrate_locked(conn: &mut Conn) -> Result<u32, MirrorError> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS ferry_schema (
            id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
            version INT UNSIGNED NOT NULL
        ) ENGINE=InnoDB",
    )
    .await?;
    let found: u32 = conn
        .query_first("SELECT version FROM ferry_schema WHERE id = 1")
        .await?
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(MirrorError::Schema(format!(
            "the database has mirror schema version {found}, newer than version \
             {SCHEMA_VERSION} of this broker; upgrade the broker or point it at another database"
        )));
    }
    for (version, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        for statement in *statements {
            conn.query_drop(*statement).await?;
        }
        conn.exec_drop(
            "INSERT INTO ferry_schema (id, version) VALUES (1, ?)
             ON DUPLICATE KEY UPDATE version = VALUES(version)",
            (version as u32 + 1,),
        )
        .await?;
    }
    Ok(found)
}

/// Drops every table of the mirror, so that the next start creates them
/// again and mirrors every log from its start.
///
/// # Errors
///
/// `Schema` when the lock is not granted in time, `Sql` for a failed
/// statement.
pub async fn drop_all(conn: &mut Conn) -> Result<(), MirrorError> {
    lock(conn).await?;
    let mut result: Result<(), MirrorError> = Ok(());
    for table in TABLES {
        if let Err(err) = conn
            .query_drop(format!("DROP TABLE IF EXISTS {table}"))
            .await
        {
            result = Err(err.into());
            break;
        }
    }
    let unlocked = conn
        .exec_drop("SELECT RELEASE_LOCK(?)", (SCHEMA_LOCK,))
        .await;
    result?;
    unlocked?;
    Ok(())
}

async fn lock(conn: &mut Conn) -> Result<(), MirrorError> {
    let granted: Option<i64> = conn
        .exec_first(
            "SELECT GET_LOCK(?, ?)",
            (SCHEMA_LOCK, SCHEMA_LOCK_TIMEOUT_SECS),
        )
        .await?
        .flatten();
    if granted != Some(1) {
        return Err(MirrorError::Schema(format!(
            "timed out after {SCHEMA_LOCK_TIMEOUT_SECS} s waiting for the lock {SCHEMA_LOCK} \
             that another broker holds while it migrates the schema"
        )));
    }
    Ok(())
}
