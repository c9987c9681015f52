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

const USAGE: &str = "options:
  --url URL            broker base URL [default: $FERRY_URL, else http://127.0.0.1:8080]
  --user NAME          user to register or log in as [default: example]
  --password PASSWORD  its password [default: example-password]";

/// Returns a client logged in as the example's user.
pub async fn connect() -> Client {
    let mut url = std::env::var("FERRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let mut user = "example".to_string();
    let mut password = "example-password".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--url" => &mut url,
            "--user" => &mut user,
            "--password" => &mut password,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => usage_error(&format!("unknown option `{other}`")),
        };
        *target = args
            .next()
            .unwrap_or_else(|| usage_error(&format!("`{arg}` needs a value")));
    }

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

/// Prints `message` and the usage, and exits with status 2.
fn usage_error(message: &str) -> ! {
    eprintln!("error: {message}\n{USAGE}");
    std::process::exit(2)
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
