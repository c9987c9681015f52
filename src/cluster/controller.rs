//! The controller: the one broker that assigns replicas to new resources,
//! removes the state of deleted ones, and elects a new leader from the
//! in-sync replicas when a leader dies. Every change is a versioned write,
//! so a controller acting on a stale view loses and retries with the next.

use tracing::{info, warn};

use crate::broker::queue::{MESSAGES_LOG, STATE_LOG};
use crate::broker::topic::Topic;
use crate::cluster::node::{meta_state, resource_id, Cluster};
use crate::cluster::state::{resource_key, BrokerId, ClusterView, ResourceState, META_KEY};
use crate::cluster::ClusterError;
use crate::meta::ResourceKind;

/// Runs one round of the controller's work on `view`.
pub async fn run_once(cluster: &Cluster, view: &ClusterView) {
    let result = async {
        ensure_meta(cluster, view).await?;
        create_missing(cluster, view).await?;
        top_up_replicas(cluster, view).await?;
        remove_deleted(cluster, view).await?;
        move_replicas(cluster, view).await?;
        elect_leaders(cluster, view).await
    }
    .await;
    match result {
        Ok(()) | Err(ClusterError::Conflict) => {}
        Err(err) => warn!(error = %err, "controller round failed"),
    }
}

fn live_brokers(view: &ClusterView) -> Vec<BrokerId> {
    view.brokers.keys().copied().collect()
}

