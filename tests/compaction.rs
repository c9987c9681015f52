//! Compaction on a real broker: a compacted topic keeps the latest message
//! per key at its original offset and drops old tombstones; offsets logs and
//! queue state logs stay small; everything holds across SIGKILL.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_error, Api, BrokerProcess};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEYS: usize = 20;
/// Keys deleted by a tombstone halfway through.
const DELETED: usize = 5;

/// Reads partition 0 of `topic` from its start to the high watermark.
async fn fetch_all(api: &Api, topic: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut offset = api.get_ok(&format!("/v1/topics/{topic}")).await["partitions"][0]
        ["start_offset"]
        .as_u64()
        .unwrap();
    loop {
        let reply = api
            .get_ok(&format!(
                "/v1/topics/{topic}/partitions/0/messages?offset={offset}&max_messages=1000"
            ))
            .await;
        messages.extend(reply["messages"].as_array().unwrap().iter().cloned());
        let next = reply["next_offset"].as_u64().unwrap();
        if next == reply["high_watermark"].as_u64().unwrap() {
            return messages;
        }
        assert!(next > offset, "fetch did not advance at {offset}: {reply}");
        offset = next;
    }
}

/// What a reader folding `messages` in order holds per key.
fn fold(messages: &[Value]) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for message in messages {
        let key = message["key"].as_str().unwrap().to_string();
        if message["tombstone"] == true {
            state.remove(&key);
        } else {
            state.insert(key, message["value"].clone());
        }
    }
    state
}

