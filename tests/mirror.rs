//! The MySQL mirror against a real MariaDB: every message, user, topic,
//! queue, subscription, committed offset and queue delivery of the log
//! shows up as a row, exactly once, through a SIGKILL of the broker and a
//! restart of the database; deletes, retention and a rebuild show up too.
//!
//! `tools/test` installs MariaDB; each test starts its own server on a free
//! loopback port (`common::mariadb`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mariadb::MariaDbProcess;
use common::{Api, BrokerProcess};
use mysql_async::prelude::Queryable;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// How long the mirror may take to catch up in a test.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Real data sets sent to the mirror: file and whether lines are JSON.
const DATA_SETS: &[(&str, bool)] = &[
    ("github_archive_events.jsonl", true),
    ("github_webhook_payloads.jsonl", true),
    ("earthquakes_2016.csv", false),
    ("apache_access.log", false),
];

fn load(path: &Path, json_lines: bool) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            if json_lines {
                serde_json::from_str(line).expect("data set line is JSON")
            } else {
                Value::String(line.to_string())
            }
        })
        .collect()
}

async fn connect(mariadb: &MariaDbProcess) -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(&mariadb.url()).unwrap();
    mysql_async::Conn::new(opts)
        .await
        .expect("connect to MariaDB")
}

/// Runs `sql` until it returns `expected` or `CATCH_UP` passes; returns
/// the last result. A query may fail while the mirror creates its tables.
async fn wait_for_count(mariadb: &MariaDbProcess, sql: &str, expected: u64) -> u64 {
    let deadline = Instant::now() + CATCH_UP;
    let mut last = u64::MAX;
    while Instant::now() < deadline {
        let mut conn = connect(mariadb).await;
        if let Ok(Some(count)) = conn.query_first::<u64, _>(sql).await {
            last = count;
            if count == expected {
                return count;
            }
        }
        drop(conn);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// Publishes `values` in batches of `batch` to `path`; returns the
/// (partition, offset) of each.
async fn publish(api: &Api, path: &str, values: &[Value], batch: usize) -> Vec<(u64, u64)> {
    let mut placed = Vec::new();
    for chunk in values.chunks(batch) {
        let messages: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, value)| json!({"value": value, "key": format!("k{}", i % 7), "headers": {"source": "test"}}))
            .collect();
        let body = api
            .post_expect(path, json!({ "messages": messages }), StatusCode::OK)
            .await;
        placed.extend(body["offsets"].as_array().unwrap().iter().map(|entry| {
            (
                entry["partition"].as_u64().unwrap(),
                entry["offset"].as_u64().unwrap(),
            )
        }));
    }
    placed
}

/// Reads every message of a topic partition by offset, from the log start
/// offset: offset to (value, key).
async fn read_partition(api: &Api, topic: &str, partition: u64) -> BTreeMap<u64, (Value, Value)> {
    let mut messages = BTreeMap::new();
    let described = api.get_ok(&format!("/v1/topics/{topic}")).await;
    let mut offset = described["partitions"][partition as usize]["start_offset"]
        .as_u64()
        .unwrap();
    loop {
        let body = api
            .get_ok(&format!(
                "/v1/topics/{topic}/partitions/{partition}/messages?offset={offset}&max_messages=1000"
            ))
            .await;
        for message in body["messages"].as_array().unwrap() {
            messages.insert(
                message["offset"].as_u64().unwrap(),
                (message["value"].clone(), message["key"].clone()),
            );
        }
        offset = body["next_offset"].as_u64().unwrap();
        if offset >= body["high_watermark"].as_u64().unwrap() {
            return messages;
        }
    }
}

/// Offset, value, key, whether the value is JSON, producer and headers of
/// one row of `messages`.
type MessageRow = (
    u64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    bool,
    Option<String>,
    String,
);

