//! The broker's ZooKeeper session: membership, controller election and the
//! resource states, published as a [`ClusterView`].
//!
//! One task owns the session. It registers this broker as an ephemeral
//! znode, competes for the controller znode and keeps one persistent
//! recursive watch on the root, so every change under it arrives as an
//! event and no state is polled. A session expiry is terminal for a
//! ZooKeeper client, so the task then builds a new client, registers again
//! and rereads everything.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};
use zookeeper_client as zk;

use crate::cluster::state::{BrokerId, BrokerInfo, ClusterView, ResourceState, Versioned};
use crate::cluster::ClusterError;
use crate::config::ClusterConfig;

/// Pause between connection attempts while ZooKeeper is unreachable.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// The ZooKeeper side of one broker.
pub struct Coordinator {
    root: String,
    me: BrokerInfo,
    /// Whether this broker competes for the mirror lock (`--mysql-url`).
    mirror_candidate: bool,
    session_timeout: Duration,
    hosts: String,
    client: RwLock<Option<zk::Client>>,
    view: watch::Sender<Arc<ClusterView>>,
}

/// How long a starting broker tries to reach ZooKeeper.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks, before the broker joins, that its cluster secret is the one
/// the cluster under `config.zookeeper_root` uses: the first broker stores
/// `verifier` there, and every later one compares.
///
/// # Errors
///
/// `Secret` when the secrets differ, and `ZooKeeper` when ZooKeeper cannot
/// be reached within 30 s.
pub async fn verify_secret(config: &ClusterConfig, verifier: &str) -> Result<(), ClusterError> {
    let connect = zk::Client::connector()
        .with_session_timeout(config.session_timeout)
        .with_connection_timeout(START_TIMEOUT)
        .connect(&config.zookeeper);
    let client = tokio::time::timeout(START_TIMEOUT, connect)
        .await
        .map_err(|_| ClusterError::zookeeper("connect", zk::Error::Timeout))?
        .map_err(|err| ClusterError::zookeeper("connect", err))?;
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .mkdir(&config.zookeeper_root, &options)
        .await
        .map_err(|err| ClusterError::zookeeper("create the root znode", err))?;
    let path = format!("{}/secret-check", config.zookeeper_root);
    match client.create(&path, verifier.as_bytes(), &options).await {
        Ok(_) => return Ok(()),
        Err(zk::Error::NodeExists) => {}
        Err(err) => return Err(ClusterError::zookeeper("store the secret check", err)),
    }
    let (stored, _) = client
        .get_data(&path)
        .await
        .map_err(|err| ClusterError::zookeeper("read the secret check", err))?;
    if stored != verifier.as_bytes() {
        return Err(ClusterError::Secret(format!(
            "--cluster-secret-file differs from the secret of the cluster under {} in \
             ZooKeeper; give every broker the same file",
            config.zookeeper_root
        )));
    }
    Ok(())
}

impl Coordinator {
    /// Starts the session task. The returned coordinator reports
    /// `connected = false` in its view until the first session is set up.
    pub fn start(
        config: &ClusterConfig,
        me: BrokerInfo,
        mirror_candidate: bool,
    ) -> Arc<Coordinator> {
        let coordinator = Arc::new(Coordinator {
            root: config.zookeeper_root.clone(),
            me,
            mirror_candidate,
            session_timeout: config.session_timeout,
            hosts: config.zookeeper.clone(),
            client: RwLock::new(None),
            view: watch::Sender::new(Arc::new(ClusterView::default())),
        });
        tokio::spawn(Arc::clone(&coordinator).run());
        coordinator
    }

    /// This broker's id.
    pub fn broker_id(&self) -> BrokerId {
        self.me.id
    }

