//! The catalog: the current metadata, folded from `__meta` events.
//!
//! [`Catalog::check`] decides whether an event may be appended (names free,
//! referenced resources present); [`Catalog::apply`] folds an appended event
//! in. Replay at start applies every stored event in order, so both must
//! depend on the catalog state alone, never on the clock or on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::auth::PasswordHash;
use crate::meta::event::{
    Access, BindingSpec, MetaEvent, Permission, QueueSpec, ResourceKind, SubscriptionSpec,
    TopicSpec,
};

/// A registered user.
#[derive(Debug, Clone)]
pub struct User {
    /// User name.
    pub username: String,
    /// Stored password hash.
    pub password: PasswordHash,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// A topic or queue with its grants.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    /// Settings from the creation event.
    pub spec: S,
    /// Permissions granted per user name.
    pub grants: BTreeMap<String, BTreeSet<Permission>>,
}

/// Reason an event cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The name is already in use.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// What kind of thing, e.g. "topic".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The named thing does not exist.
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// What kind of thing, e.g. "queue".
        kind: &'static str,
        /// The name.
        name: String,
    },
}

/// The folded metadata of one broker.
#[derive(Debug, Default)]
pub struct Catalog {
    users: HashMap<String, User>,
    revoked_tokens: HashMap<String, u64>,
    topics: BTreeMap<String, Resource<TopicSpec>>,
    queues: BTreeMap<String, Resource<QueueSpec>>,
    subscriptions: BTreeMap<(String, String), SubscriptionSpec>,
    bindings: BTreeMap<u64, BindingSpec>,
    /// Ids of deleted topic and queue incarnations, so leftover files of a
    /// deletion can be distinguished from files the catalog does not know.
    deleted: HashSet<(ResourceKind, u64)>,
}

impl Catalog {
    /// Checks that `event` is consistent with the current state.
    ///
    /// # Errors
    ///
    /// [`CatalogError::AlreadyExists`] for a taken name,
    /// [`CatalogError::NotFound`] for a reference to a missing resource.
    pub fn check(&self, event: &MetaEvent) -> Result<(), CatalogError> {
        match event {
            MetaEvent::UserRegistered { username, .. } => {
                absent("user", username, self.users.contains_key(username))
            }
            MetaEvent::TokenRevoked { .. } => Ok(()),
            MetaEvent::TopicCreated(spec) => {
                absent("topic", &spec.name, self.topics.contains_key(&spec.name))
            }
            MetaEvent::TopicDeleted { name, id } => self.check_topic(name, *id),
            MetaEvent::QueueCreated(spec) => {
                absent("queue", &spec.name, self.queues.contains_key(&spec.name))
            }
            MetaEvent::QueueDeleted { name, id } => self.check_queue(name, *id),
            MetaEvent::GrantAdded {
                kind, name, user, ..
            }
            | MetaEvent::GrantRevoked {
                kind, name, user, ..
            } => {
                present("user", user, self.users.contains_key(user))?;
                match kind {
                    ResourceKind::Topic => present("topic", name, self.topics.contains_key(name)),
                    ResourceKind::Queue => present("queue", name, self.queues.contains_key(name)),
                }
            }
            MetaEvent::SubscriptionCreated(spec) => {
                self.check_topic(&spec.topic, spec.topic_id)?;
                absent(
                    "subscription",
                    &spec.name,
                    self.subscription(&spec.topic, &spec.name).is_some(),
                )
            }
            MetaEvent::SubscriptionDeleted { topic, name } => present(
                "subscription",
                name,
                self.subscription(topic, name).is_some(),
            ),
            MetaEvent::BindingAdded(spec) => {
                self.check_queue(&spec.queue, spec.queue_id)?;
                self.check_topic(&spec.topic, spec.topic_id)?;
                let taken = self.bindings.values().any(|binding| {
                    binding.queue == spec.queue
                        && binding.topic == spec.topic
                        && binding.pattern == spec.pattern
                });
                absent(
                    "binding",
                    &format!("{} -> {} ({})", spec.topic, spec.queue, spec.pattern),
                    taken,
                )
            }
            MetaEvent::BindingRemoved { id } => {
                present("binding", &id.to_string(), self.bindings.contains_key(id))
            }
        }
    }

    /// Checks that incarnation `id` of topic `name` exists.
    fn check_topic(&self, name: &str, id: u64) -> Result<(), CatalogError> {
        present(
            "topic",
            name,
            self.topic(name).is_some_and(|t| t.spec.id == id),
        )
    }

    /// Checks that incarnation `id` of queue `name` exists.
    fn check_queue(&self, name: &str, id: u64) -> Result<(), CatalogError> {
        present(
            "queue",
            name,
            self.queue(name).is_some_and(|q| q.spec.id == id),
        )
    }

