//! The parts every example shares: the broker address and a logged-in
//! client.
//!
//! Each example takes `--url` (default `http://127.0.0.1:8080`, or
//! `FERRY_URL`), `--user` and `--password`. The user is registered on first
//! use and logged in after that.

// Each example uses some of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use ferry::client::{Client, ClientError, CreateQueue, CreateTopic};

/// Returns a client logged in as the example's user.
pub async fn connect() -> Client {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|index| args.get(index + 1))
            .cloned()
    };
    let url = flag("--url")
        .or_else(|| std::env::var("FERRY_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let user = flag("--user").unwrap_or_else(|| "example".to_string());
    let password = flag("--password").unwrap_or_else(|| "example-password".to_string());

    let client = Client::new([url.as_str()]).unwrap_or_else(|err| fail(&err));
    match client.register(&user, &password).await {
        Ok(_) => {}
        Err(err) if err.code() == Some("already_exists") => {}
        Err(err) => fail(&err),
    }
    let token = client
        .login(&user, &password)
        .await
        .unwrap_or_else(|err| fail(&err));
    client.with_token(token.token)
}

/// Creates queue `request.name`, or uses it if it exists.
pub async fn ensure_queue(client: &Client, request: CreateQueue) {
    match client.create_queue(&request).await {
        Ok(_) => {}
        Err(err) if err.code() == Some("already_exists") => {}
        Err(err) => fail(&err),
    }
}

/// Creates topic `request.name`, or uses it if it exists.
pub async fn ensure_topic(client: &Client, request: CreateTopic) {
    match client.create_topic(&request).await {
        Ok(_) => {}
        Err(err) if err.code() == Some("already_exists") => {}
        Err(err) => fail(&err),
    }
}

/// Binds `queue` to `topic` with `pattern`, unless that binding exists.
pub async fn ensure_binding(client: &Client, queue: &str, topic: &str, pattern: &str) {
    match client.create_binding(queue, topic, pattern).await {
        Ok(_) => {}
        Err(err) if err.code() == Some("already_exists") => {}
        Err(err) => fail(&err),
    }
}

/// Receives from `queue` and acks until `count` messages arrived or
/// nothing came for `quiet`; returns the messages.
pub async fn receive_all(
    client: &Client,
    queue: &str,
    count: usize,
    quiet: Duration,
) -> Vec<ferry::client::Message> {
    let mut received = Vec::new();
    while received.len() < count {
        let params = ferry::client::ReceiveParams {
            max_messages: Some(100),
            wait_ms: Some(quiet.as_millis() as u64),
            visibility_timeout_ms: None,
        };
        let messages = client
            .receive(queue, params)
            .await
            .unwrap_or_else(|err| fail(&err));
        if messages.is_empty() {
            break;
        }
        let ids: Vec<String> = messages.iter().filter_map(|m| m.id.clone()).collect();
        client
            .ack(queue, &ids)
            .await
            .unwrap_or_else(|err| fail(&err));
        received.extend(messages);
    }
    received
}

/// Prints `err` and exits with status 1.
pub fn fail(err: &ClientError) -> ! {
    eprintln!("error: {err}");
    std::process::exit(1)
}

/// Prints `message` and exits with status 1 when `ok` is false.
pub fn check(ok: bool, message: &str) {
    if !ok {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
