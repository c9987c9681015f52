//! One broker's part in the cluster. It follows the view from ZooKeeper
//! and the catalog, leads or follows each of its resources accordingly,
//! and runs the controller while it is the controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::broker::leadership::{LeaderTerm, METADATA_WAIT};
use crate::broker::{Broker, BrokerError, ClusterHooks, META_DIR, META_LOG};
use crate::cluster::controller;
use crate::cluster::follower::{self, FollowerTarget};
use crate::cluster::leader::LeaderProgress;
use crate::cluster::peers::Peers;
use crate::cluster::proto::{AppendToQueueRequest, BrokerFailure, CommitMetaRequest};
use crate::cluster::secret::ClusterSecret;
use crate::cluster::state::{BrokerId, BrokerInfo, ClusterView, ResourceState, META_KEY};
use crate::cluster::zk::Coordinator;
use crate::config::ClusterConfig;
use crate::meta::{Catalog, MetaEvent, ResourceKind};

/// The cluster side of one broker.
pub struct Cluster {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// Cluster settings.
    pub config: ClusterConfig,
    /// ZooKeeper session and view.
    pub coordinator: Arc<Coordinator>,
    /// gRPC clients for the other brokers.
    pub peers: Arc<Peers>,
    /// Followers' progress on the resources this broker leads.
    pub progress: LeaderProgress,
    /// The leader term of each resource this broker leads, by key.
    leading: Mutex<HashMap<String, LeaderTerm>>,
    /// Running follower tasks by resource key.
    followers: Mutex<HashMap<String, (FollowerTarget, JoinHandle<()>)>>,
    /// High watermark per (resource key, log) as this broker learned it
    /// while following.
    pub(crate) follower_high_watermarks: Mutex<HashMap<(String, String), u64>>,
}

impl Cluster {
    /// Joins the cluster: starts the ZooKeeper session, then follows the
    /// view and the catalog until the process ends.
    pub fn start(
        broker: Arc<Broker>,
        config: ClusterConfig,
        secret: &ClusterSecret,
        me: BrokerInfo,
    ) -> Arc<Cluster> {
        let coordinator = Coordinator::start(&config, me, broker.config().mysql_url.is_some());
        let cluster = Arc::new(Cluster {
            broker: Arc::clone(&broker),
            config,
            coordinator,
            peers: Peers::new(&secret.grpc_token),
            progress: LeaderProgress::default(),
            leading: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            follower_high_watermarks: Mutex::new(HashMap::new()),
        });
        broker.set_cluster(Arc::new(Hooks(Arc::downgrade(&cluster))));
        tokio::spawn(Arc::clone(&cluster).run_reconciler());
        tokio::spawn(crate::cluster::leader::run_isr_maintenance(Arc::downgrade(
            &cluster,
        )));
        cluster
    }

    /// This broker's id.
    pub fn broker_id(&self) -> BrokerId {
        self.coordinator.broker_id()
    }

    /// Returns the leader term of `key` if this broker leads it.
    pub fn leader_term(&self, key: &str) -> Option<LeaderTerm> {
        lock(&self.leading).get(key).cloned()
    }

    /// Keys of the resources this broker leads.
    pub fn leading_keys(&self) -> Vec<String> {
        lock(&self.leading).keys().cloned().collect()
    }

    /// Applies an ISR this broker wrote to ZooKeeper to its own logs.
    pub(crate) fn apply_isr(&self, key: &str, isr: &[BrokerId]) {
        let me = self.broker_id();
        let followers: Vec<BrokerId> = isr.iter().copied().filter(|id| *id != me).collect();
        if let Some(term) = lock(&self.leading).get_mut(key) {
            term.isr = followers.clone();
        }
        if let Some(logs) = self.broker.leader_logs(resource_id(key)) {
            for (_, log) in logs {
                log.set_isr(&followers);
            }
        }
    }