    /// Folds an event that passed [`Catalog::check`] into the state.
    ///
    /// # Errors
    ///
    /// The same as `check`; the state is unchanged in that case.
    pub fn apply(&mut self, event: &MetaEvent) -> Result<(), CatalogError> {
        self.check(event)?;
        match event {
            MetaEvent::UserRegistered {
                username,
                password,
                created_ms,
            } => {
                let user = User {
                    username: username.clone(),
                    password: password.clone(),
                    created_ms: *created_ms,
                };
                self.users.insert(username.clone(), user);
            }
            MetaEvent::TokenRevoked {
                token_id,
                expires_at,
            } => {
                self.revoked_tokens.insert(token_id.clone(), *expires_at);
            }
            MetaEvent::TopicCreated(spec) => {
                let resource = Resource {
                    spec: spec.clone(),
                    grants: BTreeMap::new(),
                };
                self.topics.insert(spec.name.clone(), resource);
            }
            MetaEvent::TopicDeleted { name, id } => {
                self.topics.remove(name);
                self.deleted.insert((ResourceKind::Topic, *id));
                self.subscriptions.retain(|(topic, _), _| topic != name);
                self.bindings.retain(|_, binding| binding.topic_id != *id);
            }
            MetaEvent::QueueCreated(spec) => {
                let resource = Resource {
                    spec: spec.clone(),
                    grants: BTreeMap::new(),
                };
                self.queues.insert(spec.name.clone(), resource);
            }
            MetaEvent::QueueDeleted { name, id } => {
                self.queues.remove(name);
                self.deleted.insert((ResourceKind::Queue, *id));
                self.bindings.retain(|_, binding| binding.queue_id != *id);
            }
            MetaEvent::GrantAdded {
                kind,
                name,
                user,
                permission,
            } => {
                let grants = self.grants_mut(*kind, name);
                grants.entry(user.clone()).or_default().insert(*permission);
            }
            MetaEvent::GrantRevoked {
                kind,
                name,
                user,
                permission,
            } => {
                let grants = self.grants_mut(*kind, name);
                if let Some(permissions) = grants.get_mut(user) {
                    permissions.remove(permission);
                    if permissions.is_empty() {
                        grants.remove(user);
                    }
                }
            }
            MetaEvent::SubscriptionCreated(spec) => {
                let key = (spec.topic.clone(), spec.name.clone());
                self.subscriptions.insert(key, spec.clone());
            }
            MetaEvent::SubscriptionDeleted { topic, name } => {
                self.subscriptions.remove(&(topic.clone(), name.clone()));
            }
            MetaEvent::BindingAdded(spec) => {
                self.bindings.insert(spec.id, spec.clone());
            }
            MetaEvent::BindingRemoved { id } => {
                self.bindings.remove(id);
            }
        }
        Ok(())
    }

    /// Returns the binding with id `id`.
    pub fn binding(&self, id: u64) -> Option<&BindingSpec> {
        self.bindings.get(&id)
    }

    /// Returns the bindings of topic incarnation `topic_id`, by id.
    pub fn bindings_from(&self, topic_id: u64) -> impl Iterator<Item = &BindingSpec> + '_ {
        self.bindings
            .values()
            .filter(move |binding| binding.topic_id == topic_id)
    }

    /// Returns the bindings to queue incarnation `queue_id`, by id.
    pub fn bindings_to(&self, queue_id: u64) -> impl Iterator<Item = &BindingSpec> + '_ {
        self.bindings
            .values()
            .filter(move |binding| binding.queue_id == queue_id)
    }

    /// The user named `username`.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.get(username)
    }

    /// Whether the token with id `token_id` was logged out.
    pub fn is_token_revoked(&self, token_id: &str) -> bool {
        self.revoked_tokens.contains_key(token_id)
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Resource<TopicSpec>> {
        self.topics.get(name)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &Resource<TopicSpec>> {
        self.topics.values()
    }

    /// The queue named `name`.
    pub fn queue(&self, name: &str) -> Option<&Resource<QueueSpec>> {
        self.queues.get(name)
    }

    /// Every queue, by name.
    pub fn queues(&self) -> impl Iterator<Item = &Resource<QueueSpec>> {
        self.queues.values()
    }

    /// Whether the topic or queue incarnation `id` was deleted.
    pub fn was_deleted(&self, kind: ResourceKind, id: u64) -> bool {
        self.deleted.contains(&(kind, id))
    }

    /// The subscription `name` on `topic`.
    pub fn subscription(&self, topic: &str, name: &str) -> Option<&SubscriptionSpec> {
        self.subscriptions
            .get(&(topic.to_string(), name.to_string()))
    }

    /// Every subscription of `topic`, by name.
    pub fn subscriptions_of<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a SubscriptionSpec> + 'a {
        self.subscriptions
            .values()
            .filter(move |spec| spec.topic == topic)
    }

    fn grants_mut(
        &mut self,
        kind: ResourceKind,
        name: &str,
    ) -> &mut BTreeMap<String, BTreeSet<Permission>> {
        match kind {
            ResourceKind::Topic => &mut self.topics.get_mut(name).expect("checked").grants,
            ResourceKind::Queue => &mut self.queues.get_mut(name).expect("checked").grants,
        }
    }
}

