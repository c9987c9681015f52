//! Waits that end early: long polls and streams when their resource is
//! deleted, a grant is revoked or the broker shuts down; and a damaged
//! metadata log that must not make the broker delete data.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, Api, BrokerProcess};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn long_polls_end_on_delete_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let alice = Api::user(&broker.url, "alice").await;
    let bob = Api::user(&broker.url, "bob").await;
    alice
        .post_expect("/v1/topics", json!({"name": "t"}), StatusCode::CREATED)
        .await;
    alice
        .post_expect(
            "/v1/queues",
            json!({"name": "q", "access": "private"}),
            StatusCode::CREATED,
        )
        .await;
    let grant = json!({"user": "bob", "permission": "consume"});
    let (status, _) = alice
        .call(Method::POST, "/v1/queues/q/grants", Some(grant.clone()))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let fetch = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let path = "/v1/topics/t/partitions/0/messages?offset=0&wait_ms=20000";
            (alice.call(Method::GET, path, None).await, started.elapsed())
        })
    };
    let receive = {
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body = json!({"wait_ms": 20000});
            (
                bob.call(Method::POST, "/v1/queues/q/receive", Some(body))
                    .await,
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, _) = alice.call(Method::DELETE, "/v1/topics/t", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = alice
        .call(Method::DELETE, "/v1/queues/q/grants", Some(grant))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    alice
        .post_expect(
            "/v1/queues/q/messages",
            json!({"messages": [{"value": "secret"}]}),
            StatusCode::OK,
        )
        .await;

    let (fetched, elapsed) = fetch.await.unwrap();
    assert_error(&fetched, StatusCode::NOT_FOUND, "not_found");
    assert!(
        elapsed < Duration::from_secs(10),
        "fetch waited {elapsed:?}"
    );
    let (received, elapsed) = receive.await.unwrap();
    assert_error(&received, StatusCode::NOT_FOUND, "not_found");
    assert!(
        elapsed < Duration::from_secs(10),
        "receive waited {elapsed:?}"
    );
}

#[tokio::test]
async fn stream_ends_when_queue_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let api = Api::user(&broker.url, "owner").await;
    api.post_expect("/v1/queues", json!({"name": "gone"}), StatusCode::CREATED)
        .await;

    let url = format!(
        "{}/v1/queues/gone/stream",
        api.url.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    let header = format!("Bearer {}", api.token.as_deref().unwrap());
    request
        .headers_mut()
        .insert("authorization", header.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::text(r#"{"type":"credit","n":5}"#))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = api.call(Method::DELETE, "/v1/queues/gone", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the stream ends within 5 s")
        .unwrap()
        .unwrap();
    let frame: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["error"]["code"], "not_found");
}

#[tokio::test]
async fn sigterm_answers_long_polls_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    let api = Api::user(&broker.url, "poller").await;
    api.post_expect("/v1/queues", json!({"name": "idle"}), StatusCode::CREATED)
        .await;
    let polls: Vec<_> = (0..5)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let body = json!({"wait_ms": 30000});
                api.call(Method::POST, "/v1/queues/idle/receive", Some(body))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    broker.terminate();
    let stopped = started.elapsed();
    for poll in polls {
        let (status, body) = poll.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["messages"], json!([]));
    }
    assert!(
        stopped < Duration::from_secs(4),
        "shutdown took {stopped:?}"
    );
}

#[tokio::test]
async fn damaged_meta_log_keeps_data_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--fsync", "always"]);
    let api = Api::user(&broker.url, "keeper").await;
    api.post_expect(
        "/v1/topics",
        json!({"name": "precious"}),
        StatusCode::CREATED,
    )
    .await;
    api.post_expect("/v1/topics", json!({"name": "doomed"}), StatusCode::CREATED)
        .await;
    api.post_expect(
        "/v1/topics/precious/messages",
        json!({"messages": [{"value": 1}]}),
        StatusCode::OK,
    )
    .await;
    let (status, _) = api.call(Method::DELETE, "/v1/topics/doomed", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    broker.kill();

    // A deletion whose files stayed behind (a crash between the event and
    // the removal) is cleaned up at the next start.
    let leftover = dir.path().join("topics").join("doomed@2");
    std::fs::create_dir_all(leftover.join("0")).unwrap();
    broker.restart();
    assert!(!leftover.exists(), "files of a deleted topic are removed");
    broker.kill();

    // Damage the first batch of __meta: recovery drops it and everything
    // after, so the catalog loses the topics; their files must stay.
    let segment = dir.path().join("__meta/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    broker.restart();
    let precious = dir.path().join("topics").join("precious@1");
    assert!(
        precious.join("0").exists(),
        "a directory unknown to the catalog is kept"
    );
}

#[tokio::test]
async fn interval_fsync_serves_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--fsync", "20"]);
    let api = Api::user(&broker.url, "interval").await;
    api.post_expect("/v1/topics", json!({"name": "ticks"}), StatusCode::CREATED)
        .await;
    let messages: Vec<_> = (0..50).map(|n| json!({ "value": n })).collect();
    api.post_expect(
        "/v1/topics/ticks/messages",
        json!({ "messages": messages }),
        StatusCode::OK,
    )
    .await;
    let fetched = api
        .get_ok("/v1/topics/ticks/partitions/0/messages?max_messages=100")
        .await;
    assert_eq!(fetched["messages"].as_array().unwrap().len(), 50);

    // A graceful stop flushes; the restarted broker has every message.
    broker.terminate();
    broker.restart();
    let api = Api {
        url: broker.url.clone(),
        ..api
    };
    let fetched = api
        .get_ok("/v1/topics/ticks/partitions/0/messages?max_messages=100")
        .await;
    let values: Vec<u64> = fetched["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["value"].as_u64().unwrap())
        .collect();
    assert_eq!(values, (0..50).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_gets_throttled() {
    let dir = tempfile::tempdir().unwrap();
    // With 2,000,000 iterations four concurrent hashes take several seconds
    // on two cores, longer than the 5 s a queued log-in may wait.
    let broker = BrokerProcess::start(dir.path(), &["--password-iterations", "2000000"]);
    let anonymous = Api::new(&broker.url);
    let body = json!({"username": "flooded", "password": "correct horse"});
    let (status, created) = anonymous.call(Method::POST, "/v1/users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let attempts: Vec<_> = (0..12)
        .map(|_| {
            let anonymous = anonymous.clone();
            tokio::spawn(async move {
                let body = json!({"username": "flooded", "password": "wrong password"});
                anonymous.call(Method::POST, "/v1/tokens", Some(body)).await
            })
        })
        .collect();
    let mut throttled = 0;
    for attempt in attempts {
        let (status, body) = attempt.await.unwrap();
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "throttled");
                throttled += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(throttled > 0, "no log-in was throttled");
}