    /// Reacts to every change of the view or the catalog.
    async fn run_reconciler(self: Arc<Self>) {
        let mut view = self.coordinator.subscribe();
        let mut applied = self.broker.subscribe_meta_applied();
        loop {
            let current = view.borrow_and_update().clone();
            applied.borrow_and_update();
            if current.connected {
                self.reconcile(&current).await;
                if current.controller == Some(self.broker_id()) {
                    controller::run_once(&self, &current).await;
                }
            }
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                changed = applied.changed() => if changed.is_err() { return },
                // Retries what failed, such as a resource whose catalog
                // entry had not arrived yet.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn reconcile(self: &Arc<Self>, view: &ClusterView) {
        let me = self.broker_id();
        for (key, versioned) in &view.resources {
            let state = &versioned.value;
            if !state.replicas.contains(&me) {
                self.stop_following(key).await;
                self.stop_leading(key);
                self.remove_moved_replica(&state.dir);
                continue;
            }
            match state.leader {
                Some(leader) if leader == me => {
                    self.stop_following(key).await;
                    if let Err(err) = self.lead(key, state).await {
                        warn!(resource = %key, error = %err, "failed to take up leadership");
                    }
                }
                Some(leader) => {
                    self.stop_leading(key);
                    let Some(address) = view.grpc_address(leader) else {
                        continue;
                    };
                    let target = FollowerTarget {
                        key: key.clone(),
                        dir: state.dir.clone(),
                        logs: state.logs.clone(),
                        leader,
                        leader_address: address.to_string(),
                        leader_epoch: state.leader_epoch,
                    };
                    self.ensure_following(target).await;
                }
                None => {
                    self.stop_leading(key);
                    self.stop_following(key).await;
                }
            }
        }
        // Resources gone from ZooKeeper were deleted.
        let known: Vec<String> = lock(&self.leading)
            .keys()
            .chain(lock(&self.followers).keys())
            .cloned()
            .collect();
        for key in known {
            if !view.resources.contains_key(&key) {
                self.stop_following(&key).await;
                self.stop_leading(&key);
            }
        }
        self.remove_deleted_dirs();
    }

    async fn lead(&self, key: &str, state: &ResourceState) -> Result<(), BrokerError> {
        let me = self.broker_id();
        let isr: Vec<BrokerId> = state.isr.iter().copied().filter(|id| *id != me).collect();
        let current = lock(&self.leading).get(key).cloned();
        if let Some(term) = &current {
            if term.leader_epoch == state.leader_epoch {
                if term.isr != isr {
                    self.apply_isr(key, &state.isr);
                }
                return Ok(());
            }
        }
        let high_watermarks = state
            .logs
            .iter()
            .map(|log| {
                let hw = lock(&self.follower_high_watermarks)
                    .get(&(key.to_string(), log.clone()))
                    .copied()
                    .unwrap_or(0);
                (log.clone(), hw)
            })
            .collect();
        let term = LeaderTerm {
            leader_epoch: state.leader_epoch,
            isr,
            min_insync: (self.config.min_insync_replicas as usize).min(state.replicas.len()),
            high_watermarks,
        };
        if key == META_KEY {
            self.broker.lead_meta(&term).await?;
        } else {
            let id = resource_id(key)
                .ok_or_else(|| BrokerError::Internal(format!("invalid resource key `{key}`")))?;
            let found = self.broker.with_catalog(|catalog| find_spec(catalog, id));
            match found {
                Some(Spec::Topic(spec)) => self.broker.lead_topic(&spec, &term)?,
                Some(Spec::Queue(spec)) => self.broker.lead_queue(&spec, &term)?,
                // The catalog has not caught up yet; the next round retries.
                None => return Ok(()),
            }
        }
        self.progress.reset(key);
        info!(resource = %key, leader_epoch = term.leader_epoch, isr = ?state.isr, "leader");
        lock(&self.leading).insert(key.to_string(), term);
        Ok(())
    }

    fn stop_leading(&self, key: &str) {
        if lock(&self.leading).remove(key).is_none() {
            return;
        }
        if key == META_KEY {
            self.broker.stop_leading_meta();
        } else if let Some(id) = resource_id(key) {
            self.broker.stop_leading(id);
        }
        info!(resource = %key, "no longer leader");
    }

    async fn ensure_following(self: &Arc<Self>, target: FollowerTarget) {
        {
            let followers = lock(&self.followers);
            if let Some((running, handle)) = followers.get(&target.key) {
                if *running == target && !handle.is_finished() {
                    return;
                }
            }
        }
        self.stop_following(&target.key).await;
        let cluster = Arc::clone(self);
        info!(resource = %target.key, leader = target.leader, leader_epoch = target.leader_epoch, "following");
        let handle = tokio::spawn(follower::run(cluster, target.clone()));
        lock(&self.followers).insert(target.key.clone(), (target, handle));
    }

    async fn stop_following(&self, key: &str) {
        let removed = lock(&self.followers).remove(key);
        if let Some((_, handle)) = removed {
            handle.abort();
            let _ = handle.await;
        }
    }

    /// Removes the local copy of a resource whose replicas no longer
    /// include this broker (its replicas were moved elsewhere).
    fn remove_moved_replica(&self, dir: &str) {
        let path = self.broker.config().data_dir.join(dir);
        if !path.exists() {
            return;
        }
        info!(dir = %path.display(), "removing a replica moved to other brokers");
        if let Err(err) = std::fs::remove_dir_all(&path) {
            warn!(dir = %path.display(), error = %err, "failed to remove directory");
        }
    }

    /// Removes the directories of deleted topics and queues that this
    /// broker neither leads nor follows any more.
    fn remove_deleted_dirs(&self) {
        let data_dir = self.broker.config().data_dir.clone();
        self.broker.with_catalog(|catalog| {
            for (parent, kind) in [("topics", ResourceKind::Topic), ("queues", ResourceKind::Queue)] {
                let Ok(entries) = std::fs::read_dir(data_dir.join(parent)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let file_name = entry.file_name();
                    let Some(id) = file_name
                        .to_str()
                        .and_then(|name| name.rsplit_once('@'))
                        .and_then(|(_, id)| id.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if catalog.was_deleted(kind, id) {
                        info!(dir = %entry.path().display(), "removing files of a deleted resource");
                        if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                            warn!(dir = %entry.path().display(), error = %err, "failed to remove directory");
                        }
                    }
                }
            }
        });
    }

    /// Sends a metadata event to the `__meta` leader.
    async fn commit_meta_remote(&self, event: MetaEvent) -> Result<u64, BrokerError> {
        let view = self.coordinator.view();
        let Some((leader, _)) = view.leader_of(META_KEY) else {
            return Err(BrokerError::Unavailable(
                "no broker leads __meta at the moment; retry".into(),
            ));
        };
        let address = view.grpc_address(leader).ok_or_else(|| {
            BrokerError::Unavailable(format!(
                "the __meta leader, broker {leader}, is not reachable; retry"
            ))
        })?;
        let event = serde_json::to_vec(&event)
            .map_err(|err| BrokerError::Internal(format!("failed to encode event: {err}")))?;
        let mut client = self
            .peers
            .forwarding(address)
            .map_err(|status| BrokerError::Unavailable(status.message().to_string()))?;
        let response = client
            .commit_meta(CommitMetaRequest {
                event: event.into(),
            })
            .await
            .map_err(|status| {
                BrokerError::Unavailable(format!(
                    "failed to reach the __meta leader, broker {leader}: {}; retry",
                    status.message()
                ))
            })?
            .into_inner();
        match response.failure {
            Some(failure) => Err(failure_to_error(failure)),
            None => Ok(response.offset),
        }
    }

    /// Sends records to the leader of queue `name` (incarnation `id`).
    async fn append_to_queue_remote(
        &self,
        name: String,
        id: u64,
        records: Vec<crate::log::Record>,
        producer: i64,
        first_sequence: u64,
    ) -> Result<(), BrokerError> {
        let view = self.coordinator.view();
        let key = crate::cluster::state::resource_key("queue", id);
        let unavailable = |why: String| BrokerError::Unavailable(format!("queue `{name}`: {why}"));
        let Some((leader, _)) = view.leader_of(&key) else {
            return Err(unavailable("no broker leads it at the moment".into()));
        };
        let address = view
            .grpc_address(leader)
            .ok_or_else(|| unavailable(format!("its leader, broker {leader}, is not reachable")))?;
        let batch = crate::log::encode_batch(0, 0, crate::log::ProducerInfo::default(), &records);
        let mut client = self
            .peers
            .forwarding(address)
            .map_err(|status| unavailable(status.message().to_string()))?;
        let response = client
            .append_to_queue(AppendToQueueRequest {
                queue: name.clone(),
                queue_id: id,
                producer_id: producer,
                first_sequence,
                batch: batch.into(),
            })
            .await
            .map_err(|status| {
                unavailable(format!(
                    "failed to reach its leader, broker {leader}: {}",
                    status.message()
                ))
            })?
            .into_inner();
        match response.failure {
            Some(failure) => Err(failure_to_error(failure)),
            None => Ok(()),
        }
    }

    async fn wait_for_leader(&self, key: String) -> Result<(), BrokerError> {
        let mut view = self.coordinator.subscribe();
        let wait = async {
            view.wait_for(|view| view.leader_of(&key).is_some())
                .await
                .is_ok()
        };
        match tokio::time::timeout(METADATA_WAIT, wait).await {
            Ok(true) => Ok(()),
            _ => Err(BrokerError::Unavailable(format!(
                "the resource was created, but no leader was assigned within {} s; \
                 it becomes usable once the controller assigns one",
                METADATA_WAIT.as_secs()
            ))),
        }
    }
}

/// The broker's handle on its cluster.
struct Hooks(std::sync::Weak<Cluster>);

impl Hooks {
    /// Runs `call` on the cluster, or fails when the broker is stopping.
    fn with_cluster<T, F, Fut>(&self, call: F) -> BoxFuture<'static, Result<T, BrokerError>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Cluster>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, BrokerError>> + Send + 'static,
    {
        let cluster = self.0.upgrade();
        Box::pin(async move {
            match cluster {
                Some(cluster) => call(cluster).await,
                None => Err(BrokerError::Unavailable("the broker is stopping".into())),
            }
        })
    }
}

impl ClusterHooks for Hooks {
    fn commit_meta(&self, event: MetaEvent) -> BoxFuture<'static, Result<u64, BrokerError>> {
        self.with_cluster(|cluster| async move { cluster.commit_meta_remote(event).await })
    }