/// The settings every topic and queue has.
pub trait ResourceSpec {
    /// Public or private.
    fn access(&self) -> Access;
    /// User who created the resource.
    fn owner(&self) -> &str;
}

impl ResourceSpec for TopicSpec {
    fn access(&self) -> Access {
        self.access
    }

    fn owner(&self) -> &str {
        &self.owner
    }
}

impl ResourceSpec for QueueSpec {
    fn access(&self) -> Access {
        self.access
    }

    fn owner(&self) -> &str {
        &self.owner
    }
}

impl<S: ResourceSpec> Resource<S> {
    /// Whether `user` may see the resource: it is public, or the user owns
    /// it or holds a grant on it.
    pub fn is_visible_to(&self, user: &str) -> bool {
        self.spec.access() == Access::Public
            || self.spec.owner() == user
            || self.grants.contains_key(user)
    }

    /// Whether `user` holds `permission` on the resource.
    pub fn allows(&self, user: &str, permission: Permission) -> bool {
        self.spec.access() == Access::Public
            || self.spec.owner() == user
            || self
                .grants
                .get(user)
                .is_some_and(|permissions| permissions.contains(&permission))
    }
}

fn absent(kind: &'static str, name: &str, exists: bool) -> Result<(), CatalogError> {
    if exists {
        Err(CatalogError::AlreadyExists {
            kind,
            name: name.to_string(),
        })
    } else {
        Ok(())
    }
}

fn present(kind: &'static str, name: &str, exists: bool) -> Result<(), CatalogError> {
    if exists {
        Ok(())
    } else {
        Err(CatalogError::NotFound {
            kind,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::meta::event::Cleanup;

    fn user(name: &str) -> MetaEvent {
        MetaEvent::UserRegistered {
            username: name.into(),
            password: PasswordHash::create("password", NonZeroU32::new(1).unwrap()),
            created_ms: 0,
        }
    }

    fn topic(name: &str, id: u64) -> MetaEvent {
        MetaEvent::TopicCreated(TopicSpec {
            id,
            name: name.into(),
            owner: "alice".into(),
            access: Access::Private,
            partitions: 2,
            replication_factor: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            cleanup: Cleanup::Delete,
            message_ttl_ms: None,
            created_ms: 0,
        })
    }

    #[test]
    fn duplicate_names_rejected() {
        let mut catalog = Catalog::default();
        catalog.apply(&user("alice")).unwrap();
        assert!(matches!(
            catalog.apply(&user("alice")),
            Err(CatalogError::AlreadyExists { kind: "user", .. })
        ));
        catalog.apply(&topic("t", 1)).unwrap();
        assert!(catalog.apply(&topic("t", 2)).is_err());
    }

    #[test]
    fn delete_then_recreate_topic() {
        let mut catalog = Catalog::default();
        catalog.apply(&topic("t", 1)).unwrap();
        let stale = MetaEvent::TopicDeleted {
            name: "t".into(),
            id: 9,
        };
        assert!(catalog.apply(&stale).is_err(), "wrong incarnation");
        let delete = MetaEvent::TopicDeleted {
            name: "t".into(),
            id: 1,
        };
        catalog.apply(&delete).unwrap();
        assert!(catalog.topic("t").is_none());
        catalog.apply(&topic("t", 5)).unwrap();
        assert_eq!(catalog.topic("t").unwrap().spec.id, 5);
    }

    #[test]
    fn grants_control_private_access() {
        let mut catalog = Catalog::default();
        catalog.apply(&user("alice")).unwrap();
        catalog.apply(&user("bob")).unwrap();
        catalog.apply(&topic("t", 1)).unwrap();
        let resource = catalog.topic("t").unwrap();
        assert!(!resource.is_visible_to("bob"));

        let grant = MetaEvent::GrantAdded {
            kind: ResourceKind::Topic,
            name: "t".into(),
            user: "bob".into(),
            permission: Permission::Consume,
        };
        catalog.apply(&grant).unwrap();
        let resource = catalog.topic("t").unwrap();
        assert!(resource.is_visible_to("bob"));
        assert!(resource.allows("bob", Permission::Consume));
        assert!(!resource.allows("bob", Permission::Publish));
    }
}
