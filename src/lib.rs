//! Ferry, a clustered message broker: REST clients, Kafka-style segment
//! logs, metadata as events.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod log;
pub mod meta;
pub mod mirror;
pub mod server;
