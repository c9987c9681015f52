//! Routing: queues bound to a topic by exact routing keys. Log messages
//! carry their severity as routing key; one queue is bound to `error`
//! only, another to `info`, `warning` and `error`.
//!
//! `cargo run --example routing`

mod common;

use std::time::Duration;

use ferry::client::{CreateQueue, CreateTopic, NewMessage};

#[tokio::main]
async fn main() {
    let client = common::connect().await;
    common::ensure_topic(&client, CreateTopic::named("direct_logs")).await;
    common::ensure_queue(&client, CreateQueue::named("errors-to-disk")).await;
    common::ensure_queue(&client, CreateQueue::named("all-to-screen")).await;
    common::ensure_binding(&client, "errors-to-disk", "direct_logs", "error").await;
    for severity in ["info", "warning", "error"] {
        common::ensure_binding(&client, "all-to-screen", "direct_logs", severity).await;
    }

    let messages: Vec<NewMessage> = [
        ("info", "service started"),
        ("warning", "disk 80% full"),
        ("error", "disk full"),
        ("debug", "no queue is bound to debug"),
    ]
    .iter()
    .map(|(severity, text)| NewMessage::json(*text).with_routing_key(*severity))
    .collect();
    client
        .publish("direct_logs", &messages)
        .await
        .unwrap_or_else(|err| common::fail(&err));
    println!(" [x] Published {} messages", messages.len());

    let quiet = Duration::from_secs(2);
    let disk = common::receive_all(&client, "errors-to-disk", 1, quiet).await;
    let screen = common::receive_all(&client, "all-to-screen", 3, quiet).await;
    for (queue, received) in [("errors-to-disk", &disk), ("all-to-screen", &screen)] {
        for message in received.iter() {
            println!(
                " [{queue}] {}: {}",
                message.routing_key.as_deref().unwrap_or(""),
                message
                    .value
                    .as_ref()
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
            );
        }
    }
    let keys = |received: &[ferry::client::Message]| -> Vec<String> {
        received
            .iter()
            .filter_map(|m| m.routing_key.clone())
            .collect()
    };
    common::check(
        keys(&disk) == ["error"],
        "errors-to-disk should get the error only",
    );
    common::check(
        keys(&screen) == ["info", "warning", "error"],
        "all-to-screen should get info, warning and error",
    );
}
