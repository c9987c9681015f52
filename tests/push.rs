//! WebSocket push: credit-based flow control, acks over the socket, and
//! unacked messages returning to the queue when the socket closes.

mod common;

use std::time::Duration;

use common::{Api, BrokerProcess};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(api: &Api, path: &str) -> Socket {
    let url = format!("{}{path}", api.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    let header = format!("Bearer {}", api.token.as_deref().unwrap());
    request
        .headers_mut()
        .insert("authorization", header.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    socket
}

async fn send(socket: &mut Socket, frame: Value) {
    socket.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next JSON frame, or `None` if none arrives within `wait`.
async fn next_frame(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(wait, socket.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = message {
            return Some(serde_json::from_str(&text).unwrap());
        }
    }
}

/// Collects message frames until `count` arrived or nothing comes for `quiet`.
async fn messages(socket: &mut Socket, count: usize, quiet: Duration) -> Vec<Value> {
    let mut received = Vec::new();
    while received.len() < count {
        match next_frame(socket, quiet).await {
            Some(frame) if frame["type"] == "message" => received.push(frame),
            Some(_) => {}
            None => break,
        }
    }
    received
}

async fn publish(api: &Api, path: &str, values: std::ops::Range<u64>) {
    let messages: Vec<Value> = values.map(|n| json!({ "value": n })).collect();
    api.post_expect(path, json!({ "messages": messages }), StatusCode::OK)
        .await;
}

#[tokio::test]
async fn queue_stream_respects_credits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let api = Api::user(&broker.url, "pusher").await;
    api.post_expect("/v1/queues", json!({"name": "work"}), StatusCode::CREATED)
        .await;

    let mut socket = connect(&api, "/v1/queues/work/stream").await;
    send(&mut socket, json!({"type": "credit", "n": 5})).await;
    publish(&api, "/v1/queues/work/messages", 0..20).await;

    let first = messages(&mut socket, 20, Duration::from_millis(700)).await;
    assert_eq!(first.len(), 5, "never more than the 5 credits granted");
    let values: Vec<u64> = first.iter().map(|m| m["value"].as_u64().unwrap()).collect();
    assert_eq!(values, vec![0, 1, 2, 3, 4]);

    let ids: Vec<Value> = first.iter().map(|m| m["id"].clone()).collect();
    send(&mut socket, json!({"type": "ack", "ids": ids})).await;
    let acked = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(acked["type"], "acked");
    assert_eq!(acked["acked"].as_array().unwrap().len(), 5);

    send(&mut socket, json!({"type": "credit", "n": 15})).await;
    let rest = messages(&mut socket, 15, Duration::from_secs(5)).await;
    assert_eq!(rest.len(), 15);
    let ids: Vec<Value> = rest.iter().map(|m| m["id"].clone()).collect();
    send(&mut socket, json!({"type": "ack", "ids": ids})).await;
    let acked = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(acked["acked"].as_array().unwrap().len(), 15);
    assert_eq!(api.get_ok("/v1/queues/work").await["depth"], 0);
    let (_, metrics) = api.call(reqwest::Method::GET, "/metrics", None).await;
    let delivered = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("ferry_messages_delivered_total "))
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(delivered, 20, "stream deliveries are counted");

    // A bad frame gets an error frame, and the stream stays usable.
    socket
        .send(Message::text("{\"type\":\"credit\"}"))
        .await
        .unwrap();
    let error = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(error["type"], "error");
    send(&mut socket, json!({"type": "credit", "n": 1})).await;
    publish(&api, "/v1/queues/work/messages", 100..101).await;
    let late = messages(&mut socket, 1, Duration::from_secs(5)).await;
    assert_eq!(late[0]["value"], 100);
}

#[tokio::test]
async fn closed_queue_stream_returns_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let api = Api::user(&broker.url, "closer").await;
    api.post_expect("/v1/queues", json!({"name": "tasks"}), StatusCode::CREATED)
        .await;
    publish(&api, "/v1/queues/tasks/messages", 0..3).await;

    let mut socket = connect(&api, "/v1/queues/tasks/stream").await;
    send(&mut socket, json!({"type": "credit", "n": 10})).await;
    let received = messages(&mut socket, 3, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 3);
    let described = api.get_ok("/v1/queues/tasks").await;
    assert_eq!(described["in_flight"], 3);
    socket.close(None).await.unwrap();
    drop(socket);

    // The leases are released at once, not after the visibility timeout.
    let mut redelivered = Vec::new();
    for _ in 0..50 {
        let body = api
            .post_expect(
                "/v1/queues/tasks/receive",
                json!({"max_messages": 10, "wait_ms": 100}),
                StatusCode::OK,
            )
            .await;
        redelivered.extend(body["messages"].as_array().unwrap().clone());
        if redelivered.len() == 3 {
            break;
        }
    }
    assert_eq!(redelivered.len(), 3);
    assert!(redelivered.iter().all(|m| m["delivery_count"] == 2));
}

