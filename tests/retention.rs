//! Retention on a real broker: old segments go by size and by age, the log
//! start offset advances, fetches below it get a clear error, and readers
//! and idempotent producers carry on.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, Api, BrokerProcess};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Publishes `batches` requests of 16 messages of about 16 KiB each.
async fn fill(api: &Api, topic: &str, batches: usize) {
    let value = "x".repeat(16 << 10);
    for _ in 0..batches {
        let messages: Vec<Value> = (0..16).map(|_| json!({ "value": value })).collect();
        let (status, reply) = api
            .call(
                Method::POST,
                &format!("/v1/topics/{topic}/messages"),
                Some(json!({ "messages": messages })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
}

/// Waits until partition 0 of `topic` keeps at most `kept` offsets (and
/// starts above 0); returns (start, end).
async fn wait_for_start(api: &Api, topic: &str, kept: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let described = api.get_ok(&format!("/v1/topics/{topic}")).await;
        let partition = &described["partitions"][0];
        let start = partition["start_offset"].as_u64().unwrap();
        let end = partition["end_offset"].as_u64().unwrap();
        // Passes that ran while the topic filled leave more behind.
        if start > 0 && end - start <= kept {
            return (start, end);
        }
        assert!(
            Instant::now() < deadline,
            "retention deleted nothing: {described}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn retention_by_size_advances_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--retention-check-interval-ms", "100"]);
    let api = Api::user(&broker.url, "alice").await;
    let (status, reply) = api
        .call(
            Method::POST,
            "/v1/topics",
            Some(json!({"name": "t", "segment_bytes": 1048576, "retention_bytes": 1048576})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["retention_bytes"], 1048576);
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/topics/t/subscriptions",
            Some(json!({"name": "s", "start": "earliest"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    fill(&api, "t", 16).await;

    let (start, end) = wait_for_start(&api, "t", 140).await;
    assert_eq!(end, 256, "retention never touches the end");
    // About 1 MiB of 16 KiB messages stays, and at most one more segment.
    assert!(
        end - start >= 60 && end - start <= 140,
        "kept {start}..{end}"
    );

    let result = api
        .call(
            Method::GET,
            "/v1/topics/t/partitions/0/messages?offset=0",
            None,
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "offset_out_of_range");
    let message = result.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("readable offsets are {start} to")),
        "{message}"
    );
    let fetched = api
        .get_ok(&format!(
            "/v1/topics/t/partitions/0/messages?offset={start}&max_messages=1"
        ))
        .await;
    assert_eq!(fetched["messages"][0]["offset"], start);

    // A subscription whose offsets were deleted goes on at the start.
    let pulled = api
        .get_ok("/v1/topics/t/subscriptions/s/messages?max_messages=1")
        .await;
    assert!(
        pulled["messages"][0]["offset"].as_u64().unwrap() >= start,
        "{pulled}"
    );
}

#[tokio::test]
async fn retention_by_age_keeps_idempotent_producers_going() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--retention-check-interval-ms", "100"]);
    let api = Api::user(&broker.url, "alice").await;
    let (status, reply) = api
        .call(
            Method::POST,
            "/v1/topics",
            Some(json!({"name": "t", "segment_bytes": 1048576, "retention_ms": 300})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let idempotent = |sequence: u64| json!({"producer_id": "p", "messages": [{"value": sequence, "sequence": sequence}]});
    let (status, _) = api
        .call(Method::POST, "/v1/topics/t/messages", Some(idempotent(0)))
        .await;
    assert_eq!(status, StatusCode::OK);
    fill(&api, "t", 8).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (start, _) = wait_for_start(&api, "t", u64::MAX).await;
    assert!(start > 1, "{start}");

    // The producer's batches are gone, and after a restart the broker no
    // longer has its sequences. It accepts the next one all the same.
    broker.restart();
    let api = Api {
        url: broker.url.clone(),
        ..api
    };
    let (status, reply) = api
        .call(Method::POST, "/v1/topics/t/messages", Some(idempotent(1)))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    for body in [
        json!({"name": "z", "retention_ms": 0}),
        json!({"name": "z", "retention_bytes": 0}),
    ] {
        let result = api.call(Method::POST, "/v1/topics", Some(body)).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
    }
}
