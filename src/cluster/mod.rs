//! The cluster: ZooKeeper membership and leadership, replication between
//! brokers over gRPC, and forwarding of client requests to leaders.

pub mod state;
pub mod zk;

use zookeeper_client as zk_client;

/// An error of the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This broker has no ZooKeeper session at the moment.
    #[error("no ZooKeeper session; the broker is reconnecting")]
    NoSession,
    /// A versioned write lost against another broker's write.
    #[error("the ZooKeeper state changed meanwhile")]
    Conflict,
    /// Another live broker is registered with this broker's id.
    #[error(
        "broker id {0} is registered by another live broker; give each broker its own --broker-id"
    )]
    DuplicateBrokerId(u32),
    /// A ZooKeeper request failed.
    #[error("failed to {action} in ZooKeeper: {source}")]
    ZooKeeper {
        /// What was being done.
        action: &'static str,
        /// The client's error.
        source: zk_client::Error,
    },
    /// State could not be encoded as JSON.
    #[error("failed to encode cluster state: {0}")]
    Encode(serde_json::Error),
}

impl ClusterError {
    fn zookeeper(action: &'static str, source: zk_client::Error) -> ClusterError {
        ClusterError::ZooKeeper { action, source }
    }

    fn encode(err: serde_json::Error) -> ClusterError {
        ClusterError::Encode(err)
    }
}