#[tokio::test]
async fn subscription_stream_gets_everything_after_connect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let api = Api::user(&broker.url, "reader").await;
    api.post_expect(
        "/v1/topics",
        json!({"name": "feed", "partitions": 3}),
        StatusCode::CREATED,
    )
    .await;
    publish(&api, "/v1/topics/feed/messages", 0..5).await;
    api.post_expect(
        "/v1/topics/feed/subscriptions",
        json!({"name": "live"}),
        StatusCode::CREATED,
    )
    .await;

    let mut socket = connect(&api, "/v1/topics/feed/subscriptions/live/stream").await;
    send(&mut socket, json!({"type": "credit", "n": 10})).await;
    for batch in 0..6 {
        publish(
            &api,
            "/v1/topics/feed/messages",
            (100 + batch * 10)..(110 + batch * 10),
        )
        .await;
    }
    let first = messages(&mut socket, 60, Duration::from_millis(700)).await;
    assert_eq!(first.len(), 10, "never more than the credits granted");
    send(&mut socket, json!({"type": "credit", "n": 50})).await;
    let rest = messages(&mut socket, 50, Duration::from_secs(5)).await;
    assert_eq!(rest.len(), 50);

    let mut values: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|m| m["value"].as_u64().unwrap())
        .collect();
    values.sort_unstable();
    let expected: Vec<u64> = (100..160).collect();
    assert_eq!(
        values, expected,
        "exactly the messages published after the subscription"
    );

    // Acks commit offset + 1 per partition.
    let mut last: std::collections::BTreeMap<u64, u64> = Default::default();
    for message in first.iter().chain(&rest) {
        let partition = message["partition"].as_u64().unwrap();
        let offset = message["offset"].as_u64().unwrap();
        let entry = last.entry(partition).or_insert(0);
        *entry = (*entry).max(offset);
    }
    let offsets: Vec<Value> = last
        .iter()
        .map(|(p, o)| json!({"partition": p, "offset": o}))
        .collect();
    send(&mut socket, json!({"type": "ack", "offsets": offsets})).await;
    let acked = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(acked["type"], "acked");
    let listed = api.get_ok("/v1/topics/feed/subscriptions").await;
    let committed: Vec<Value> = listed["subscriptions"][0]["committed"]
        .as_array()
        .unwrap()
        .clone();
    for (partition, offset) in last {
        let entry = committed
            .iter()
            .find(|c| c["partition"] == partition)
            .unwrap();
        assert_eq!(entry["offset"].as_u64().unwrap(), offset + 1);
    }
}

#[tokio::test]
async fn hostile_frames_get_error_frames() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let api = Api::user(&broker.url, "hostile").await;
    api.post_expect("/v1/topics", json!({"name": "t"}), StatusCode::CREATED)
        .await;
    api.post_expect(
        "/v1/topics/t/subscriptions",
        json!({"name": "s"}),
        StatusCode::CREATED,
    )
    .await;

    let mut socket = connect(&api, "/v1/topics/t/subscriptions/s/stream").await;
    send(&mut socket, json!({"type": "credit", "n": u64::MAX})).await;
    send(&mut socket, json!({"type": "credit", "n": u64::MAX})).await;
    send(
        &mut socket,
        json!({"type": "ack", "offsets": [{"partition": 0, "offset": u64::MAX}]}),
    )
    .await;
    let error = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(error["type"], "error", "{error}");
    send(&mut socket, json!({"type": "ack", "ids": ["1-1"]})).await;
    let error = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(error["error"]["code"], "invalid_argument", "{error}");
    socket.send(Message::text("not json")).await.unwrap();
    let error = next_frame(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(error["type"], "error", "{error}");

    // The broker and the stream survived all of that.
    publish(&api, "/v1/topics/t/messages", 0..3).await;
    assert_eq!(
        messages(&mut socket, 3, Duration::from_secs(5)).await.len(),
        3
    );

    // A stream route without the upgrade is a clear 400.
    let plain = api
        .call(
            reqwest::Method::GET,
            "/v1/topics/t/subscriptions/s/stream",
            None,
        )
        .await;
    common::assert_error(&plain, StatusCode::BAD_REQUEST, "invalid_argument");
}
