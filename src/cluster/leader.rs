//! The leader's side of replication: serving followers' fetches, and
//! shrinking and expanding the in-sync replicas from their progress.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::broker::DurableLog;
use crate::cluster::node::{resource_id, Cluster};
use crate::cluster::proto::{FetchRequest, FetchResponse, FetchedLog, ReplicaError};
use crate::cluster::state::BrokerId;
use crate::cluster::ClusterError;

/// How often the leader checks its followers' lag.
const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// A replica joins the ISR only if its last fetch is at most this old:
/// followers fetch at least twice a second, so an older fetch is from a
/// broker that stopped.
const RECENT_FETCH: Duration = Duration::from_secs(2);

/// Maximum wait a fetch may ask for.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(5);

/// The leader's record of one follower.
#[derive(Debug, Clone, Copy)]
struct FollowerStatus {
    /// Last fetch at which the follower had every log up to its end.
    last_caught_up: Instant,
    /// Whether the last fetch showed every log at or above the high
    /// watermark: the follower has every committed record.
    reached_high_watermark: bool,
    /// Time of the last fetch.
    last_fetch: Instant,
}

/// Followers' progress per resource this broker leads.
#[derive(Default)]
pub struct LeaderProgress {
    resources: Mutex<HashMap<String, ResourceProgress>>,
}

struct ResourceProgress {
    /// When this broker became leader: followers it has not heard from get
    /// `replica_lag_max` from here before they leave the ISR.
    since: Instant,
    followers: HashMap<BrokerId, FollowerStatus>,
}

impl LeaderProgress {
    /// Starts tracking `key` afresh after this broker became its leader.
    pub fn reset(&self, key: &str) {
        self.lock().insert(
            key.to_string(),
            ResourceProgress {
                since: Instant::now(),
                followers: HashMap::new(),
            },
        );
    }

    fn record(&self, key: &str, follower: BrokerId, caught_up: bool, reached_hw: bool) {
        let now = Instant::now();
        let mut resources = self.lock();
        let Some(resource) = resources.get_mut(key) else {
            return;
        };
        let since = resource.since;
        let status = resource
            .followers
            .entry(follower)
            .or_insert(FollowerStatus {
                last_caught_up: since,
                reached_high_watermark: false,
                last_fetch: now,
            });
        status.last_fetch = now;
        status.reached_high_watermark = reached_hw;
        if caught_up {
            status.last_caught_up = now;
        }
    }