    fn wait_for_leader(&self, key: String) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.with_cluster(|cluster| async move { cluster.wait_for_leader(key).await })
    }

    fn append_to_queue(
        &self,
        name: String,
        id: u64,
        records: Vec<crate::log::Record>,
        producer: i64,
        first_sequence: u64,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.with_cluster(move |cluster| async move {
            cluster
                .append_to_queue_remote(name, id, records, producer, first_sequence)
                .await
        })
    }
}

/// The catalog entry behind a resource id.
pub(crate) enum Spec {
    Topic(crate::meta::TopicSpec),
    Queue(crate::meta::QueueSpec),
}

pub(crate) fn find_spec(catalog: &Catalog, id: u64) -> Option<Spec> {
    if let Some(topic) = catalog.topics().find(|topic| topic.spec.id == id) {
        return Some(Spec::Topic(topic.spec.clone()));
    }
    catalog
        .queues()
        .find(|queue| queue.spec.id == id)
        .map(|queue| Spec::Queue(queue.spec.clone()))
}

/// Returns the topic or queue id in a resource key such as `topic-12`, or
/// `None` for `meta`.
pub fn resource_id(key: &str) -> Option<u64> {
    key.rsplit_once('-').and_then(|(_, id)| id.parse().ok())
}

/// Returns the initial ZooKeeper state of the `__meta` resource.
pub(crate) fn meta_state(replicas: Vec<BrokerId>) -> ResourceState {
    ResourceState {
        dir: META_DIR.to_string(),
        logs: vec![META_LOG.to_string()],
        leader: replicas.first().copied(),
        leader_epoch: 0,
        isr: replicas.clone(),
        replicas,
        target_replicas: None,
        moved: false,
    }
}

