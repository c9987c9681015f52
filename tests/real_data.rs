//! Real public data sets through the broker: every line of every file is
//! published over REST in batches, then read back by offset, through a
//! subscription and through a queue with two competing consumers. Each
//! message must come back exactly once and equal to what was sent.
//!
//! JSON-lines files are sent as JSON values; CSV and log lines as JSON
//! strings. The data directory is `FERRY_TEST_DATA` or `../shared/data`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use common::{Api, BrokerProcess};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BATCH: usize = 500;
const PARTITIONS: u64 = 4;

/// One data set: its file and whether its lines are JSON documents.
const DATA_SETS: &[(&str, bool)] = &[
    ("wikipedia_edits.jsonl.gz", true),
    ("github_archive_events.jsonl", true),
    ("github_webhook_payloads.jsonl", true),
    ("earthquakes_2016.csv", false),
    ("apache_access.log", false),
];

fn load(path: &Path, json_lines: bool) -> Vec<Value> {
    let file = std::fs::File::open(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let reader: Box<dyn Read> = if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    BufReader::new(reader)
        .lines()
        .map(|line| line.expect("readable line"))
        .filter(|line| !line.is_empty())
        .map(|line| {
            if json_lines {
                serde_json::from_str(&line).expect("data set line is JSON")
            } else {
                Value::String(line)
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_data_round_trips() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--fsync", "always"]);
    let api = Api::user(&broker.url, "loader").await;

    for (index, &(file, json_lines)) in DATA_SETS.iter().enumerate() {
        let values = load(&data.join(file), json_lines);
        assert!(!values.is_empty(), "{file} is empty");
        let topic = format!("data-{index}");
        let queue = format!("queue-{index}");
        api.post_expect(
            "/v1/topics",
            json!({"name": topic, "partitions": PARTITIONS}),
            StatusCode::CREATED,
        )
        .await;
        api.post_expect(
            &format!("/v1/topics/{topic}/subscriptions"),
            json!({"name": "all", "start": "earliest"}),
            StatusCode::CREATED,
        )
        .await;
        api.post_expect("/v1/queues", json!({"name": queue}), StatusCode::CREATED)
            .await;

        let placed = publish_all(&api, &format!("/v1/topics/{topic}/messages"), &values).await;
        publish_all(&api, &format!("/v1/queues/{queue}/messages"), &values).await;

        check_by_offset(&api, &topic, &values, &placed).await;
        check_subscription(&api, &topic, &values).await;
        check_queue(&api, &queue, &values).await;
        eprintln!("{file}: {} messages came back exactly once", values.len());
    }
}

/// Publishes in batches; returns (partition, offset) per value.
async fn publish_all(api: &Api, path: &str, values: &[Value]) -> Vec<(u64, u64)> {
    let mut placed = Vec::with_capacity(values.len());
    for chunk in values.chunks(BATCH) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|value| json!({ "value": value }))
            .collect();
        let body = api
            .post_expect(path, json!({ "messages": messages }), StatusCode::OK)
            .await;
        let offsets = body["offsets"].as_array().unwrap();
        assert_eq!(offsets.len(), chunk.len());
        placed.extend(offsets.iter().map(|entry| {
            (
                entry["partition"].as_u64().unwrap(),
                entry["offset"].as_u64().unwrap(),
            )
        }));
    }
    placed
}

async fn check_by_offset(api: &Api, topic: &str, values: &[Value], placed: &[(u64, u64)]) {
    let expected: HashMap<(u64, u64), &Value> = placed.iter().copied().zip(values).collect();
    assert_eq!(
        expected.len(),
        values.len(),
        "every message got its own offset"
    );
    let mut seen = 0usize;
    for partition in 0..PARTITIONS {
        let mut offset = 0u64;
        loop {
            let path = format!("/v1/topics/{topic}/partitions/{partition}/messages?offset={offset}&max_messages=1000");
            let body = api.get_ok(&path).await;
            let messages = body["messages"].as_array().unwrap();
            for (position, message) in messages.iter().enumerate() {
                let key = (partition, message["offset"].as_u64().unwrap());
                assert_eq!(key.1, offset + position as u64, "offsets are dense");
                let sent = expected
                    .get(&key)
                    .unwrap_or_else(|| panic!("unexpected message at {key:?}"));
                assert_eq!(&message["value"], *sent, "value at {key:?}");
                assert_eq!(message["producer"], "loader");
                seen += 1;
            }
            offset = body["next_offset"].as_u64().unwrap();
            if offset >= body["high_watermark"].as_u64().unwrap() {
                break;
            }
        }
    }
    assert_eq!(
        seen,
        values.len(),
        "every message read back by offset exactly once"
    );
}

async fn check_subscription(api: &Api, topic: &str, values: &[Value]) {
    let mut remaining = multiset(values);
    let mut received = 0usize;
    let path =
        format!("/v1/topics/{topic}/subscriptions/all/messages?max_messages=1000&wait_ms=1000");
    let mut empty_pulls = 0;
    while received < values.len() && empty_pulls < 3 {
        let body = api.get_ok(&path).await;
        let messages = body["messages"].as_array().unwrap();
        if messages.is_empty() {
            empty_pulls += 1;
            continue;
        }
        let mut commits: HashMap<u64, u64> = HashMap::new();
        for message in messages {
            take(&mut remaining, &message["value"]);
            received += 1;
            let partition = message["partition"].as_u64().unwrap();
            let next = message["offset"].as_u64().unwrap() + 1;
            let entry = commits.entry(partition).or_insert(next);
            *entry = (*entry).max(next);
        }
        let offsets: Vec<Value> = commits
            .iter()
            .map(|(p, o)| json!({"partition": p, "offset": o}))
            .collect();
        let (status, body) = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/topics/{topic}/subscriptions/all/offsets"),
                Some(json!({ "offsets": offsets })),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    assert_eq!(
        received,
        values.len(),
        "subscription delivered every message once"
    );
    assert!(remaining.is_empty());
}

async fn check_queue(api: &Api, queue: &str, values: &[Value]) {
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let api = api.clone();
            let queue = queue.to_string();
            tokio::spawn(async move { drain(&api, &queue).await })
        })
        .collect();
    let mut remaining = multiset(values);
    let mut per_consumer = Vec::new();
    for consumer in consumers {
        let got = consumer.await.unwrap();
        per_consumer.push(got.len());
        for value in &got {
            take(&mut remaining, value);
        }
    }
    assert!(
        remaining.is_empty(),
        "{} messages never came out of the queue",
        remaining.len()
    );
    assert_eq!(per_consumer.iter().sum::<usize>(), values.len());
    let described = api.get_ok(&format!("/v1/queues/{queue}")).await;
    assert_eq!(described["depth"], 0);
    assert_eq!(described["in_flight"], 0);
}

/// Receives and acks until the queue stays empty.
async fn drain(api: &Api, queue: &str) -> Vec<Value> {
    let mut got = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let body = api
            .post_expect(
                &format!("/v1/queues/{queue}/receive"),
                json!({"max_messages": 200, "wait_ms": 300}),
                StatusCode::OK,
            )
            .await;
        let messages = body["messages"].as_array().unwrap();
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        assert!(
            messages.iter().all(|m| m["delivery_count"] == 1),
            "no redelivery expected"
        );
        let acked = api
            .post_expect(
                &format!("/v1/queues/{queue}/ack"),
                json!({ "ids": ids }),
                StatusCode::OK,
            )
            .await;
        assert_eq!(acked["failed"], json!([]));
        got.extend(messages.iter().map(|m| m["value"].clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    got
}

fn multiset(values: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for value in values {
        *counts.entry(value.to_string()).or_insert(0) += 1;
    }
    counts
}

fn take(remaining: &mut HashMap<String, usize>, value: &Value) {
    let key = value.to_string();
    match remaining.get_mut(&key) {
        Some(count) if *count > 1 => *count -= 1,
        Some(_) => {
            remaining.remove(&key);
        }
        None => panic!("message delivered more often than sent: {}", truncate(&key)),
    }
}

fn truncate(text: &str) -> &str {
    &text[..text.len().min(200)]
}
