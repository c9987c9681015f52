//! Option values shared by several commands, mapped to the client's types.

use clap::ValueEnum;

use crate::client::{Access, Cleanup, Permission, ResourceKind, StartPosition};

/// `--access`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccessArg {
    /// Every user may publish and consume
    Public,
    /// Only the owner and users with grants; others get 404
    Private,
}

impl From<AccessArg> for Access {
    fn from(access: AccessArg) -> Access {
        match access {
            AccessArg::Public => Access::Public,
            AccessArg::Private => Access::Private,
        }
    }
}

/// `--cleanup`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CleanupArg {
    /// Retention deletes old segments
    Delete,
    /// Compaction keeps the latest message per key
    Compact,
}

impl From<CleanupArg> for Cleanup {
    fn from(cleanup: CleanupArg) -> Cleanup {
        match cleanup {
            CleanupArg::Delete => Cleanup::Delete,
            CleanupArg::Compact => Cleanup::Compact,
        }
    }
}

/// `--start` of a new subscription.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StartArg {
    /// At the first retained message
    Earliest,
    /// After the last message present now
    Latest,
}

impl From<StartArg> for StartPosition {
    fn from(start: StartArg) -> StartPosition {
        match start {
            StartArg::Earliest => StartPosition::Earliest,
            StartArg::Latest => StartPosition::Latest,
        }
    }
}

/// The permission of `grant` and `revoke`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PermissionArg {
    /// Publish to the topic or send to the queue
    Publish,
    /// Fetch, subscribe, pull or receive
    Consume,
}

impl From<PermissionArg> for Permission {
    fn from(permission: PermissionArg) -> Permission {
        match permission {
            PermissionArg::Publish => Permission::Publish,
            PermissionArg::Consume => Permission::Consume,
        }
    }
}

/// The resource kind of `grant` and `revoke`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// A topic
    #[value(alias = "topic")]
    Topics,
    /// A queue
    #[value(alias = "queue")]
    Queues,
}

impl From<KindArg> for ResourceKind {
    fn from(kind: KindArg) -> ResourceKind {
        match kind {
            KindArg::Topics => ResourceKind::Topic,
            KindArg::Queues => ResourceKind::Queue,
        }
    }
}