    /// Returns the time `follower` was last caught up on `key`, whether its
    /// last fetch reached the high watermark, and the time of that fetch.
    fn status(&self, key: &str, follower: BrokerId) -> Option<(Instant, bool, Option<Instant>)> {
        let resources = self.lock();
        let resource = resources.get(key)?;
        Some(match resource.followers.get(&follower) {
            Some(status) => (
                status.last_caught_up,
                status.reached_high_watermark,
                Some(status.last_fetch),
            ),
            None => (resource.since, false, None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResourceProgress>> {
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handles a follower's fetch: records its progress, waits up to
/// `max_wait_ms` when it has everything, and returns the records after its
/// offsets up to the log end offset.
pub async fn handle_fetch(cluster: &Cluster, request: FetchRequest) -> FetchResponse {
    let error = |error: ReplicaError| FetchResponse {
        error: error as i32,
        logs: Vec::new(),
    };
    let key = request.resource.as_str();
    let Some(term) = cluster.leader_term(key) else {
        return error(ReplicaError::NotLeader);
    };
    if request.leader_epoch < term.leader_epoch {
        return error(ReplicaError::FencedLeaderEpoch);
    }
    if request.leader_epoch > term.leader_epoch {
        return error(ReplicaError::UnknownLeaderEpoch);
    }
    let Some(logs) = cluster.broker.leader_logs(resource_id(key)) else {
        return error(ReplicaError::NotLeader);
    };
    let logs: HashMap<String, Arc<DurableLog>> = logs.into_iter().collect();

    // Registered before the offsets are checked, so no append between the
    // check and the wait goes unnoticed.
    let mut wakeups: Vec<Pin<Box<Notified<'_>>>> = logs
        .values()
        .map(|log| Box::pin(log.changes().notified()))
        .collect();
    for wakeup in &mut wakeups {
        wakeup.as_mut().enable();
    }

    let mut caught_up = true;
    let mut reached_hw = true;
    let mut has_data = false;
    for position in &request.logs {
        let Some(log) = logs.get(&position.log) else {
            continue;
        };
        // An observer reads committed records only.
        let end = if request.observer {
            log.high_watermark()
        } else {
            log.log_end_offset()
        };
        if position.fetch_offset > end {
            continue;
        }
        if !request.observer {
            log.record_follower_offset(request.replica_id, position.fetch_offset);
        }
        caught_up &= position.fetch_offset >= end;
        reached_hw &= position.fetch_offset >= log.high_watermark();
        has_data |= position.fetch_offset < end;
    }
    if !request.observer {
        cluster
            .progress
            .record(key, request.replica_id, caught_up, reached_hw);
    }

    if !has_data && request.max_wait_ms > 0 && !wakeups.is_empty() {
        let wait = Duration::from_millis(request.max_wait_ms as u64).min(MAX_FETCH_WAIT);
        let _ = tokio::time::timeout(wait, futures_util::future::select_all(wakeups)).await;
    }

    let max_bytes = (request.max_bytes as usize).max(1);
    let fetched = request
        .logs
        .iter()
        .map(|position| {
            read_log(
                logs.get(&position.log),
                position,
                max_bytes,
                request.observer,
            )
        })
        .collect();
    FetchResponse {
        error: ReplicaError::None as i32,
        logs: fetched,
    }
}

fn read_log(
    log: Option<&Arc<DurableLog>>,
    position: &crate::cluster::proto::FetchPosition,
    max_bytes: usize,
    observer: bool,
) -> FetchedLog {
    let mut fetched = FetchedLog {
        log: position.log.clone(),
        ..FetchedLog::default()
    };
    let Some(log) = log else {
        fetched.error = ReplicaError::UnknownResource as i32;
        return fetched;
    };
    let end = log.log_end_offset();
    fetched.high_watermark = log.high_watermark();
    fetched.log_start_offset = log.log_start_offset();
    fetched.log_end_offset = end;
    if position.fetch_offset > end || position.fetch_offset < fetched.log_start_offset {
        fetched.error = ReplicaError::OffsetOutOfRange as i32;
        return fetched;
    }
    let limit = if observer {
        fetched.high_watermark
    } else {
        end
    };
    match log
        .partition_log()
        .read_raw(position.fetch_offset, max_bytes, limit)
    {
        Ok(batches) => fetched.batches = batches,
        Err(err) => {
            warn!(dir = %log.dir().display(), offset = position.fetch_offset, error = %err, "failed to read records for a follower");
            fetched.error = ReplicaError::UnknownResource as i32;
        }
    }
    fetched
}

/// Runs every [`ISR_CHECK_INTERVAL`]: removes from the ISR of each resource
/// this broker leads the followers that were not caught up within
/// `replica_lag_max`, and adds the replicas that reached the high
/// watermark. Changes go to ZooKeeper first, with a versioned write, and
/// apply locally only once written.
pub async fn run_isr_maintenance(cluster: Weak<Cluster>) {
    let mut ticker = tokio::time::interval(ISR_CHECK_INTERVAL);
    loop {
        ticker.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        for key in cluster.leading_keys() {
            if let Err(err) = update_isr(&cluster, &key).await {
                warn!(resource = %key, error = %err, "failed to update the in-sync replicas");
            }
        }
    }
}

async fn update_isr(cluster: &Cluster, key: &str) -> Result<(), ClusterError> {
    let me = cluster.broker_id();
    let view = cluster.coordinator.view();
    let Some(versioned) = view.resources.get(key) else {
        return Ok(());
    };
    let state = &versioned.value;
    // Without a session nothing can be written, and the next session
    // reads everything again.
    if state.leader != Some(me) || !view.connected {
        return Ok(());
    }
    let lag_max = cluster.config.replica_lag_max;
    let now = Instant::now();
    let mut isr = state.isr.clone();
    for &follower in &state.isr {
        if follower == me {
            continue;
        }
        let Some((last_caught_up, _, _)) = cluster.progress.status(key, follower) else {
            return Ok(());
        };
        if now.duration_since(last_caught_up) > lag_max {
            isr.retain(|id| *id != follower);
        }
    }
    for &replica in &state.replicas {
        if isr.contains(&replica) || !view.brokers.contains_key(&replica) {
            continue;
        }
        let Some((_, reached_hw, last_fetch)) = cluster.progress.status(key, replica) else {
            return Ok(());
        };
        if reached_hw && last_fetch.is_some_and(|at| now.duration_since(at) < RECENT_FETCH) {
            isr.push(replica);
        }
    }
    if !isr.contains(&me) {
        isr.insert(0, me);
    }
    if isr == state.isr {
        return Ok(());
    }
    let mut next = state.clone();
    next.isr = isr.clone();
    match cluster
        .coordinator
        .update_resource(key, &next, versioned.version)
        .await
    {
        Ok(_) => {
            info!(resource = %key, old = ?state.isr, new = ?isr, "changed the in-sync replicas");
            cluster.apply_isr(key, &isr);
            Ok(())
        }
        // Another write won; the next view shows it and the next round
        // starts from there.
        Err(ClusterError::Conflict) => Ok(()),
        Err(err) => Err(err),
    }
}
