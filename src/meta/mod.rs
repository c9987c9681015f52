//! Metadata as events: users, topics, queues, grants, subscriptions and token
//! revocations are records in the internal `__meta` partition, and the
//! [`Catalog`] is their fold.
//!
//! Each event is one record whose value is the event's JSON. A broker
//! rebuilds its catalog at start by replaying the whole partition.
//! NOTE: there is no catalog snapshot yet, so start-up time grows with the
//! number of metadata events (users, topics, queues and log-outs).

pub mod catalog;
pub mod event;
pub mod names;

pub use catalog::{Catalog, CatalogError, Resource, ResourceSpec, User};
pub use event::{
    Access, BindingSpec, Cleanup, MetaEvent, Permission, QueueSpec, ResourceKind, StartPosition,
    SubscriptionSpec, TopicSpec,
};