    /// Returns a receiver of every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.subscribe()
    }

    /// Returns the latest view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// Creates the znode of a resource. Returns `false` when it exists.
    pub async fn create_resource(
        &self,
        key: &str,
        state: &ResourceState,
    ) -> Result<bool, ClusterError> {
        let client = self.client()?;
        let data = serde_json::to_vec(state).map_err(ClusterError::encode)?;
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        match client
            .create(&self.resource_path(key), &data, &options)
            .await
        {
            Ok(_) => {
                info!(resource = key, ?state, "created resource state");
                Ok(true)
            }
            Err(zk::Error::NodeExists) => Ok(false),
            Err(err) => Err(ClusterError::zookeeper("create resource state", err)),
        }
    }

    /// Replaces the state of a resource if its znode is still at `version`.
    /// Returns the new version, or `ClusterError::Conflict` when another
    /// broker changed it first.
    pub async fn update_resource(
        &self,
        key: &str,
        state: &ResourceState,
        version: i32,
    ) -> Result<i32, ClusterError> {
        let client = self.client()?;
        let data = serde_json::to_vec(state).map_err(ClusterError::encode)?;
        match client
            .set_data(&self.resource_path(key), &data, Some(version))
            .await
        {
            Ok(stat) => {
                info!(
                    resource = key,
                    ?state,
                    version = stat.version,
                    "updated resource state"
                );
                Ok(stat.version)
            }
            Err(zk::Error::BadVersion | zk::Error::NoNode) => Err(ClusterError::Conflict),
            Err(err) => Err(ClusterError::zookeeper("update resource state", err)),
        }
    }

    /// Deletes the znode of a resource if it is still at `version`.
    pub async fn delete_resource(&self, key: &str, version: i32) -> Result<(), ClusterError> {
        let client = self.client()?;
        match client.delete(&self.resource_path(key), Some(version)).await {
            Ok(()) | Err(zk::Error::NoNode) => {
                info!(resource = key, "deleted resource state");
                Ok(())
            }
            Err(zk::Error::BadVersion) => Err(ClusterError::Conflict),
            Err(err) => Err(ClusterError::zookeeper("delete resource state", err)),
        }
    }

    fn client(&self) -> Result<zk::Client, ClusterError> {
        self.client
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or(ClusterError::NoSession)
    }

    fn resource_path(&self, key: &str) -> String {
        format!("{}/resources/{key}", self.root)
    }

    /// Runs sessions one after the other, forever.
    async fn run(self: Arc<Self>) {
        loop {
            let client = self.connect().await;
            match self.run_session(&client).await {
                Ok(()) => info!("ZooKeeper session expired, starting a new one"),
                Err(err) => warn!(error = %err, "ZooKeeper session failed, starting a new one"),
            }
            *self.client.write().unwrap_or_else(|p| p.into_inner()) = None;
            self.view.send_modify(|view| {
                let mut next = (**view).clone();
                next.connected = false;
                *view = Arc::new(next);
            });
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    async fn connect(&self) -> zk::Client {
        let mut attempts = 0u64;
        loop {
            let result = zk::Client::connector()
                .with_session_timeout(self.session_timeout)
                .with_connection_timeout(self.session_timeout)
                .connect(&self.hosts)
                .await;
            match result {
                Ok(client) => {
                    info!(hosts = %self.hosts, session = ?client.session_id(), "connected to ZooKeeper");
                    return client;
                }
                Err(err) => {
                    attempts += 1;
                    // One line every ten attempts keeps an outage readable.
                    if attempts % 10 == 1 {
                        warn!(hosts = %self.hosts, error = %err, attempts, "failed to connect to ZooKeeper, retrying");
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            }
        }
    }

    /// Sets up one session and follows its events until it expires.
    async fn run_session(&self, client: &zk::Client) -> Result<(), ClusterError> {
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        for dir in ["brokers", "resources"] {
            client
                .mkdir(&format!("{}/{dir}", self.root), &options)
                .await
                .map_err(|err| ClusterError::zookeeper("create root znodes", err))?;
        }
        let mut watcher = client
            .watch(&self.root, zk::AddWatchMode::PersistentRecursive)
            .await
            .map_err(|err| ClusterError::zookeeper("watch root", err))?;
        self.register(client).await?;
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
        self.elect_controller(client).await?;
        self.elect_mirror(client).await?;
        self.publish(self.read_all(client).await?);

        loop {
            let event = watcher.changed().await;
            match event.event_type {
                zk::EventType::Session => {
                    match event.session_state {
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                            // Events during the disconnection may be lost, so
                            // everything is read again. The persistent watch
                            // is added again too: with zookeeper-client 0.11
                            // and ZooKeeper 3.8 it delivered no more events
                            // after a reconnection (seen in the cluster tests).
                            info!("reconnected to ZooKeeper");
                            watcher = client
                                .watch(&self.root, zk::AddWatchMode::PersistentRecursive)
                                .await
                                .map_err(|err| ClusterError::zookeeper("watch root", err))?;
                            self.elect_controller(client).await?;
                            self.elect_mirror(client).await?;
                            self.publish(self.read_all(client).await?);
                        }
                        zk::SessionState::Disconnected => {
                            warn!("disconnected from ZooKeeper, keeping roles until the session expires");
                        }
                        state if state.is_terminated() => return Ok(()),
                        state => debug!(?state, "ZooKeeper session state"),
                    }
                }
                _ => {
                    debug!(path = %event.path, kind = ?event.event_type, "ZooKeeper event");
                    if event.path == format!("{}/controller", self.root)
                        && event.event_type == zk::EventType::NodeDeleted
                    {
                        self.elect_controller(client).await?;
                    }
                    if event.path == format!("{}/mirror", self.root)
                        && event.event_type == zk::EventType::NodeDeleted
                    {
                        self.elect_mirror(client).await?;
                    }
                    self.publish(self.read_all(client).await?);
                }
            }
        }
    }

    /// Creates this broker's ephemeral znode. A znode left by this broker's
    /// previous session lives until that session expires, so the call waits
    /// for it to go rather than fail.
    async fn register(&self, client: &zk::Client) -> Result<(), ClusterError> {
        let path = format!("{}/brokers/{}", self.root, self.me.id);
        let data = serde_json::to_vec(&self.me).map_err(ClusterError::encode)?;
        let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let deadline = tokio::time::Instant::now() + self.session_timeout * 3;
        let mut attempts = 0u64;
        loop {
            match client.create(&path, &data, &options).await {
                Ok(_) => {
                    info!(broker = self.me.id, grpc = %self.me.grpc, "registered in ZooKeeper");
                    return Ok(());
                }
                Err(zk::Error::NodeExists) if tokio::time::Instant::now() < deadline => {
                    // Said once per session timeout, not once per attempt.
                    if attempts.is_multiple_of(self.session_timeout.as_secs().max(1)) {
                        let holder =
                            client.get_data(&path).await.ok().and_then(|(data, _)| {
                                serde_json::from_slice::<BrokerInfo>(&data).ok()
                            });
                        warn!(
                            broker = self.me.id,
                            registered_grpc = holder.as_ref().map(|info| info.grpc.as_str()),
                            own_grpc = %self.me.grpc,
                            "broker id is registered by another session; waiting for it to \
                             expire. If it is not this broker's previous run, give each broker \
                             its own --broker-id"
                        );
                    }
                    attempts += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(zk::Error::NodeExists) => {
                    return Err(ClusterError::DuplicateBrokerId(self.me.id));
                }
                Err(err) => return Err(ClusterError::zookeeper("register broker", err)),
            }
        }
    }

    async fn elect_controller(&self, client: &zk::Client) -> Result<(), ClusterError> {
        match self.take_ephemeral(client, "controller").await {
            Ok(true) => {
                info!(broker = self.me.id, "became the controller");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(err) => Err(ClusterError::zookeeper("elect controller", err)),
        }
    }

    /// Takes the mirror lock, the ephemeral znode `mirror`, when this broker
    /// runs with a MySQL URL and no other broker holds it. The lock goes
    /// with the holder's session, and the others then compete again.
    async fn elect_mirror(&self, client: &zk::Client) -> Result<(), ClusterError> {
        if !self.mirror_candidate {
            return Ok(());
        }
        match self.take_ephemeral(client, "mirror").await {
            Ok(true) => {
                info!(broker = self.me.id, "took the mirror lock");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(err) => Err(ClusterError::zookeeper("take the mirror lock", err)),
        }
    }

    /// Creates the ephemeral znode `name` under the root with this broker's
    /// id. Returns false when another session owns it.
    async fn take_ephemeral(&self, client: &zk::Client, name: &str) -> Result<bool, zk::Error> {
        let path = format!("{}/{name}", self.root);
        let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        match client
            .create(&path, self.me.id.to_string().as_bytes(), &options)
            .await
        {
            Ok(_) => Ok(true),
            Err(zk::Error::NodeExists) => Ok(false),
            Err(err) => Err(err),
        }
    }

    // NOTE: every ZooKeeper event rereads all brokers and resources, so an
    // event costs one read per resource; fine for hundreds of resources,
    // not measured beyond that.
    async fn read_all(&self, client: &zk::Client) -> Result<ClusterView, ClusterError> {
        let mut view = ClusterView {
            connected: true,
            ..ClusterView::default()
        };
        let brokers_path = format!("{}/brokers", self.root);
        let children = client
            .list_children(&brokers_path)
            .await
            .map_err(|err| ClusterError::zookeeper("list brokers", err))?;
        for child in children {
            match client.get_data(&format!("{brokers_path}/{child}")).await {
                Ok((data, _)) => match serde_json::from_slice::<BrokerInfo>(&data) {
                    Ok(info) => {
                        view.brokers.insert(info.id, info);
                    }
                    Err(err) => {
                        warn!(znode = %child, error = %err, "ignoring undecodable broker znode")
                    }
                },
                Err(zk::Error::NoNode) => {}
                Err(err) => return Err(ClusterError::zookeeper("read broker", err)),
            }
        }
        match client.get_data(&format!("{}/controller", self.root)).await {
            Ok((data, _)) => {
                view.controller = std::str::from_utf8(&data).ok().and_then(|s| s.parse().ok())
            }
            Err(zk::Error::NoNode) => {}
            Err(err) => return Err(ClusterError::zookeeper("read controller", err)),
        }
        match client.get_data(&format!("{}/mirror", self.root)).await {
            Ok((data, _)) => {
                view.mirror = std::str::from_utf8(&data).ok().and_then(|s| s.parse().ok())
            }
            Err(zk::Error::NoNode) => {}
            Err(err) => return Err(ClusterError::zookeeper("read the mirror lock", err)),
        }
        let resources_path = format!("{}/resources", self.root);
        let keys = client
            .list_children(&resources_path)
            .await
            .map_err(|err| ClusterError::zookeeper("list resources", err))?;
        let mut resources = BTreeMap::new();
        for key in keys {
            match client.get_data(&format!("{resources_path}/{key}")).await {
                Ok((data, stat)) => match serde_json::from_slice::<ResourceState>(&data) {
                    Ok(value) => {
                        resources.insert(
                            key,
                            Versioned {
                                value,
                                version: stat.version,
                            },
                        );
                    }
                    Err(err) => {
                        warn!(resource = %key, error = %err, "ignoring undecodable resource state")
                    }
                },
                Err(zk::Error::NoNode) => {}
                Err(err) => return Err(ClusterError::zookeeper("read resource state", err)),
            }
        }
        view.resources = resources;
        Ok(view)
    }

    fn publish(&self, view: ClusterView) {
        self.view.send_replace(Arc::new(view));
    }
}
