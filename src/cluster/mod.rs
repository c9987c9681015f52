//! The cluster: ZooKeeper membership and leadership, replication between
//! brokers over gRPC, and forwarding of client requests to leaders.

pub mod controller;
pub mod follower;
pub mod leader;
pub mod mirror_source;
pub mod node;
pub mod peers;
pub mod reassign;
pub mod rpc;
pub mod secret;
pub mod state;
pub mod streams;
pub mod zk;

pub use node::Cluster;

/// Code generated from `proto/ferry/cluster/v1/cluster.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("ferry.cluster.v1");
}

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
    /// The cluster secret file is missing or too short.
    #[error("invalid cluster secret: {0}")]
    Secret(String),
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
