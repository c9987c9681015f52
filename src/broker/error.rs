//! The errors the broker core returns; each variant is a decision for the
//! caller (fix the request, log in, pick another name, retry later).

use std::path::PathBuf;

use crate::log::LogError;
use crate::meta::CatalogError;

/// An error of a broker operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A request field has an invalid value.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// Name (or JSON path) of the field.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// No token, or an invalid, expired or logged-out token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may see the resource but not do this to it.
    #[error("{0}")]
    Forbidden(String),
    /// The resource does not exist, or is private and not visible to the caller.
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// What kind of thing, e.g. "topic".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The name is taken.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// What kind of thing, e.g. "queue".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Too much work of one kind is in progress; the client should retry
    /// later.
    #[error("{0}")]
    Throttled(String),
    /// A message or request is over a configured size limit.
    #[error("{what} is {size} bytes, the maximum is {max}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A fetch offset outside the partition's readable range.
    #[error(
        "offset {offset} is out of range for partition {partition}: \
         readable offsets are {log_start_offset} to {high_watermark}"
    )]
    OffsetOutOfRange {
        /// Partition that was read.
        partition: u32,
        /// Requested offset.
        offset: u64,
        /// First retained offset.
        log_start_offset: u64,
        /// First offset not yet readable.
        high_watermark: u64,
    },
    /// The disk holding a partition is full; nothing was written.
    #[error("disk full while writing {path}")]
    DiskFull {
        /// The segment or directory that could not grow.
        path: PathBuf,
    },
    /// The cluster cannot serve the request right now: this broker no
    /// longer leads the resource, no leader is elected, too few replicas
    /// are in sync, or replication did not confirm a write in time. The
    /// client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// An idempotent producer's sequence numbers do not follow the ones
    /// it stored before: a gap, or an overlap that is not a retry of a
    /// recent request.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// A stored batch failed its checks when read: it is not served.
    #[error(
        "the batch at offset {} of {log} is damaged and is not served; \
         the broker's log and `ferry-log verify` give the details",
        offset.map_or_else(|| "?".to_string(), |offset| offset.to_string())
    )]
    CorruptData {
        /// The partition, as its directory names it, e.g. `topics/orders@3/0`.
        log: String,
        /// The damaged batch's base offset, when its header reads.
        offset: Option<u64>,
    },
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Storage(LogError),
    /// A bug or an unexpected state. The message names where it happened.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand for broker results.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl BrokerError {
    /// An [`BrokerError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> BrokerError {
        BrokerError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<LogError> for BrokerError {
    fn from(err: LogError) -> Self {
        match err {
            LogError::DiskFull { path } => BrokerError::DiskFull { path },
            other => BrokerError::Storage(other),
        }
    }
}

impl From<CatalogError> for BrokerError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::AlreadyExists { kind, name } => BrokerError::AlreadyExists { kind, name },
            CatalogError::NotFound { kind, name } => BrokerError::NotFound { kind, name },
        }
    }
}
