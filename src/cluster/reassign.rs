//! Moving the replicas of a topic or queue to other brokers, for example
//! onto a broker that joined. The request only records the target
//! replicas; the controller adds them as followers, and switches the
//! replica list (and, if needed, the leader) once they are all in sync.

use crate::broker::{BrokerError, Principal};
use crate::cluster::state::{resource_key, BrokerId};
use crate::cluster::{Cluster, ClusterError};
use crate::meta::ResourceKind;

/// Largest number of target replicas.
const MAX_REPLICAS: usize = 7;

impl Cluster {
    /// Records `replicas` as the target replicas of a topic or queue that
    /// `principal` owns; returns the resource key.
    ///
    /// # Errors
    ///
    /// `NotFound` or `Forbidden` as for deleting the resource,
    /// `InvalidArgument` for an empty, repeated or too long list or a broker
    /// that is not live, and `Unavailable` when the state changed meanwhile.
    pub async fn reassign(
        &self,
        principal: &Principal,
        kind: ResourceKind,
        name: &str,
        replicas: Vec<BrokerId>,
    ) -> Result<String, BrokerError> {
        let (kind_name, owner, id) = self
            .broker
            .with_catalog(|catalog| match kind {
                ResourceKind::Topic => catalog
                    .topic(name)
                    .filter(|topic| topic.is_visible_to(&principal.username))
                    .map(|topic| ("topic", topic.spec.owner.clone(), topic.spec.id)),
                ResourceKind::Queue => catalog
                    .queue(name)
                    .filter(|queue| queue.is_visible_to(&principal.username))
                    .map(|queue| ("queue", queue.spec.owner.clone(), queue.spec.id)),
            })
            .ok_or_else(|| BrokerError::NotFound {
                kind: match kind {
                    ResourceKind::Topic => "topic",
                    ResourceKind::Queue => "queue",
                },
                name: name.to_string(),
            })?;
        if owner != principal.username {
            return Err(BrokerError::Forbidden(format!(
                "only the owner `{owner}` may move the replicas of {kind_name} `{name}`"
            )));
        }
        check_replicas(&replicas, &self.coordinator.view().brokers)?;

        let key = resource_key(kind_name, id);
        let view = self.coordinator.view();
        let versioned = view.resources.get(&key).ok_or_else(|| {
            BrokerError::Unavailable(format!(
                "{kind_name} `{name}` has no cluster state yet; retry"
            ))
        })?;
        if let Some(target) = &versioned.value.target_replicas {
            return Err(BrokerError::Unavailable(format!(
                "{kind_name} `{name}` is still moving to brokers {target:?}; retry once \
                 `GET /v1/cluster` shows no target_replicas for {key}"
            )));
        }
        let mut next = versioned.value.clone();
        next.target_replicas = Some(replicas);
        match self
            .coordinator
            .update_resource(&key, &next, versioned.version)
            .await
        {
            Ok(_) => Ok(key),
            Err(ClusterError::Conflict) => Err(BrokerError::Unavailable(format!(
                "the state of {kind_name} `{name}` changed meanwhile; retry"
            ))),
            Err(err) => Err(BrokerError::Unavailable(err.to_string())),
        }
    }
}

fn check_replicas(
    replicas: &[BrokerId],
    live: &std::collections::BTreeMap<BrokerId, crate::cluster::state::BrokerInfo>,
) -> Result<(), BrokerError> {
    if replicas.is_empty() || replicas.len() > MAX_REPLICAS {
        return Err(BrokerError::invalid(
            "replicas",
            format!("must list 1 to {MAX_REPLICAS} broker ids"),
        ));
    }
    for (index, id) in replicas.iter().enumerate() {
        if replicas[..index].contains(id) {
            return Err(BrokerError::invalid(
                "replicas",
                format!("broker {id} is listed twice"),
            ));
        }
        if !live.contains_key(id) {
            return Err(BrokerError::invalid(
                "replicas",
                format!("broker {id} is not a live broker of this cluster"),
            ));
        }
    }
    Ok(())
}
