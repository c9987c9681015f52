//! The MySQL mirror against a real MariaDB. Every message, user, topic,
//! queue, subscription, committed offset and queue delivery of the log
//! shows up as a row, exactly once, also through a SIGKILL of the broker
//! and a restart of the database. Deletes, retention, a rebuild and the
//! death of the mirror's broker in a cluster show up too.
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

    // Row by row, the database contains what the log contains.
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
    let metrics = common::metrics(&broker.url).await;
    assert!(
        metrics.contains(&format!(
            "ferry_mirror_lag_records{{log=\"topic/{id}/0\"}} 0"
        )),
        "{metrics}"
    );
}

/// Messages of about 1 KiB, each naming its batch and place.
fn kilobyte_values(batch: usize, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| Value::String(format!("batch {batch} message {i} {}", "x".repeat(1000))))
        .collect()
}

async fn mirror_metric(url: &str, name: &str) -> f64 {
    let metrics = common::metrics(url).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
}

/// Waits until the broker at `url` counted a failed mirror session, or
/// fails the test with `failure`.
async fn wait_for_a_session_error(url: &str, failure: &str) {
    let deadline = Instant::now() + CATCH_UP;
    while mirror_metric(url, "ferry_mirror_errors_total").await < 1.0 {
        assert!(Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_survives_broker_kill_and_database_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut mariadb) = MariaDbProcess::start(&dir.path().join("mariadb")) else {
        return;
    };
    let url = mariadb.url();
    let mut broker = BrokerProcess::start(
        &dir.path().join("broker"),
        &["--fsync", "always", "--mysql-url", &url],
    );
    let mut api = Api::user(&broker.url, "loader").await;
    api.post_expect(
        "/v1/topics",
        json!({"name": "stream", "partitions": 2}),
        StatusCode::CREATED,
    )
    .await;

    let mut acked = Vec::new();
    let mut database_restarts = 0;
    for batch in 0..30 {
        // Both cuts land while the mirror still has records to write: each
        // batch is 200 KiB, written a moment before.
        if batch == 10 {
            broker.restart();
            api = api.with_url(&broker.url);
        }
        if batch == 20 {
            // While the database is down the lag grows with what waits.
            mariadb.kill();
            let values = kilobyte_values(batch, 200);
            acked.extend(publish(&api, "/v1/topics/stream/messages", &values, 200).await);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut lag = 0.0;
            while Instant::now() < deadline {
                lag = mirror_metric(&broker.url, "ferry_mirror_lag_records{log=\"topic/1/0\"}")
                    .await
                    + mirror_metric(&broker.url, "ferry_mirror_lag_records{log=\"topic/1/1\"}")
                        .await;
                if lag >= 200.0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(lag >= 200.0, "lag while the database is down: {lag}");
            mariadb.restart();
            database_restarts += 1;
            continue;
        }
        let values = kilobyte_values(batch, 200);
        acked.extend(publish(&api, "/v1/topics/stream/messages", &values, 200).await);
    }

    let mut log = BTreeMap::new();
    for partition in 0..2 {
        log.insert(partition, read_partition(&api, "stream", partition).await);
    }
    let total: u64 = log.values().map(|messages| messages.len() as u64).sum();
    for (partition, offset) in &acked {
        assert!(
            log[partition].contains_key(offset),
            "acknowledged message {partition}/{offset} is in the log"
        );
    }
    let mirrored = wait_for_count(
        &mariadb,
        "SELECT COUNT(*) FROM messages WHERE kind = 'topic'",
        total,
    )
    .await;
    assert_eq!(mirrored, total, "no missing and no extra row");

    let mut conn = connect(&mariadb).await;
    let id: u64 = conn
        .query_first("SELECT id FROM topics WHERE name = 'stream'")
        .await
        .unwrap()
        .unwrap();
    for partition in 0..2 {
        let rows = mirrored_partition(&mut conn, id, partition).await;
        assert!(
            rows == log[&partition],
            "partition {partition}: the database differs from the log"
        );
        let next: u64 = conn
            .exec_first(
                "SELECT next_offset FROM mirror_checkpoints
                 WHERE kind = 'topic' AND resource_id = ? AND partition_id = ?",
                (id, partition),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            next,
            log[&partition].len() as u64,
            "checkpoint of {partition}"
        );
    }
    // The database restart ended at least one session: the test did cut
    // the mirror in the middle.
    let errors = mirror_metric(&broker.url, "ferry_mirror_errors_total").await;
    assert!(errors >= f64::from(database_restarts), "errors: {errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_reflects_deletes_retention_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mariadb) = MariaDbProcess::start(&dir.path().join("mariadb")) else {
        return;
    };
    let url = mariadb.url();
    let broker = BrokerProcess::start(
        &dir.path().join("broker"),
        &["--mysql-url", &url, "--retention-check-interval-ms", "100"],
    );
    let api = Api::user(&broker.url, "loader").await;

    // Retention: 3 MiB into 1 MiB segments with 1 MiB kept.
    api.post_expect(
        "/v1/topics",
        json!({"name": "short", "segment_bytes": 1048576, "retention_bytes": 1048576}),
        StatusCode::CREATED,
    )
    .await;
    for batch in 0..30 {
        publish(
            &api,
            "/v1/topics/short/messages",
            &kilobyte_values(batch, 100),
            100,
        )
        .await;
    }
    // Retention runs every 100 ms and may move the start again while the
    // mirror catches up, so the log and the database are read until they
    // agree.
    let deadline = Instant::now() + CATCH_UP;
    let (start, rows, lowest) = loop {
        let described = api.get_ok("/v1/topics/short").await;
        let start = described["partitions"][0]["start_offset"].as_u64().unwrap();
        let mut conn = connect(&mariadb).await;
        let rows: Option<(u64, Option<u64>)> = conn
            .query_first("SELECT COUNT(*), MIN(log_offset) FROM messages")
            .await
            .ok()
            .flatten();
        let (rows, lowest) = rows.unwrap_or((0, None));
        if (start > 0 && rows == 3000 - start && lowest == Some(start)) || Instant::now() > deadline
        {
            break (start, rows, lowest);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(start > 0, "retention deleted a segment");
    let kept = 3000 - start;
    assert_eq!(
        rows, kept,
        "rows below the log start offset {start} are deleted"
    );
    assert_eq!(lowest, Some(start));

    // Deletes of a topic with a subscription, and of a queue.
    api.post_expect("/v1/topics", json!({"name": "gone"}), StatusCode::CREATED)
        .await;
    api.post_expect(
        "/v1/topics/gone/subscriptions",
        json!({"name": "s", "start": "earliest"}),
        StatusCode::CREATED,
    )
    .await;
    publish(
        &api,
        "/v1/topics/gone/messages",
        &kilobyte_values(0, 10),
        10,
    )
    .await;
    api.post_expect("/v1/queues", json!({"name": "q"}), StatusCode::CREATED)
        .await;
    publish(&api, "/v1/queues/q/messages", &kilobyte_values(0, 10), 10).await;
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM messages", kept + 20).await,
        kept + 20
    );
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM subscriptions", 1).await,
        1
    );
    for path in ["/v1/topics/gone", "/v1/queues/q"] {
        let (status, body) = api.call(Method::DELETE, path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {body}");
    }
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM messages", kept).await,
        kept,
        "the deleted topic's and queue's messages are gone"
    );
    for (sql, expected) in [
        ("SELECT COUNT(*) FROM topics", 1),
        ("SELECT COUNT(*) FROM queues", 0),
        ("SELECT COUNT(*) FROM subscriptions", 0),
        (
            "SELECT COUNT(*) FROM mirror_checkpoints WHERE kind <> 'meta'",
            2,
        ),
    ] {
        assert_eq!(
            wait_for_count(&mariadb, sql, expected).await,
            expected,
            "{sql}"
        );
    }

    // A rebuild empties the tables; the running mirror writes them again.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["admin", "mirror", "rebuild", "--mysql-url", &url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM messages", kept).await,
        kept,
        "the rebuilt database holds the retained messages again"
    );
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM users", 1).await,
        1
    );
}

