//! `GET /v1/cluster` on a broker that is part of a cluster: brokers,
//! controller, and per resource and partition its leader, leader epoch,
//! in-sync replicas and high watermark.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::broker::{Broker, Principal};
use crate::cluster::node::resource_id;
use crate::cluster::proto::{DescribeLogsRequest, LogStatus};
use crate::cluster::rpc::describe_local_logs;
use crate::cluster::state::resource_key;
use crate::cluster::Cluster;

/// How long the description waits for each broker's answer.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Returns whether the topic or queue with `id` exists and `principal` may
/// see it.
pub fn is_visible(broker: &Broker, id: u64, principal: &Principal) -> bool {
    broker.with_catalog(|catalog| {
        catalog
            .topics()
            .find(|topic| topic.spec.id == id)
            .map(|topic| topic.is_visible_to(&principal.username))
            .or_else(|| {
                catalog
                    .queues()
                    .find(|queue| queue.spec.id == id)
                    .map(|queue| queue.is_visible_to(&principal.username))
            })
            .unwrap_or(false)
    })
}

/// Describes the cluster as `principal` may see it: every broker and
/// resource state, and the partitions of the topics visible to them.
pub async fn describe(cluster: &Cluster, principal: &Principal) -> Value {
    let view = cluster.coordinator.view();
    let me = cluster.broker_id();

    // High watermarks are known exactly only by each resource's leader.
    let mut leader_logs: HashMap<(String, String), LogStatus> = HashMap::new();
    for (&id, info) in &view.brokers {
        let statuses = if id == me {
            describe_local_logs(cluster)
        } else {
            let Ok(mut client) = cluster.peers.replication(&info.grpc) else {
                continue;
            };
            match tokio::time::timeout(
                DESCRIBE_TIMEOUT,
                client.describe_logs(DescribeLogsRequest {}),
            )
            .await
            {
                Ok(Ok(response)) => response.into_inner().logs,
                _ => continue,
            }
        };
        for status in statuses.into_iter().filter(|status| status.leader) {
            leader_logs.insert((status.resource.clone(), status.log.clone()), status);
        }
    }

    let brokers: Vec<Value> = view
        .brokers
        .values()
        .map(|info| json!({"id": info.id, "rest": info.rest, "grpc": info.grpc, "alive": true}))
        .collect();
    // Private topics and queues stay hidden from users who cannot see them.
    let visible = |key: &str| -> bool {
        resource_id(key).is_none_or(|id| is_visible(&cluster.broker, id, principal))
    };
    let resources: Vec<Value> = view
        .resources
        .iter()
        .filter(|(key, _)| visible(key))
        .map(|(key, versioned)| {
            let state = &versioned.value;
            let logs: Vec<Value> = state
                .logs
                .iter()
                .map(|log| {
                    let status = leader_logs.get(&(key.clone(), log.clone()));
                    json!({
                        "log": log,
                        "high_watermark": status.map(|s| s.high_watermark),
                        "log_end_offset": status.map(|s| s.log_end_offset),
                    })
                })
                .collect();
            json!({
                "resource": key,
                "dir": state.dir,
                "replicas": state.replicas,
                "leader": state.leader,
                "leader_epoch": state.leader_epoch,
                "isr": state.isr,
                "target_replicas": state.target_replicas,
                "logs": logs,
            })
        })
        .collect();
    let topics: Vec<(String, u64, u32)> = cluster.broker.with_catalog(|catalog| {
        catalog
            .topics()
            .filter(|topic| topic.is_visible_to(&principal.username))
            .map(|topic| {
                (
                    topic.spec.name.clone(),
                    topic.spec.id,
                    topic.spec.partitions,
                )
            })
            .collect()
    });
    let mut partitions = Vec::new();
    for (name, id, count) in topics {
        let key = resource_key("topic", id);
        let state = view.resources.get(&key).map(|versioned| &versioned.value);
        for partition in 0..count {
            let status = leader_logs.get(&(key.clone(), partition.to_string()));
            partitions.push(json!({
                "topic": name,
                "partition": partition,
                "leader": state.and_then(|s| s.leader),
                "leader_epoch": state.map(|s| s.leader_epoch),
                "isr": state.map(|s| s.isr.clone()),
                "high_watermark": status.map(|s| s.high_watermark),
            }));
        }
    }
    json!({
        "broker_id": me,
        "brokers": brokers,
        "controller": view.controller,
        "resources": resources,
        "partitions": partitions,
    })
}
