//! The mirror's tables, created and migrated by the broker.
//!
//! The table `ferry_schema` contains one row with the schema version and
//! the owner: the broker or cluster that mirrors into the database. At
//! start the mirror applies, in order, every migration above that version,
//! under the named lock `ferry_mirror_schema`, so two brokers never migrate
//! at once. A database whose version is above [`SCHEMA_VERSION`] was
//! written by a newer broker, and the mirror stops rather than guess its
//! layout. Tables are `utf8mb4` with a binary collation, because names in
//! Ferry are case-sensitive and may hold any Unicode text.
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
    "CREATE TABLE IF NOT EXISTS mirror_checkpoints (
        log VARCHAR(64) NOT NULL PRIMARY KEY,
        kind VARCHAR(16) NOT NULL,
        resource_id BIGINT UNSIGNED NOT NULL,
        partition_id INT UNSIGNED NOT NULL,
        next_offset BIGINT UNSIGNED NOT NULL,
        log_start_offset BIGINT UNSIGNED NOT NULL,
        updated_at DATETIME(3) NOT NULL,
        KEY by_resource (kind, resource_id, partition_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS users (
        username VARCHAR(200) NOT NULL PRIMARY KEY,
        created_at DATETIME(3) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS topics (
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
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS queues (
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
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS bindings (
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        queue_id BIGINT UNSIGNED NOT NULL,
        queue_name VARCHAR(200) NOT NULL,
        topic_id BIGINT UNSIGNED NOT NULL,
        topic_name VARCHAR(200) NOT NULL,
        pattern TEXT NOT NULL,
        owner VARCHAR(200) NOT NULL,
        created_at DATETIME(3) NOT NULL,
        KEY by_topic (topic_id),
        KEY by_queue (queue_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS subscriptions (
        topic_id BIGINT UNSIGNED NOT NULL,
        name VARCHAR(200) NOT NULL,
        topic_name VARCHAR(200) NOT NULL,
        owner VARCHAR(200) NOT NULL,
        pattern TEXT NULL,
        created_at DATETIME(3) NOT NULL,
        PRIMARY KEY (topic_id, name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS messages (
        kind ENUM('topic', 'queue') NOT NULL,
        resource_id BIGINT UNSIGNED NOT NULL,
        partition_id INT UNSIGNED NOT NULL,
        log_offset BIGINT UNSIGNED NOT NULL,
        created_at DATETIME(3) NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        message_key MEDIUMBLOB NULL,
        routing_key MEDIUMBLOB NULL,
        headers JSON NOT NULL,
        value LONGBLOB NULL,
        value_is_json BOOLEAN NOT NULL,
        ttl_ms BIGINT UNSIGNED NULL,
        producer VARCHAR(200) NULL,
        PRIMARY KEY (kind, resource_id, partition_id, log_offset),
        KEY by_producer_time (producer, created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS consumer_offsets (
        topic_id BIGINT UNSIGNED NOT NULL,
        subscription VARCHAR(200) NOT NULL,
        partition_id INT UNSIGNED NOT NULL,
        next_offset BIGINT UNSIGNED NOT NULL,
        committed_at DATETIME(3) NOT NULL,
        PRIMARY KEY (topic_id, subscription, partition_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS queue_deliveries (
        queue_id BIGINT UNSIGNED NOT NULL,
        state_offset BIGINT UNSIGNED NOT NULL,
        message_offset BIGINT UNSIGNED NOT NULL,
        event ENUM('leased', 'acked', 'released', 'dead_lettered') NOT NULL,
        at DATETIME(3) NOT NULL,
        lease_deadline DATETIME(3) NULL,
        dead_letter_reason VARCHAR(32) NULL,
        PRIMARY KEY (queue_id, state_offset, message_offset),
        KEY by_message (queue_id, message_offset)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
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
/// found. `owner` names the broker or cluster that mirrors into the
/// database. The first one to migrate it owns it, and any other is refused.
///
/// # Errors
///
/// `Schema` when the database holds tables of the same names that the
/// mirror did not create, belongs to another owner, is newer than this
/// broker, or the lock is not granted in time; `Sql` for a failed
/// statement.
pub async fn migrate(conn: &mut Conn, owner: &str) -> Result<u32, MirrorError> {
    lock(conn).await?;
    let result = migrate_locked(conn, owner).await;
    let unlocked = conn
        .exec_drop("SELECT RELEASE_LOCK(?)", (SCHEMA_LOCK,))
        .await;
    let found = result?;
    unlocked?;
    Ok(found)
}

async fn migrate_locked(conn: &mut Conn, owner: &str) -> Result<u32, MirrorError> {
    let existing = existing_tables(conn).await?;
    if !existing.iter().any(|table| table == "ferry_schema") {
        // Tables of the same names without `ferry_schema` belong to
        // something else, which the mirror must not touch.
        if !existing.is_empty() {
            return Err(MirrorError::Schema(format!(
                "the database already has tables named {} that the mirror did not create; \
                 give the mirror a database of its own",
                existing.join(", ")
            )));
        }
        conn.query_drop(
            "CREATE TABLE ferry_schema (
                id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
                version INT UNSIGNED NOT NULL,
                owner VARCHAR(200) NOT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        )
        .await?;
        conn.exec_drop(
            "INSERT INTO ferry_schema (id, version, owner) VALUES (1, 0, ?)",
            (owner,),
        )
        .await?;
    }
    let row: Option<(u32, String)> = conn
        .query_first("SELECT version, owner FROM ferry_schema WHERE id = 1")
        .await?;
    let Some((found, found_owner)) = row else {
        return Err(MirrorError::Schema(
            "the table ferry_schema has no row; run `ferry admin mirror rebuild` to start over"
                .into(),
        ));
    };
    if found_owner != owner {
        return Err(MirrorError::Schema(format!(
            "the database is mirrored by another broker or cluster ({found_owner}, this one is \
             {owner}); give each its own database, or run `ferry admin mirror rebuild` to hand \
             it to the mirror that starts next"
        )));
    }
    if found > SCHEMA_VERSION {
        return Err(MirrorError::Schema(format!(
            "the database has mirror schema version {found}, newer than version \
             {SCHEMA_VERSION} of this broker; upgrade the broker or point it at another database"
        )));
    }
    // Each statement creates its table only when missing, so a migration
    // that a crash cut short completes on the next start.
    for (version, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        for statement in *statements {
            conn.query_drop(*statement).await?;
        }
        conn.exec_drop(
            "UPDATE ferry_schema SET version = ? WHERE id = 1",
            (version as u32 + 1,),
        )
        .await?;
    }
    Ok(found)
}

/// Returns the mirror's table names that exist in the database.
async fn existing_tables(conn: &mut Conn) -> Result<Vec<String>, MirrorError> {
    let names: Vec<String> = conn
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        .await?;
    Ok(names
        .into_iter()
        .filter(|name| TABLES.contains(&name.as_str()))
        .collect())
}

/// Drops every table of the mirror, so that the next session creates them
/// again and mirrors every log from its start. Drops nothing unless the
/// database has `ferry_schema`: other tables of the same names are not the
/// mirror's.
///
/// # Errors
///
/// `Schema` when the lock is not granted in time, `Sql` for a failed
/// statement.
pub async fn drop_all(conn: &mut Conn) -> Result<(), MirrorError> {
    lock(conn).await?;
    let mut result: Result<(), MirrorError> = Ok(());
    if !existing_tables(conn)
        .await?
        .iter()
        .any(|table| table == "ferry_schema")
    {
        result = Err(MirrorError::Schema(
            "the database has no table ferry_schema, so it contains no mirror; nothing was dropped"
                .into(),
        ));
    }
    if result.is_ok() {
        for table in TABLES {
            if let Err(err) = conn
                .query_drop(format!("DROP TABLE IF EXISTS {table}"))
                .await
            {
                result = Err(err.into());
                break;
            }
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