/// Publishes `values` to `topic` through the broker at `url`, retrying
/// while a leader is elected. Returns once the broker acknowledged them.
async fn publish_retrying(api: &Api, topic: &str, values: &[Value]) {
    let messages: Vec<Value> = values
        .iter()
        .map(|value| json!({ "value": value }))
        .collect();
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let (status, body) = common::cluster::try_call(
            api,
            Method::POST,
            &format!("/v1/topics/{topic}/messages"),
            Some(json!({ "messages": messages })),
        )
        .await;
        if status == Some(StatusCode::OK) {
            return;
        }
        assert!(Instant::now() < deadline, "publish: {status:?} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_moves_when_its_broker_dies() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mariadb) = MariaDbProcess::start(&dir.path().join("mariadb")) else {
        return;
    };
    let url = mariadb.url();
    let Some(mut cluster) =
        // One in-sync replica suffices, so the survivor of two takes writes.
        common::cluster::TestCluster::start(
            dir.path(),
            2,
            &["--mysql-url", &url, "--min-insync-replicas", "1"],
        )
        .await
    else {
        return;
    };
    let api = cluster.user("loader", 1).await;
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let (status, body) = common::cluster::try_call(
            &api,
            Method::POST,
            "/v1/topics",
            Some(json!({"name": "moving", "partitions": 2})),
        )
        .await;
        if status == Some(StatusCode::CREATED) {
            break;
        }
        assert!(Instant::now() < deadline, "create topic: {status:?} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for batch in 0..5 {
        publish_retrying(&api, "moving", &kilobyte_values(batch, 100)).await;
    }
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM messages", 500).await,
        500
    );
    let described = cluster
        .describe(&api)
        .await
        .expect("a broker describes the cluster");
    let holder = described["mirror"]["broker"]
        .as_u64()
        .expect("a broker holds the mirror lock") as u32;
    let survivor = 3 - holder;

    cluster.broker(holder).kill();
    let api = api.with_url(&cluster.url(survivor));
    for batch in 5..10 {
        publish_retrying(&api, "moving", &kilobyte_values(batch, 100)).await;
    }
    // The log may hold a retried batch twice; the database must hold what
    // the log holds.
    let topic = api.get_ok("/v1/topics/moving").await;
    let in_log: u64 = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .sum();
    assert!(in_log >= 1000, "{topic}");
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM messages", in_log).await,
        in_log,
        "the surviving broker mirrored everything"
    );
    let described = api.get_ok("/v1/cluster").await;
    assert_eq!(described["mirror"]["broker"], survivor, "{described}");
    assert_eq!(described["mirror"]["active"], true, "{described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_keeps_unicode_long_keys_and_case() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mariadb) = MariaDbProcess::start(&dir.path().join("mariadb")) else {
        return;
    };
    let url = mariadb.url();
    let broker = BrokerProcess::start(&dir.path().join("broker"), &["--mysql-url", &url]);
    let api = Api::user(&broker.url, "alice").await;
    Api::user(&broker.url, "Alice").await;
    api.post_expect("/v1/topics", json!({"name": "orders"}), StatusCode::CREATED)
        .await;
    for (name, pattern) in [("audit", "заказы.#"), ("AUDIT", "🚀.#")] {
        api.post_expect(
            "/v1/topics/orders/subscriptions",
            json!({"name": name, "pattern": pattern, "start": "earliest"}),
            StatusCode::CREATED,
        )
        .await;
    }
    let long_key = "ключ".repeat(2000);
    api.post_expect(
        "/v1/topics/orders/messages",
        json!({"messages": [
            {"key": long_key, "value": "long key", "routing_key": "заказы.eu"},
            {"key": "after", "value": {"текст": "🚀"}, "headers": {"h": "ü"}}
        ]}),
        StatusCode::OK,
    )
    .await;

    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM messages", 2).await,
        2
    );
    let mut conn = connect(&mariadb).await;
    let users: Vec<String> = conn
        .query("SELECT username FROM users ORDER BY username")
        .await
        .unwrap();
    assert_eq!(
        users,
        ["Alice", "alice"],
        "names differing in case are two users"
    );
    let subscriptions: Vec<(String, String)> = conn
        .query("SELECT name, pattern FROM subscriptions ORDER BY name")
        .await
        .unwrap();
    assert_eq!(
        subscriptions,
        [
            ("AUDIT".to_string(), "🚀.#".to_string()),
            ("audit".to_string(), "заказы.#".to_string())
        ]
    );
    let keys: Vec<(Vec<u8>, Option<Vec<u8>>)> = conn
        .query("SELECT message_key, routing_key FROM messages ORDER BY log_offset")
        .await
        .unwrap();
    assert_eq!(keys[0].0, long_key.as_bytes());
    assert_eq!(keys[0].1.as_deref(), Some("заказы.eu".as_bytes()));
    assert_eq!(keys[1].0, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_leaves_foreign_and_owned_databases_alone() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mariadb) = MariaDbProcess::start(&dir.path().join("mariadb")) else {
        return;
    };
    let url = mariadb.url();

    // Tables of the same names that the mirror did not create stay as
    // they are, and a rebuild drops nothing there.
    mariadb.sql("CREATE TABLE ferry.users (name TEXT); INSERT INTO ferry.users VALUES ('theirs');");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["admin", "mirror", "rebuild", "--mysql-url", &url])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "rebuild of a database without a mirror"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nothing was dropped"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let broker = BrokerProcess::start(&dir.path().join("first"), &["--mysql-url", &url]);
    Api::user(&broker.url, "alice").await;
    wait_for_a_session_error(&broker.url, "the mirror never refused the database").await;
    assert_eq!(mariadb.sql("SELECT name FROM ferry.users"), "theirs\n");
    drop(broker);

    // In a database of its own, the first broker owns the mirror and a
    // second, unrelated broker is refused.
    mariadb.sql("DROP TABLE ferry.users;");
    let first = BrokerProcess::start(&dir.path().join("first"), &["--mysql-url", &url]);
    let api = Api::new(&first.url).login("alice", "alice-password").await;
    api.post_expect("/v1/topics", json!({"name": "mine"}), StatusCode::CREATED)
        .await;
    assert_eq!(
        wait_for_count(&mariadb, "SELECT COUNT(*) FROM topics", 1).await,
        1
    );
    let second = BrokerProcess::start(&dir.path().join("second"), &["--mysql-url", &url]);
    Api::user(&second.url, "carol").await;
    wait_for_a_session_error(&second.url, "the second broker was not refused").await;
    assert_eq!(mariadb.sql("SELECT username FROM ferry.users"), "alice\n");
}