/// Reads the mirrored messages of one topic partition: offset to (value,
/// key), checking the fields every test message has.
async fn mirrored_partition(
    conn: &mut mysql_async::Conn,
    topic_id: u64,
    partition: u64,
) -> BTreeMap<u64, (Value, Value)> {
    let rows: Vec<MessageRow> = conn
        .exec(
            "SELECT log_offset, value, message_key, value_is_json, producer, headers
             FROM messages WHERE kind = 'topic' AND resource_id = ? AND partition_id = ?
             ORDER BY log_offset",
            (topic_id, partition),
        )
        .await
        .unwrap();
    let mut messages = BTreeMap::new();
    for (offset, value, key, is_json, producer, headers) in rows {
        assert!(is_json, "offset {offset} is JSON");
        assert_eq!(producer.as_deref(), Some("loader"), "producer of {offset}");
        let headers: Value = serde_json::from_str(&headers).unwrap();
        assert_eq!(headers, json!({"source": "test"}), "headers of {offset}");
        let value: Value = serde_json::from_slice(&value.expect("a value")).unwrap();
        let key = key.map_or(Value::Null, |k| {
            Value::String(String::from_utf8(k).unwrap())
        });
        let previous = messages.insert(offset, (value, key));
        assert!(previous.is_none(), "offset {offset} mirrored twice");
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_matches_the_log_for_real_data() {
    let Some(data) = common::data_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(mariadb) = MariaDbProcess::start(&dir.path().join("mariadb")) else {
        return;
    };
    let url = mariadb.url();
    let broker = BrokerProcess::start(
        &dir.path().join("broker"),
        &["--fsync", "always", "--mysql-url", &url],
    );
    let api = Api::user(&broker.url, "loader").await;
    let _reader = Api::user(&broker.url, "reader").await;

    api.post_expect(
        "/v1/topics",
        json!({"name": "data", "partitions": 4}),
        StatusCode::CREATED,
    )
    .await;
    api.post_expect("/v1/queues", json!({"name": "jobs"}), StatusCode::CREATED)
        .await;
    let mut total = 0;
    for &(file, json_lines) in DATA_SETS {
        let values = load(&data.join(file), json_lines);
        total += publish(&api, "/v1/topics/data/messages", &values, 500)
            .await
            .len() as u64;
    }
    let queued = load(&data.join("apache_access.log"), false);
    publish(&api, "/v1/queues/jobs/messages", &queued[..1000], 250).await;

    // A subscription that reads and commits, and queue deliveries.
    api.post_expect(
        "/v1/topics/data/subscriptions",
        json!({"name": "audit", "start": "earliest"}),
        StatusCode::CREATED,
    )
    .await;
    let pulled = api
        .get_ok("/v1/topics/data/subscriptions/audit/messages?max_messages=100")
        .await;
    let mut commits: BTreeMap<u64, u64> = BTreeMap::new();
    for message in pulled["messages"].as_array().unwrap() {
        let next = message["offset"].as_u64().unwrap() + 1;
        let entry = commits
            .entry(message["partition"].as_u64().unwrap())
            .or_insert(next);
        *entry = (*entry).max(next);
    }
    let offsets: Vec<Value> = commits
        .iter()
        .map(|(p, o)| json!({"partition": p, "offset": o}))
        .collect();
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/topics/data/subscriptions/audit/offsets",
            Some(json!({ "offsets": offsets })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let received = api
        .post_expect(
            "/v1/queues/jobs/receive",
            json!({"max_messages": 10}),
            StatusCode::OK,
        )
        .await;
    let ids: Vec<Value> = received["messages"].as_array().unwrap()[..5]
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    api.post_expect("/v1/queues/jobs/ack", json!({ "ids": ids }), StatusCode::OK)
        .await;

    let mirrored = wait_for_count(
        &mariadb,
        "SELECT COUNT(*) FROM messages WHERE kind = 'topic'",
        total,
    )
    .await;
    assert_eq!(mirrored, total, "every topic message mirrored");
    let queue_rows = wait_for_count(
        &mariadb,
        "SELECT COUNT(*) FROM messages WHERE kind = 'queue'",
        1000,
    )
    .await;
    assert_eq!(queue_rows, 1000);
    assert_eq!(
        wait_for_count(
            &mariadb,
            "SELECT COUNT(*) FROM queue_deliveries WHERE event = 'acked'",
            5
        )
        .await,
        5
    );
    assert_eq!(
        wait_for_count(
            &mariadb,
            "SELECT COUNT(*) FROM queue_deliveries WHERE event = 'leased'",
            10
        )
        .await,
        10
    );
    assert_eq!(
        wait_for_count(
            &mariadb,
            "SELECT COUNT(*) FROM consumer_offsets",
            commits.len() as u64
        )
        .await,
        commits.len() as u64
    );

    let mut conn = connect(&mariadb).await;
    let users: Vec<String> = conn
        .query("SELECT username FROM users ORDER BY username")
        .await
        .unwrap();
    assert_eq!(users, vec!["loader".to_string(), "reader".to_string()]);
    let topics: Vec<(u64, String, String, u32)> = conn
        .query("SELECT id, name, owner, partitions FROM topics")
        .await
        .unwrap();
    assert_eq!(topics.len(), 1);
    let (id, name, owner, partitions) = topics[0].clone();
    assert_eq!(
        (name.as_str(), owner.as_str(), partitions),
        ("data", "loader", 4)
    );
    let queues: Vec<String> = conn.query("SELECT name FROM queues").await.unwrap();
    assert_eq!(queues, vec!["jobs".to_string()]);
    let subscriptions: Vec<String> = conn.query("SELECT name FROM subscriptions").await.unwrap();
    assert_eq!(subscriptions, vec!["audit".to_string()]);
    let committed: Vec<(u32, u64)> = conn
        .query("SELECT partition_id, next_offset FROM consumer_offsets ORDER BY partition_id")
        .await
        .unwrap();
    let expected: Vec<(u32, u64)> = commits.iter().map(|(&p, &o)| (p as u32, o)).collect();
    assert_eq!(committed, expected);

    // Row by row, the database holds what the log holds.
    for partition in 0..4 {
        let log = read_partition(&api, "data", partition).await;
        let rows = mirrored_partition(&mut conn, id, partition).await;
        assert_eq!(rows.len(), log.len(), "rows of partition {partition}");
        assert!(rows == log, "partition {partition} differs from the log");
    }

    // Lag is reported and is zero once caught up.
    let cluster = api.get_ok("/v1/cluster").await;
    assert_eq!(cluster["mirror"]["active"], true, "{cluster}");
    assert_eq!(cluster["mirror"]["lag_records"], 0, "{cluster}");
    let metrics = reqwest::get(format!("{}/metrics", broker.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "ferry_mirror_lag_records{{log=\"topic/{id}/0\"}} 0"
        )),
        "{metrics}"
    );
}
