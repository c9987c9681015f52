//! Hello world: one producer sends a message to a queue, one consumer
//! receives and acknowledges it.
//!
//! Run a broker (`cargo run --release -- serve`), then
//! `cargo run --example hello_world`.

mod common;

use std::time::Duration;

use ferry::client::{CreateQueue, NewMessage};

#[tokio::main]
async fn main() {
    let client = common::connect().await;
    common::ensure_queue(&client, CreateQueue::named("hello")).await;

    // The producer.
    let message = NewMessage::json(serde_json::json!({"text": "Hello World!"}));
    client
        .send("hello", &[message])
        .await
        .unwrap_or_else(|err| common::fail(&err));
    println!(" [x] Sent 'Hello World!'");

    // The consumer: waits up to five seconds, then acknowledges.
    let received = common::receive_all(&client, "hello", 1, Duration::from_secs(5)).await;
    common::check(!received.is_empty(), "no message arrived within 5 s");
    for message in &received {
        let text = message.value.as_ref().and_then(|v| v["text"].as_str());
        println!(" [x] Received '{}'", text.unwrap_or("?"));
    }
}