/// Rebuilds a broker error sent by another broker.
pub(crate) fn failure_to_error(failure: BrokerFailure) -> BrokerError {
    let kind = match failure.kind.as_str() {
        "topic" => "topic",
        "queue" => "queue",
        "user" => "user",
        "subscription" => "subscription",
        _ => "resource",
    };
    match failure.code.as_str() {
        "already_exists" => BrokerError::AlreadyExists {
            kind,
            name: failure.name,
        },
        "not_found" => BrokerError::NotFound {
            kind,
            name: failure.name,
        },
        "invalid_argument" => BrokerError::invalid("event", failure.message),
        "unavailable" => BrokerError::Unavailable(failure.message),
        "out_of_order_sequence" => BrokerError::OutOfOrderSequence(failure.message),
        _ => BrokerError::Internal(failure.message),
    }
}

/// Describes a broker error for another broker.
pub(crate) fn error_to_failure(err: &BrokerError) -> BrokerFailure {
    let (code, kind, name) = match err {
        BrokerError::AlreadyExists { kind, name } => ("already_exists", *kind, name.clone()),
        BrokerError::NotFound { kind, name } => ("not_found", *kind, name.clone()),
        BrokerError::InvalidArgument { .. } => ("invalid_argument", "", String::new()),
        BrokerError::Unavailable(_) => ("unavailable", "", String::new()),
        BrokerError::OutOfOrderSequence(_) => ("out_of_order_sequence", "", String::new()),
        _ => ("internal", "", String::new()),
    };
    BrokerFailure {
        code: code.to_string(),
        message: err.to_string(),
        kind: kind.to_string(),
        name,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
