//! Publish/subscribe: every subscription of a topic receives every
//! message. Three subscribers each create their own subscription, then a
//! publisher sends five log lines, and each subscriber reads all five.
//!
//! `cargo run --example pub_sub`

mod common;

use std::time::{Duration, Instant};

use ferry::client::{
    Client, CreateSubscription, CreateTopic, NewMessage, PartitionOffset, PullParams,
};

const SUBSCRIBERS: [&str; 3] = ["screen", "archive", "alerts"];

#[tokio::main]
async fn main() {
    let client = common::connect().await;
    common::ensure_topic(&client, CreateTopic::named("logs")).await;
    for name in SUBSCRIBERS {
        // A fresh subscription starts at the end of the topic.
        let _ = client.delete_subscription("logs", name).await;
        client
            .create_subscription("logs", &CreateSubscription::named(name))
            .await
            .unwrap_or_else(|err| common::fail(&err));
    }

    let lines: Vec<NewMessage> = (1..=5)
        .map(|n| NewMessage::json(format!("log line {n}")))
        .collect();
    client
        .publish("logs", &lines)
        .await
        .unwrap_or_else(|err| common::fail(&err));
    println!(" [x] Published {} log lines", lines.len());

    let readers: Vec<_> = SUBSCRIBERS
        .iter()
        .map(|name| tokio::spawn(read(client.clone(), name, lines.len())))
        .collect();
    for (name, reader) in SUBSCRIBERS.iter().zip(readers) {
        let received = reader.await.expect("subscriber panicked");
        println!(" [{name}] received {received:?}");
        let expected: Vec<String> = (1..=5).map(|n| format!("log line {n}")).collect();
        common::check(received == expected, "a subscriber missed a message");
    }
    println!(" [x] Every subscriber got every message");
}

/// Pulls from subscription `name` until `count` messages arrived, committing
/// after each pull.
async fn read(client: Client, name: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = Vec::new();
    while received.len() < count && Instant::now() < deadline {
        let params = PullParams {
            max_messages: Some(100),
            wait_ms: Some(1000),
        };
        let messages = client
            .pull("logs", name, params)
            .await
            .unwrap_or_else(|err| common::fail(&err));
        if let Some(last) = messages.last() {
            let next = PartitionOffset {
                partition: last.partition,
                offset: last.offset + 1,
            };
            client
                .commit("logs", name, &[next])
                .await
                .unwrap_or_else(|err| common::fail(&err));
        }
        received.extend(
            messages
                .iter()
                .filter_map(|m| m.value.as_ref()?.as_str().map(str::to_string)),
        );
    }
    received
}
