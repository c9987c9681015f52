//! Binding operations: bind a queue to a topic with a routing-key pattern,
//! list a queue's bindings, and remove one. The routing itself is in
//! `router.rs`.

use tracing::info;

use crate::broker::error::{BrokerError, Result};
use crate::broker::routing::Pattern;
use crate::broker::users::Principal;
use crate::broker::{now_ms, read_lock, Broker};
use crate::meta::{BindingSpec, MetaEvent, Permission};

/// Most bindings one queue may have.
pub const MAX_BINDINGS_PER_QUEUE: usize = 1000;

impl Broker {
    /// Binds queue `queue` to `topic` with `pattern`. The caller must be
    /// allowed to send to the queue and to consume from the topic.
    pub async fn create_binding(
        &self,
        principal: &Principal,
        queue: &str,
        topic: &str,
        pattern: &str,
    ) -> Result<BindingSpec> {
        let queue_id = self.authorized_id(principal, queue, Permission::Publish, false)?;
        Pattern::parse(pattern).map_err(|err| BrokerError::invalid("pattern", err.to_string()))?;
        let topic_id = self
            .authorized_id(principal, topic, Permission::Consume, true)
            .map_err(|err| match err {
                BrokerError::NotFound { .. } => {
                    BrokerError::invalid("topic", format!("topic `{topic}` does not exist"))
                }
                other => other,
            })?;
        let count = read_lock(&self.catalog).bindings_to(queue_id).count();
        if count >= MAX_BINDINGS_PER_QUEUE {
            return Err(BrokerError::invalid(
                "queue",
                format!("queue `{queue}` has {count} bindings, the most a queue may have"),
            ));
        }
        let spec = self
            .commit_meta(
                |id| {
                    MetaEvent::BindingAdded(BindingSpec {
                        id,
                        queue: queue.to_string(),
                        queue_id,
                        topic: topic.to_string(),
                        topic_id,
                        pattern: pattern.to_string(),
                        owner: principal.username.clone(),
                        created_ms: now_ms(),
                    })
                },
                |event| match event {
                    MetaEvent::BindingAdded(spec) => Ok(spec.clone()),
                    _ => unreachable!("the closure above makes a BindingAdded event"),
                },
            )
            .await?;
        // On the topic's leader the start is stored before the response, so
        // a crash cannot lose a message published after it.
        self.store_binding_start(topic, spec.id).await?;
        info!(queue, topic, pattern, id = spec.id, "binding added");
        Ok(spec)
    }

    /// Lists the bindings of queue `queue`.
    pub fn list_bindings(&self, principal: &Principal, queue: &str) -> Result<Vec<BindingSpec>> {
        let queue_id = self.authorized_id(principal, queue, Permission::Consume, false)?;
        Ok(read_lock(&self.catalog)
            .bindings_to(queue_id)
            .cloned()
            .collect())
    }

    /// Removes binding `id` of queue `queue`; its creator or the queue's
    /// owner may.
    pub async fn delete_binding(&self, principal: &Principal, queue: &str, id: u64) -> Result<()> {
        let queue_id = self.authorized_id(principal, queue, Permission::Publish, false)?;
        let (binding, queue_owner) = {
            let catalog = read_lock(&self.catalog);
            let binding = catalog
                .binding(id)
                .filter(|binding| binding.queue_id == queue_id)
                .cloned();
            let owner = catalog.queue(queue).map(|q| q.spec.owner.clone());
            (binding, owner.unwrap_or_default())
        };
        let binding = binding.ok_or_else(|| BrokerError::NotFound {
            kind: "binding",
            name: id.to_string(),
        })?;
        if binding.owner != principal.username && queue_owner != principal.username {
            return Err(BrokerError::Forbidden(format!(
                "only `{}` or the queue's owner may remove binding {id}",
                binding.owner
            )));
        }
        self.commit_meta(|_| MetaEvent::BindingRemoved { id }, |_| Ok(()))
            .await?;
        info!(queue, id, "binding removed");
        Ok(())
    }

    /// Returns the id of topic or queue `name` if `principal` may see it
    /// and has `permission` on it.
    fn authorized_id(
        &self,
        principal: &Principal,
        name: &str,
        permission: Permission,
        topic: bool,
    ) -> Result<u64> {
        let catalog = read_lock(&self.catalog);
        let user = &principal.username;
        if topic {
            let resource = catalog.topic(name);
            Broker::authorize(resource, "topic", name, user, Some(permission))?;
            Ok(resource.map_or(0, |resource| resource.spec.id))
        } else {
            let resource = catalog.queue(name);
            Broker::authorize(resource, "queue", name, user, Some(permission))?;
            Ok(resource.map_or(0, |resource| resource.spec.id))
        }
    }
}
