//! The cluster state kept in ZooKeeper, as the brokers see it.
//!
//! ZooKeeper layout under the root (default `/ferry`):
//!
//! ```text
//! brokers/<id>        ephemeral, BrokerInfo as JSON
//! controller          ephemeral, the controller's broker id
//! resources/<key>     ResourceState as JSON, changed only with versioned writes
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Broker ids are small integers chosen by the operator.
pub type BrokerId = u32;

/// The contents of a broker's ephemeral znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// The broker's id.
    pub id: BrokerId,
    /// gRPC address of the broker, host:port.
    pub grpc: String,
    /// REST address of the broker, as a URL.
    pub rest: String,
}

/// Leadership of one resource: its replicas, leader, leader epoch and
/// in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceState {
    /// The resource's directory under the data directory, for example
    /// `topics/orders@12`.
    pub dir: String,
    /// The logs of the resource: subdirectories of `dir`.
    pub logs: Vec<String>,
    /// Brokers holding a replica, in preference order.
    pub replicas: Vec<BrokerId>,
    /// The leader, or `None` while no eligible replica is alive.
    pub leader: Option<BrokerId>,
    /// Incremented on every change of leader; fences older leaders.
    pub leader_epoch: u32,
    /// Replicas that have every record below the high watermark.
    pub isr: Vec<BrokerId>,
    /// Replicas the controller is moving to; once they are all in sync,
    /// `replicas` becomes this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<Vec<BrokerId>>,
    /// Set once replicas were moved by request: the controller then keeps
    /// the replica list as requested instead of topping it up to the
    /// replication factor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moved: bool,
}

/// A resource state with the znode version it was read at, for
/// conditional writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The decoded znode data.
    pub value: T,
    /// The znode's data version.
    pub version: i32,
}

/// The cluster state a broker read from ZooKeeper.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Live brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    /// The controller's id, if one is elected.
    pub controller: Option<BrokerId>,
    /// The broker that runs the MySQL mirror, if one holds the lock.
    pub mirror: Option<BrokerId>,
    /// Every resource by its ZooKeeper key.
    pub resources: BTreeMap<String, Versioned<ResourceState>>,
    /// Whether this broker has a live ZooKeeper session; without one it
    /// must not act as a leader.
    pub connected: bool,
}

impl ClusterView {
    /// Returns the leader of `key` and its epoch, when it has one.
    pub fn leader_of(&self, key: &str) -> Option<(BrokerId, u32)> {
        let state = &self.resources.get(key)?.value;
        Some((state.leader?, state.leader_epoch))
    }

    /// Returns the gRPC address of `broker`, if it is alive.
    pub fn grpc_address(&self, broker: BrokerId) -> Option<&str> {
        self.brokers.get(&broker).map(|info| info.grpc.as_str())
    }
}

/// The ZooKeeper key of the metadata resource.
pub const META_KEY: &str = "meta";

/// Returns the ZooKeeper key of a topic or queue: its kind and id, for example
/// `topic-12`. Ids are unique across kinds, so the kind is only for people.
pub fn resource_key(kind: &str, id: u64) -> String {
    format!("{kind}-{id}")
}