/// Creates the `__meta` resource, and makes every live broker a replica of
/// it: every broker needs the catalog.
async fn ensure_meta(cluster: &Cluster, view: &ClusterView) -> Result<(), ClusterError> {
    let live = live_brokers(view);
    match view.resources.get(META_KEY) {
        None => {
            cluster
                .coordinator
                .create_resource(META_KEY, &meta_state(live))
                .await?;
        }
        Some(versioned) => {
            let mut next = versioned.value.clone();
            for id in live {
                if !next.replicas.contains(&id) {
                    next.replicas.push(id);
                }
            }
            if next != versioned.value {
                info!(replicas = ?next.replicas, "adding brokers to the __meta replicas");
                cluster
                    .coordinator
                    .update_resource(META_KEY, &next, versioned.version)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Picks `count` live brokers round robin, starting at a place that
/// depends on `id`, so consecutive resources start on different brokers.
fn pick_replicas(live: &[BrokerId], count: usize, id: u64) -> Vec<BrokerId> {
    if live.is_empty() {
        return Vec::new();
    }
    let start = (id % live.len() as u64) as usize;
    (0..count.min(live.len()))
        .map(|i| live[(start + i) % live.len()])
        .collect()
}

/// Creates the state of every topic and queue in the catalog that has
/// none yet.
async fn create_missing(cluster: &Cluster, view: &ClusterView) -> Result<(), ClusterError> {
    let live = live_brokers(view);
    if live.is_empty() {
        return Ok(());
    }
    let default_factor = cluster.config.replication_factor;
    let missing: Vec<(String, ResourceState)> = cluster.broker.with_catalog(|catalog| {
        let topics = catalog.topics().map(|topic| {
            let spec = &topic.spec;
            let replicas = pick_replicas(&live, spec.replication_factor as usize, spec.id);
            (
                resource_key("topic", spec.id),
                new_state(
                    format!("topics/{}@{}", spec.name, spec.id),
                    Topic::log_names(spec.partitions),
                    replicas,
                ),
            )
        });
        let queues = catalog.queues().map(|queue| {
            let spec = &queue.spec;
            let replicas = pick_replicas(&live, default_factor as usize, spec.id);
            (
                resource_key("queue", spec.id),
                new_state(
                    format!("queues/{}@{}", spec.name, spec.id),
                    vec![MESSAGES_LOG.to_string(), STATE_LOG.to_string()],
                    replicas,
                ),
            )
        });
        topics
            .chain(queues)
            .filter(|(key, _)| !view.resources.contains_key(key))
            .collect()
    });
    for (key, state) in missing {
        cluster.coordinator.create_resource(&key, &state).await?;
    }
    Ok(())
}

fn new_state(dir: String, logs: Vec<String>, replicas: Vec<BrokerId>) -> ResourceState {
    ResourceState {
        dir,
        logs,
        leader: replicas.first().copied(),
        leader_epoch: 0,
        isr: replicas.clone(),
        replicas,
        target_replicas: None,
        moved: false,
    }
}

/// Adds live brokers as replicas of topics and queues created while fewer
/// brokers were live than their replication factor. The new
/// replicas catch up as followers and join the ISR like any other.
async fn top_up_replicas(cluster: &Cluster, view: &ClusterView) -> Result<(), ClusterError> {
    let live = live_brokers(view);
    let default_factor = cluster.config.replication_factor as usize;
    let factors: Vec<(String, usize)> = cluster.broker.with_catalog(|catalog| {
        let topics = catalog.topics().map(|topic| {
            (
                resource_key("topic", topic.spec.id),
                topic.spec.replication_factor as usize,
            )
        });
        let queues = catalog
            .queues()
            .map(|queue| (resource_key("queue", queue.spec.id), default_factor));
        topics.chain(queues).collect()
    });
    for (key, factor) in factors {
        let Some(versioned) = view.resources.get(&key) else {
            continue;
        };
        let state = &versioned.value;
        if state.moved || state.target_replicas.is_some() || state.replicas.len() >= factor {
            continue;
        }
        let id = resource_id(&key).unwrap_or(0);
        let mut next = state.clone();
        for candidate in pick_replicas(&live, live.len(), id) {
            if next.replicas.len() >= factor {
                break;
            }
            if !next.replicas.contains(&candidate) {
                next.replicas.push(candidate);
            }
        }
        if next.replicas != state.replicas {
            info!(resource = %key, replicas = ?next.replicas, "controller adds replicas up to the replication factor");
            write_state(cluster, &key, &next, versioned.version).await?;
        }
    }
    Ok(())
}

/// Deletes the state of topics and queues the catalog saw deleted.
async fn remove_deleted(cluster: &Cluster, view: &ClusterView) -> Result<(), ClusterError> {
    let deleted: Vec<(String, i32)> = cluster.broker.with_catalog(|catalog| {
        view.resources
            .iter()
            .filter(|(key, _)| {
                resource_id(key).is_some_and(|id| {
                    catalog.was_deleted(ResourceKind::Topic, id)
                        || catalog.was_deleted(ResourceKind::Queue, id)
                })
            })
            .map(|(key, versioned)| (key.clone(), versioned.version))
            .collect()
    });
    for (key, version) in deleted {
        cluster.coordinator.delete_resource(&key, version).await?;
    }
    Ok(())
}

/// Moves resources towards their target replicas: first every target
/// becomes a replica (and starts following), then, once all of them are in
/// sync, the replica list becomes the target and the first target, the
/// preferred leader, takes over the leadership.
async fn move_replicas(cluster: &Cluster, view: &ClusterView) -> Result<(), ClusterError> {
    for (key, versioned) in &view.resources {
        let state = &versioned.value;
        let Some(target) = &state.target_replicas else {
            continue;
        };
        let mut next = state.clone();
        let missing: Vec<BrokerId> = target
            .iter()
            .copied()
            .filter(|id| !state.replicas.contains(id))
            .collect();
        if !missing.is_empty() {
            next.replicas.extend(missing);
        } else if target.iter().all(|id| state.isr.contains(id)) {
            next.replicas = target.clone();
            next.isr = state
                .isr
                .iter()
                .copied()
                .filter(|id| target.contains(id))
                .collect();
            next.target_replicas = None;
            next.moved = true;
            // The first target is the preferred leader, and it is in sync.
            let preferred = target.first().copied();
            if preferred.is_some() && state.leader != preferred {
                next.leader = preferred;
                next.leader_epoch = state.leader_epoch + 1;
            }
        } else {
            // The new replicas are still catching up.
            continue;
        }
        info!(
            resource = %key,
            replicas = ?next.replicas,
            leader = ?next.leader,
            target = ?state.target_replicas,
            "controller moves replicas"
        );
        write_state(cluster, key, &next, versioned.version).await?;
    }
    Ok(())
}

/// Elects a leader for every resource whose leader is dead, and removes
/// dead brokers from the in-sync replicas of the others.
async fn elect_leaders(cluster: &Cluster, view: &ClusterView) -> Result<(), ClusterError> {
    let live = live_brokers(view);
    for (key, versioned) in &view.resources {
        let state = &versioned.value;
        let leader_alive = state.leader.is_some_and(|leader| live.contains(&leader));
        let live_isr: Vec<BrokerId> = state
            .isr
            .iter()
            .copied()
            .filter(|id| live.contains(id))
            .collect();
        let mut next = state.clone();
        if leader_alive {
            if live_isr == state.isr {
                continue;
            }
            next.isr = live_isr;
        } else {
            let from_isr = state
                .replicas
                .iter()
                .copied()
                .find(|id| live_isr.contains(id));
            let unclean = cluster.config.unclean_leader_election;
            match from_isr {
                Some(leader) => {
                    next.leader = Some(leader);
                    next.isr = live_isr;
                }
                None if unclean => {
                    match state.replicas.iter().copied().find(|id| live.contains(id)) {
                        Some(leader) => {
                            warn!(resource = %key, leader, "unclean leader election: acknowledged records may be lost");
                            next.leader = Some(leader);
                            next.isr = vec![leader];
                        }
                        None => next.leader = None,
                    }
                }
                // The ISR stays as it was, so the first of its members to
                // return becomes leader with every committed record.
                None => next.leader = None,
            }
            if next.leader == state.leader {
                continue;
            }
            next.leader_epoch = state.leader_epoch + 1;
        }
        info!(
            resource = %key,
            leader = ?next.leader,
            leader_epoch = next.leader_epoch,
            isr = ?next.isr,
            "controller changes leadership"
        );
        write_state(cluster, key, &next, versioned.version).await?;
    }
    Ok(())
}

/// Writes `next` if the state is still at `version`. Losing to another
/// write is no error: the next view shows the winner, and the next round
/// starts from there.
async fn write_state(
    cluster: &Cluster,
    key: &str,
    next: &ResourceState,
    version: i32,
) -> Result<(), ClusterError> {
    match cluster
        .coordinator
        .update_resource(key, next, version)
        .await
    {
        Ok(_) | Err(ClusterError::Conflict) => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::pick_replicas;

    #[test]
    fn pick_replicas_rotates_start() {
        let live = [1, 2, 3];
        assert_eq!(pick_replicas(&live, 3, 0), vec![1, 2, 3]);
        assert_eq!(pick_replicas(&live, 3, 1), vec![2, 3, 1]);
        assert_eq!(pick_replicas(&live, 2, 5), vec![3, 1]);
        assert_eq!(pick_replicas(&live, 5, 0), vec![1, 2, 3]);
        assert_eq!(pick_replicas(&[], 3, 0), Vec::<u32>::new());
    }
}