async fn publish(api: &Api, topic: &str, messages: Vec<Value>) -> Vec<u64> {
    let reply = api
        .post_expect(
            &format!("/v1/topics/{topic}/messages"),
            json!({ "messages": messages }),
            StatusCode::OK,
        )
        .await;
    reply["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn compacted_topic_keeps_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(
        dir.path(),
        &[
            "--compaction-interval-ms",
            "100",
            "--tombstone-retention-ms",
            "1500",
        ],
    );
    let api = Api::user(&broker.url, "alice").await;
    let created = api
        .post_expect(
            "/v1/topics",
            json!({"name": "accounts", "cleanup": "compact", "segment_bytes": 1048576}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["cleanup"], "compact");
    api.post_expect("/v1/topics", json!({"name": "plain"}), StatusCode::CREATED)
        .await;

    // Input checks: keys are required, and only compacted topics take
    // tombstones, which carry no value.
    let path = "/v1/topics/accounts/messages";
    let keyless = json!({"messages": [{"value": 1}]});
    assert_error(
        &api.call(Method::POST, path, Some(keyless)).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    let both = json!({"messages": [{"key": "k", "value": 1, "tombstone": true}]});
    assert_error(
        &api.call(Method::POST, path, Some(both)).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    let plain = json!({"messages": [{"key": "k", "tombstone": true}]});
    assert_error(
        &api.call(Method::POST, "/v1/topics/plain/messages", Some(plain))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    // 60 rounds over 20 keys of about 4 KiB each fill four 1 MiB segments;
    // keys 0..5 are deleted after round 10 and written no more.
    let pad = "p".repeat(4000);
    let mut latest_offset = BTreeMap::new();
    let mut expected = BTreeMap::new();
    let mut published = 0;
    for round in 0..60 {
        let keys: Vec<usize> = if round < 10 {
            (0..KEYS).collect()
        } else {
            (DELETED..KEYS).collect()
        };
        let messages: Vec<Value> = keys
            .iter()
            .map(|k| json!({"key": format!("k{k}"), "value": {"round": round, "pad": pad}}))
            .collect();
        let offsets = publish(&api, "accounts", messages).await;
        for (k, offset) in keys.iter().zip(offsets) {
            latest_offset.insert(format!("k{k}"), offset);
            expected.insert(format!("k{k}"), json!({"round": round, "pad": pad}));
        }
        published += keys.len();
        if round == 9 {
            let tombstones: Vec<Value> = (0..DELETED)
                .map(|k| json!({"key": format!("k{k}"), "tombstone": true}))
                .collect();
            publish(&api, "accounts", tombstones).await;
            published += DELETED;
            for k in 0..DELETED {
                expected.remove(&format!("k{k}"));
            }
        }
    }
    // Passes run while the topic fills: at any time, a reader from the
    // start sees the latest values.
    assert_eq!(fold(&fetch_all(&api, "accounts").await), expected);

    // Wait for a pass that removed the old values and, after 1.5 s, the
    // tombstones.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let now = fetch_all(&api, "accounts").await;
        let tombstones = now.iter().filter(|m| m["tombstone"] == true).count();
        if now.len() < published / 2 && tombstones == 0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: {} of {published} messages left, {tombstones} tombstones",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fold(&after), expected);
    for key in expected.keys() {
        let found = after
            .iter()
            .filter(|m| m["key"] == key.as_str())
            .map(|m| m["offset"].as_u64().unwrap())
            .max();
        assert_eq!(found, Some(latest_offset[key]), "latest offset of {key}");
    }
    for k in 0..DELETED {
        let key = format!("k{k}");
        assert!(
            after.iter().all(|m| m["key"] != key.as_str()),
            "deleted key {key} is still there"
        );
    }
    let described = api.get_ok("/v1/topics/accounts").await;
    assert_eq!(described["partitions"][0]["start_offset"], 0);
    assert_eq!(described["partitions"][0]["end_offset"], published as u64);

    // The same after a crash, and new messages get the next offsets.
    broker.kill();
    broker.restart();
    let api = api.with_url(&broker.url);
    assert_eq!(fetch_all(&api, "accounts").await, after);
    let offsets = publish(&api, "accounts", vec![json!({"key": "k7", "value": "new"})]).await;
    assert_eq!(offsets, vec![published as u64]);
}

/// Sum of the `.log` file sizes in `dir`.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

/// The only directory under `parent` whose name starts with `prefix`.
fn resource_dir(parent: &Path, prefix: &str) -> std::path::PathBuf {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(prefix)
        })
        .unwrap_or_else(|| panic!("no {prefix} under {}", parent.display()))
}

#[tokio::test]
async fn offsets_and_queue_state_logs_stay_small() {
    const COMMITS: u64 = 1500;
    const MESSAGES: usize = 800;
    const LEFT_LEASED: usize = 10;

    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(
        dir.path(),
        &[
            "--segment-bytes",
            "65536",
            "--compaction-interval-ms",
            "100",
        ],
    );
    let api = Api::user(&broker.url, "alice").await;
    api.post_expect("/v1/topics", json!({"name": "t"}), StatusCode::CREATED)
        .await;
    api.post_expect(
        "/v1/topics/t/subscriptions",
        json!({"name": "s", "start": "earliest"}),
        StatusCode::CREATED,
    )
    .await;
    publish(&api, "t", vec![json!({"value": 1}), json!({"value": 2})]).await;
    for i in 0..COMMITS {
        let (status, reply) = api
            .call(
                Method::POST,
                "/v1/topics/t/subscriptions/s/offsets",
                Some(json!({"offsets": [{"partition": 0, "offset": i % 2 + 1}]})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{reply}");
    }

    api.post_expect("/v1/queues", json!({"name": "q"}), StatusCode::CREATED)
        .await;
    for chunk in 0..MESSAGES / 100 {
        let messages: Vec<Value> = (0..100)
            .map(|i| json!({"value": chunk * 100 + i}))
            .collect();
        api.post_expect(
            "/v1/queues/q/messages",
            json!({ "messages": messages }),
            StatusCode::OK,
        )
        .await;
    }
    // One lease and one ack per message, except the last few, which stay
    // leased for a long time.
    for i in 0..MESSAGES {
        let reply = api
            .post_expect(
                "/v1/queues/q/receive",
                json!({"visibility_timeout_ms": 600000}),
                StatusCode::OK,
            )
            .await;
        let message = &reply["messages"][0];
        assert_eq!(message["offset"], i as u64);
        if i < MESSAGES - LEFT_LEASED {
            api.post_expect(
                "/v1/queues/q/ack",
                json!({"ids": [message["id"]]}),
                StatusCode::OK,
            )
            .await;
        }
    }

    let topic_dir = resource_dir(&dir.path().join("topics"), "t@");
    let offsets_dir = topic_dir.join("offsets");
    let state_dir = resource_dir(&dir.path().join("queues"), "q@").join("state");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (offsets, state) = (log_bytes(&offsets_dir), log_bytes(&state_dir));
        // The active segment alone takes up to 64 KiB of disk.
        if offsets < 80 << 10 && state < 80 << 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs not compacted: offsets {offsets} bytes, state {state} bytes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    broker.kill();
    broker.restart();
    let api = api.with_url(&broker.url);
    let subscription = api.get_ok("/v1/topics/t/subscriptions").await;
    let committed = &subscription["subscriptions"][0]["committed"][0]["offset"];
    assert_eq!(*committed, (COMMITS - 1) % 2 + 1, "{subscription}");
    let queue = api.get_ok("/v1/queues/q").await;
    assert_eq!(queue["depth"], LEFT_LEASED as u64, "{queue}");
    assert_eq!(queue["in_flight"], LEFT_LEASED as u64, "{queue}");
    // The leased messages stay hidden; the next message is new.
    api.post_expect(
        "/v1/queues/q/messages",
        json!({"messages": [{"value": "after"}]}),
        StatusCode::OK,
    )
    .await;
    let reply = api
        .post_expect(
            "/v1/queues/q/receive",
            json!({"max_messages": 10}),
            StatusCode::OK,
        )
        .await;
    let offsets: Vec<&Value> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["offset"])
        .collect();
    assert_eq!(offsets, vec![&json!(MESSAGES as u64)], "{reply}");
    assert_eq!(reply["messages"][0]["delivery_count"], 1);
}
