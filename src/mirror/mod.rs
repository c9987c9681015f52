//! MySQL mirror of the logs: users, topics, queues, bindings,
//! subscriptions, messages, committed offsets and queue deliveries, written
//! to a MySQL or MariaDB database as rows, for queries in SQL.
//!
//! The mirror reads logs and never sits on the write path: a slow or absent
//! database makes the mirror lag, not the broker. One task (`task.rs`)
//! tails `__meta` and every log of every live topic and queue up to its
//! high watermark. Each transaction writes the rows of one log's records
//! and moves that log's row in `mirror_checkpoints` from the offset it read
//! to the offset after them, with a conditional update. A crash of the
//! broker or the database between two transactions loses nothing and
//! repeats nothing, and a mirror that finds a checkpoint other than the one
//! it expects (another writer, a rebuild) rolls back and reloads them.
//!
//! The list of topics and queues comes from the database's own `topics`
//! and `queues` tables, which the mirror fills from `__meta`. A log is
//! therefore tailed only after the event that created it is mirrored, and
//! never after the event that deleted it. In a cluster one broker runs the mirror,
//! chosen by a ZooKeeper lock (`lock.rs`). `docs/mirror.md` has the schema.

mod lock;
mod owner;
pub mod rows;
pub mod schema;
mod source;
mod status;
mod task;

pub use lock::MirrorLock;
pub use owner::{broker_owner, cluster_owner};
pub use source::{BrokerSource, Fetched, LogKind, LogSource, MirroredLog};
pub use status::{LogLag, MirrorStatus};
pub use task::{rebuild, start};

/// Errors of the mirror. None of them stops the broker: the task logs the
/// error and starts a new session after a pause.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The database URL cannot be parsed.
    #[error("invalid MySQL URL: {0}")]
    Url(String),
    /// A statement failed or the connection broke.
    #[error("MySQL error: {0}")]
    Sql(#[from] mysql_async::Error),
    /// The schema cannot be migrated.
    #[error("{0}")]
    Schema(String),
    /// The database did not respond in time.
    #[error("the database did not respond within {0:?}")]
    Timeout(std::time::Duration),
    /// A checkpoint in the database is not the one the mirror expected.
    #[error(
        "the checkpoint of {log} changed under the mirror (a rebuild or another mirror); reloading"
    )]
    Conflict {
        /// Checkpoint key of the log.
        log: String,
    },
}
