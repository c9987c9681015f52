//! The follower's side of replication: one task per followed resource
//! that truncates a divergent tail, then fetches from the leader and
//! appends what it gets, batch by batch, as the leader stored it.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::cluster::node::Cluster;
use crate::cluster::proto::{
    EpochEndOffsetsRequest, FetchPosition, FetchRequest, LogEpoch, ReplicaError,
};
use crate::cluster::state::{BrokerId, META_KEY};
use crate::log::{FsyncPolicy, LogConfig, PartitionLog};

/// How long the leader may hold a fetch when it has nothing new.
const FETCH_WAIT_MS: u32 = 500;

/// Bytes per log and fetch.
const FETCH_MAX_BYTES: u32 = 4 << 20;

/// Pause before retrying after an error.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// The resource and leader a follower task follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerTarget {
    /// Resource key in ZooKeeper.
    pub key: String,
    /// Resource directory under the data directory.
    pub dir: String,
    /// Log names under `dir`.
    pub logs: Vec<String>,
    /// The leader's broker id.
    pub leader: BrokerId,
    /// The leader's gRPC address.
    pub leader_address: String,
    /// The leader epoch being followed.
    pub leader_epoch: u32,
}

/// The reason a fetch loop ended.
enum Restart {
    /// The logs must be checked for divergence again.
    Truncate,
}

/// Follows `target` until the task is aborted.
pub async fn run(cluster: Arc<Cluster>, target: FollowerTarget) {
    let logs = match open_logs(&cluster, &target) {
        Ok(logs) => logs,
        Err(err) => {
            warn!(resource = %target.key, error = %err, "failed to open logs to follow");
            return;
        }
    };
    let mut failures = 0u32;
    loop {
        if let Err(err) = truncate_divergent(&cluster, &target, &logs).await {
            failures += 1;
            if failures % 25 == 1 {
                warn!(resource = %target.key, leader = target.leader, error = %err, "failed to compare logs with the leader, retrying");
            }
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        }
        match fetch_loop(&cluster, &target, &logs).await {
            Ok(Restart::Truncate) => {}
            Err(err) => {
                failures += 1;
                if failures % 25 == 1 {
                    warn!(resource = %target.key, leader = target.leader, error = %err, "fetch from the leader failed, retrying");
                }
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

fn open_logs(
    cluster: &Cluster,
    target: &FollowerTarget,
) -> Result<Vec<(String, Arc<PartitionLog>)>, crate::broker::BrokerError> {
    let broker_config = cluster.broker.config();
    let dir = broker_config.data_dir.join(&target.dir);
    // NOTE: followers use the broker's segment size for every log, so their
    // segments may roll at other offsets than the leader's. Offsets and
    // record bytes are the same.
    let config = LogConfig {
        segment_bytes: broker_config.segment_bytes,
        ..LogConfig::default()
    };
    target
        .logs
        .iter()
        .map(|name| {
            let log = cluster
                .broker
                .logs()
                .open_partition(&dir.join(name), config)?;
            Ok((name.clone(), log))
        })
        .collect()
}

/// Asks the leader where each log's last epoch ends in its log and cuts
/// this broker's log there: what lies beyond was never committed.
async fn truncate_divergent(
    cluster: &Cluster,
    target: &FollowerTarget,
    logs: &[(String, Arc<PartitionLog>)],
) -> Result<(), String> {
    let requested: Vec<LogEpoch> = logs
        .iter()
        .filter_map(|(name, log)| {
            log.last_leader_epoch().map(|epoch| LogEpoch {
                log: name.clone(),
                epoch,
            })
        })
        .collect();
    if requested.is_empty() {
        return Ok(());
    }
    let mut client = cluster
        .peers
        .replication(&target.leader_address)
        .map_err(|status| status.message().to_string())?;
    let response = client
        .epoch_end_offsets(EpochEndOffsetsRequest {
            resource: target.key.clone(),
            leader_epoch: target.leader_epoch,
            replica_id: cluster.broker_id(),
            logs: requested,
        })
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner();
    if response.error != ReplicaError::None as i32 {
        let error = ReplicaError::try_from(response.error)
            .map_or("an unknown error", |error| error.as_str_name());
        return Err(format!("the leader rejected the request: {error}"));
    }
    for end in response.logs {
        let Some((_, log)) = logs.iter().find(|(name, _)| *name == end.log) else {
            continue;
        };
        let offset = if end.found {
            end.end_offset.min(log.log_end_offset())
        } else {
            log.log_start_offset()
        };
        if offset < log.log_end_offset() {
            info!(
                resource = %target.key,
                log = %end.log,
                from = log.log_end_offset(),
                to = offset,
                leader_epoch = target.leader_epoch,
                "truncating records the leader does not have"
            );
            log.truncate_to(offset).map_err(|err| err.to_string())?;
        }
    }
    Ok(())
}

async fn fetch_loop(
    cluster: &Cluster,
    target: &FollowerTarget,
    logs: &[(String, Arc<PartitionLog>)],
) -> Result<Restart, String> {
    let mut client = cluster
        .peers
        .replication(&target.leader_address)
        .map_err(|status| status.message().to_string())?;
    let is_meta = target.key == META_KEY;
    let fsync_always = matches!(cluster.broker.config().fsync, FsyncPolicy::Always);
    loop {
        let positions = logs
            .iter()
            .map(|(name, log)| FetchPosition {
                log: name.clone(),
                fetch_offset: log.log_end_offset(),
            })
            .collect();
        let response = client
            .fetch(FetchRequest {
                resource: target.key.clone(),
                leader_epoch: target.leader_epoch,
                replica_id: cluster.broker_id(),
                logs: positions,
                max_wait_ms: FETCH_WAIT_MS,
                max_bytes: FETCH_MAX_BYTES,
                observer: false,
            })
            .await
            .map_err(|status| status.message().to_string())?
            .into_inner();
        if response.error != ReplicaError::None as i32 {
            // The view changes soon, and the reconciler then restarts this
            // task with the new leader.
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        }
        for fetched in response.logs {
            let Some((name, log)) = logs.iter().find(|(name, _)| *name == fetched.log) else {
                continue;
            };
            if fetched.error == ReplicaError::OffsetOutOfRange as i32 {
                return Ok(Restart::Truncate);
            }
            if fetched.error != ReplicaError::None as i32 {
                continue;
            }
            let appended = !fetched.batches.is_empty();
            for batch in &fetched.batches {
                if let Err(err) = log.append_replica_batch(batch) {
                    warn!(resource = %target.key, log = %name, error = %err, "failed to append a fetched batch");
                    return Ok(Restart::Truncate);
                }
            }
            if appended && fsync_always {
                let log = Arc::clone(log);
                tokio::task::spawn_blocking(move || log.flush())
                    .await
                    .map_err(|err| err.to_string())?
                    .map_err(|err| err.to_string())?;
            }
            let high_watermark = fetched.high_watermark.min(log.log_end_offset());
            cluster
                .follower_high_watermarks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((target.key.clone(), name.clone()), high_watermark);
            if is_meta {
                cluster
                    .broker
                    .meta_log()
                    .advance_follower_high_watermark(high_watermark);
                if let Err(err) = cluster.broker.apply_meta_until(high_watermark) {
                    warn!(error = %err, "failed to apply metadata events");
                }
            }
        }
    }
}
