//! The right to run the mirror. A broker alone always has it. In a cluster
//! the broker that owns the ZooKeeper znode `mirror` has it while its
//! session is connected (see `cluster::zk::Coordinator`).

use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::state::{BrokerId, ClusterView};

/// The right to run the mirror.
pub enum MirrorLock {
    /// A broker without a cluster runs the mirror whenever it runs.
    Alone,
    /// A broker in a cluster runs it while the view names it as holder.
    Cluster {
        /// The cluster view, updated by the ZooKeeper session.
        view: watch::Receiver<Arc<ClusterView>>,
        /// This broker.
        me: BrokerId,
    },
}

/// The lock, once acquired.
pub struct HeldLock<'a>(&'a mut MirrorLock);

impl MirrorLock {
    /// Waits until this broker may run the mirror.
    pub async fn acquire(&mut self) -> HeldLock<'_> {
        if let MirrorLock::Cluster { view, me } = self {
            let me = *me;
            // An error means the session task ended with the process.
            let _ = view.wait_for(|view| holds(view, me)).await;
        }
        HeldLock(self)
    }
}

impl HeldLock<'_> {
    /// Completes when this broker may no longer run the mirror: it lost
    /// the znode, or its ZooKeeper connection, after which another broker
    /// may take the lock once the session expires.
    pub async fn lost(self) {
        match self.0 {
            MirrorLock::Alone => std::future::pending().await,
            MirrorLock::Cluster { view, me } => {
                let me = *me;
                let _ = view.wait_for(|view| !holds(view, me)).await;
            }
        }
    }
}

fn holds(view: &ClusterView, me: BrokerId) -> bool {
    view.connected && view.mirror == Some(me)
}
