//! The mirror's reads in a cluster: each log is fetched from its resource's
//! leader with an observer fetch, which returns committed batches and does
//! not count as a replica's progress.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cluster::proto::{FetchPosition, FetchRequest, ReplicaError};
use crate::cluster::state::{resource_key, META_KEY};
use crate::cluster::Cluster;
use crate::log::decode_batch;
use crate::mirror::{Fetched, LogKind, LogSource, MirroredLog};

/// How long one fetch may take before the mirror moves on.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads logs from their leaders anywhere in the cluster.
pub struct ClusterSource {
    cluster: Weak<Cluster>,
}

impl ClusterSource {
    /// Returns a source that reads through `cluster`.
    pub fn new(cluster: &Arc<Cluster>) -> ClusterSource {
        ClusterSource {
            cluster: Arc::downgrade(cluster),
        }
    }
}

impl LogSource for ClusterSource {
    async fn read(
        &self,
        log: &MirroredLog,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Fetched, String> {
        let cluster = self
            .cluster
            .upgrade()
            .ok_or("the broker is shutting down")?;
        let key = match log.kind {
            LogKind::Meta => META_KEY.to_string(),
            LogKind::Topic | LogKind::Offsets => resource_key("topic", log.resource_id),
            LogKind::Queue | LogKind::QueueState => resource_key("queue", log.resource_id),
        };
        let view = cluster.coordinator.view();
        let (leader, leader_epoch) = view
            .leader_of(&key)
            .ok_or_else(|| format!("{key} has no leader now"))?;
        let address = view
            .brokers
            .get(&leader)
            .map(|info| info.grpc.clone())
            .ok_or_else(|| format!("leader {leader} of {key} is not registered"))?;
        let mut client = cluster
            .peers
            .replication(&address)
            .map_err(|status| status.message().to_string())?;
        let name = log.kind.log_name(log.partition);
        let mut position = FetchPosition {
            log: name.clone(),
            fetch_offset: offset,
        };
        // Retention may have moved the log start above `offset`: the
        // second attempt starts there.
        for _ in 0..2 {
            let request = FetchRequest {
                resource: key.clone(),
                leader_epoch,
                replica_id: cluster.broker_id(),
                logs: vec![position.clone()],
                max_wait_ms: 0,
                max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
                observer: true,
            };
            let response = tokio::time::timeout(FETCH_TIMEOUT, client.fetch(request))
                .await
                .map_err(|_| format!("fetch of {} from broker {leader} timed out", log.display))?
                .map_err(|status| status.message().to_string())?
                .into_inner();
            if response.error != ReplicaError::None as i32 {
                return Err(format!(
                    "broker {leader} refused the fetch: error {}",
                    response.error
                ));
            }
            let fetched = response
                .logs
                .into_iter()
                .find(|fetched| fetched.log == name)
                .ok_or_else(|| format!("broker {leader} returned no log {name}"))?;
            if fetched.error == ReplicaError::OffsetOutOfRange as i32
                && position.fetch_offset < fetched.log_start_offset
            {
                position.fetch_offset = fetched.log_start_offset;
                continue;
            }
            if fetched.error != ReplicaError::None as i32 {
                return Err(format!(
                    "broker {leader} cannot serve {}: error {}",
                    log.display, fetched.error
                ));
            }
            let batches = fetched
                .batches
                .iter()
                .map(|bytes| decode_batch(bytes).map_err(|err| err.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Fetched {
                batches,
                high_watermark: fetched.high_watermark,
                log_start_offset: fetched.log_start_offset,
            });
        }
        Err(format!(
            "the log start offset of {} keeps moving",
            log.display
        ))
    }
}
