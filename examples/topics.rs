//! Topics: bindings with wildcards. Routing keys are `<facility>.<severity>`;
//! `*` matches exactly one word and `#` zero or more. One queue takes every
//! critical message (`*.critical`), another everything from the kernel
//! (`kern.#`).
//!
//! `cargo run --example topics`

mod common;

use std::time::Duration;

use ferry::client::{CreateQueue, CreateTopic, NewMessage};

#[tokio::main]
async fn main() {
    let client = common::connect().await;
    common::ensure_topic(&client, CreateTopic::named("topic_logs")).await;
    common::ensure_queue(&client, CreateQueue::named("critical")).await;
    common::ensure_queue(&client, CreateQueue::named("kernel")).await;
    common::ensure_binding(&client, "critical", "topic_logs", "*.critical").await;
    common::ensure_binding(&client, "kernel", "topic_logs", "kern.#").await;

    let keys = [
        "kern.critical",
        "kern.info",
        "app.critical",
        "app.info",
        "kern",
        "app.db.critical",
    ];
    let messages: Vec<NewMessage> = keys
        .iter()
        .map(|key| NewMessage::json(format!("a {key} message")).with_routing_key(*key))
        .collect();
    client
        .publish("topic_logs", &messages)
        .await
        .unwrap_or_else(|err| common::fail(&err));
    println!(" [x] Published {keys:?}");

    let quiet = Duration::from_secs(2);
    let routed = |received: Vec<ferry::client::Message>| -> Vec<String> {
        received.into_iter().filter_map(|m| m.routing_key).collect()
    };
    let critical = routed(common::receive_all(&client, "critical", 2, quiet).await);
    let kernel = routed(common::receive_all(&client, "kernel", 3, quiet).await);
    println!(" [critical] {critical:?}");
    println!(" [kernel] {kernel:?}");
    // `*.critical` needs exactly two words, so `app.db.critical` stays out;
    // `kern.#` also matches `kern` alone.
    common::check(
        critical == ["kern.critical", "app.critical"],
        "critical should get kern.critical and app.critical",
    );
    common::check(
        kernel == ["kern.critical", "kern.info", "kern"],
        "kernel should get kern.critical, kern.info and kern",
    );
}
