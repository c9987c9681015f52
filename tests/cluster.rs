//! Cluster tests: a real ZooKeeper server and three real broker processes
//! on loopback ports. Brokers are killed with SIGKILL, paused with SIGSTOP
//! and restarted, and every acknowledged message must survive.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::cluster::{log_bytes, read_partition, try_call, try_call_within, TestCluster};
use common::Api;

/// A publisher that sends one numbered message per request, round robin
/// over the brokers, and records which numbers were acknowledged and when.
struct Producer {
    /// Acknowledged numbers with the times their request was sent and
    /// acknowledged.
    acked: Arc<Mutex<Vec<(i64, Instant, Instant)>>>,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Producer {
    /// Starts publishing to `topic`. A failed request is not retried:
    /// the next request carries the next number, so numbers that were not
    /// acknowledged may or may not be stored, each at most once.
    fn start(api: &Api, urls: Arc<Mutex<Vec<String>>>, topic: &str, path_suffix: &str) -> Producer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = tokio::spawn({
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            let api = api.clone();
            let path = format!("/v1/topics/{topic}/messages{path_suffix}");
            async move {
                let mut number = 0i64;
                // Bounded: at most 20000 requests, and the test stops it.
                while !stop.load(Ordering::SeqCst) && number < 20_000 {
                    let url = {
                        let urls = urls.lock().unwrap();
                        urls[number as usize % urls.len()].clone()
                    };
                    let caller = Api { url, ..api.clone() };
                    let body = json!({"messages": [{"value": number}]});
                    let sent_at = Instant::now();
                    // A stopped broker would keep each request for the
                    // whole limit, and a healthy one responds in milliseconds.
                    let (status, _) = try_call_within(
                        &caller,
                        Method::POST,
                        &path,
                        Some(body),
                        Duration::from_secs(2),
                    )
                    .await;
                    if status == Some(StatusCode::OK) {
                        acked
                            .lock()
                            .unwrap()
                            .push((number, sent_at, Instant::now()));
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    number += 1;
                }
            }
        });
        Producer {
            acked,
            stop,
            handle,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Returns the first acknowledgement of a request sent after `since`.
    fn first_ack_after(&self, since: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, sent_at, _)| *sent_at > since)
            .map(|(_, _, acked_at)| *acked_at)
    }

    async fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.unwrap();
        let acked = self.acked.lock().unwrap();
        acked.iter().map(|(number, _, _)| *number).collect()
    }
}

/// Waits until `count` more messages were acknowledged, at most 60 s.
async fn wait_for_acks(producer: &Producer, count: usize) {
    let target = producer.acked_count() + count;
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.acked_count() < target {
        assert!(
            Instant::now() < deadline,
            "the producer got no acknowledgements for 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that the stored numbers are strictly increasing (each stored
/// once, in publish order) and contain every acknowledged number.
fn check_stored(stored: &[(u64, Value)], acked: &[i64]) {
    let numbers: Vec<i64> = stored
        .iter()
        .map(|(_, value)| value.as_i64().unwrap())
        .collect();
    for pair in numbers.windows(2) {
        assert!(
            pair[0] < pair[1],
            "stored out of order or twice: {} then {}",
            pair[0],
            pair[1]
        );
    }
    let missing: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|number| numbers.binary_search(number).is_err())
        .collect();
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
}

/// Compares one topic partition's log bytes on every broker (stopped).
fn check_replicas_equal(cluster: &TestCluster, topic_dir_name: &str, partition: u32) {
    assert_eq!(partition, 0, "only partition 0 is compared");
    let logs: Vec<Vec<u8>> = (1..=cluster.brokers.len() as u32)
        .map(|id| log_bytes(&topic_log_dir(cluster, id, topic_dir_name)))
        .collect();
    for (index, log) in logs.iter().enumerate().skip(1) {
        let first_difference = log.iter().zip(&logs[0]).position(|(a, b)| a != b);
        assert_eq!(
            (log.len(), first_difference),
            (logs[0].len(), None),
            "broker {} log (length, first differing byte) against broker 1",
            index + 1
        );
    }
}

async fn create_topic(api: &Api, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) =
            try_call(api, Method::POST, "/v1/topics", Some(json!({"name": name}))).await;
        match status {
            Some(StatusCode::CREATED) => return,
            Some(StatusCode::CONFLICT) => return,
            _ => assert!(
                Instant::now() < deadline,
                "create topic {name}: {status:?} {body}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_five_times_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = TestCluster::start(dir.path(), 3, &[]).await else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    create_topic(&alice, "events").await;
    let key = cluster.topic_key(&alice, "events").await;
    cluster.wait_for_isr(&alice, &key, 3).await;
    let (status, body) = try_call(
        &alice,
        Method::POST,
        "/v1/topics/events/subscriptions",
        Some(json!({"name": "audit", "start": "earliest"})),
    )
    .await;
    assert_eq!(
        status,
        Some(StatusCode::CREATED),
        "create subscription: {body}"
    );

    let urls = Arc::new(Mutex::new(cluster.urls()));
    let producer = Producer::start(&alice, Arc::clone(&urls), "events", "");
    let mut consumed = Vec::new();
    let mut failover_times = Vec::new();

    for round in 1..=5 {
        wait_for_acks(&producer, 20).await;
        consume_some(&alice, &urls, &mut consumed).await;
        let leader = cluster.leader_of(&alice, &key).await;
        let killed_at = Instant::now();
        cluster.broker(leader).kill();
        let deadline = Instant::now() + Duration::from_secs(60);
        let first_ack = loop {
            if let Some(at) = producer.first_ack_after(killed_at) {
                break at;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no produce succeeded within 60 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let failover = first_ack.duration_since(killed_at);
        println!(
            "round {round}: killed leader broker {leader}, fail-over took {} ms",
            failover.as_millis()
        );
        failover_times.push(failover);

        cluster.broker(leader).restart();
        *urls.lock().unwrap() = cluster.urls();
        cluster.wait_for_isr(&alice, &key, 3).await;
    }
    wait_for_acks(&producer, 20).await;
    let acked = producer.finish().await;
    let total: Duration = failover_times.iter().sum();
    println!(
        "fail-over (kill to first successful produce): mean {} ms, max {} ms over {} kills",
        total.as_millis() / failover_times.len() as u128,
        failover_times.iter().max().unwrap().as_millis(),
        failover_times.len()
    );

    // Restarted brokers listen on new ports.
    let alice = Api {
        url: cluster.url(1),
        ..alice
    };
    cluster.wait_for_isr(&alice, &key, 3).await;
    let stored = read_partition(&alice, "events", 0).await;
    check_stored(&stored, &acked);

    // The subscription resumes from its committed offsets: after draining
    // it, every acknowledged number was consumed.
    let committed_before = committed_offset(&alice).await;
    consume_all(&alice, &urls, &mut consumed).await;
    consumed.sort_unstable();
    consumed.dedup();
    for number in &acked {
        assert!(
            consumed.binary_search(number).is_ok(),
            "acknowledged {number} never consumed"
        );
    }
    let committed_after = committed_offset(&alice).await;
    assert!(
        committed_after >= committed_before,
        "committed offset moved back"
    );
    assert_eq!(
        committed_after,
        stored.len() as u64,
        "the subscription did not reach the end"
    );

    // Wait until every replica has the whole log, then compare bytes.
    let expected_end = stored.len() as u64;
    wait_for_log_end(&cluster, &alice, &key, expected_end).await;
    cluster.stop_brokers();
    check_replicas_equal(&cluster, "events", 0);
}

/// Pulls one batch from subscription `audit` through any broker and
/// commits it.
async fn consume_some(api: &Api, urls: &Arc<Mutex<Vec<String>>>, consumed: &mut Vec<i64>) -> usize {
    let candidates = urls.lock().unwrap().clone();
    for url in candidates {
        let caller = Api { url, ..api.clone() };
        let (status, body) = try_call(
            &caller,
            Method::GET,
            "/v1/topics/events/subscriptions/audit/messages?max_messages=1000",
            None,
        )
        .await;
        if status != Some(StatusCode::OK) {
            continue;
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let mut offsets = std::collections::BTreeMap::new();
        for message in &messages {
            consumed.push(message["value"].as_i64().unwrap());
            offsets.insert(
                message["partition"].as_u64().unwrap(),
                message["offset"].as_u64().unwrap() + 1,
            );
        }
        if !offsets.is_empty() {
            let offsets: Vec<Value> = offsets
                .iter()
                .map(|(partition, offset)| json!({"partition": partition, "offset": offset}))
                .collect();
            let _ = try_call(
                &caller,
                Method::POST,
                "/v1/topics/events/subscriptions/audit/offsets",
                Some(json!({"offsets": offsets})),
            )
            .await;
        }
        return messages.len();
    }
    0
}

async fn consume_all(api: &Api, urls: &Arc<Mutex<Vec<String>>>, consumed: &mut Vec<i64>) {
    let mut empty = 0;
    // Bounded: the topic contains at most 20000 messages.
    for _ in 0..200 {
        if consume_some(api, urls, consumed).await == 0 {
            empty += 1;
            if empty == 3 {
                return;
            }
        } else {
            empty = 0;
        }
    }
}

async fn committed_offset(api: &Api) -> u64 {
    let (status, body) = try_call(api, Method::GET, "/v1/topics/events/subscriptions", None).await;
    assert_eq!(status, Some(StatusCode::OK), "list subscriptions: {body}");
    body["subscriptions"][0]["committed"]["0"]
        .as_u64()
        .or_else(|| body["subscriptions"][0]["committed"][0]["offset"].as_u64())
        .unwrap_or_else(|| panic!("no committed offset in {body}"))
}

/// Waits until the leader reports `end` as the log end offset and high
/// watermark of partition 0, and every broker is in the ISR.
async fn wait_for_log_end(cluster: &TestCluster, api: &Api, key: &str, end: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resource = cluster.wait_for_isr(api, key, cluster.brokers.len()).await;
        let log = &resource["logs"][0];
        if log["high_watermark"] == end && log["log_end_offset"] == end {
            // One more fetch round lets the followers flush what they have.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partition 0 did not settle at {end}: {resource}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `count` messages numbered from `first`, one per request,
/// retrying each until acknowledged (at most 60 s per message).
async fn publish_acked(cluster: &TestCluster, api: &Api, topic: &str, first: i64, count: i64) {
    for number in first..first + count {
        let deadline = Instant::now() + Duration::from_secs(60);
        'retry: loop {
            for url in cluster.urls() {
                let caller = Api { url, ..api.clone() };
                let body = json!({"messages": [{"value": number}]});
                let path = format!("/v1/topics/{topic}/messages");
                if try_call(&caller, Method::POST, &path, Some(body)).await.0
                    == Some(StatusCode::OK)
                {
                    break 'retry;
                }
            }
            assert!(
                Instant::now() < deadline,
                "message {number} was not acknowledged within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_old_leader_truncates_unacknowledged_tail() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = TestCluster::start(dir.path(), 3, &[]).await else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    create_topic(&alice, "trunc").await;
    let key = cluster.topic_key(&alice, "trunc").await;
    cluster.wait_for_isr(&alice, &key, 3).await;
    publish_acked(&cluster, &alice, "trunc", 0, 10).await;

    // With both followers stopped, the leader appends records that it can
    // never acknowledge with acks=all; then it dies. The pause outlasts
    // any fetch the followers had sent, so no follower has the records.
    let old_leader = cluster.leader_of(&alice, &key).await;
    let followers: Vec<u32> = (1..=3).filter(|id| *id != old_leader).collect();
    for id in &followers {
        cluster.broker(*id).pause();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader_api = Api {
        url: cluster.url(old_leader),
        ..alice.clone()
    };
    let pending: Vec<_> = (1000..1003)
        .map(|number| {
            let api = leader_api.clone();
            tokio::spawn(async move {
                let body = json!({"messages": [{"value": number}]});
                try_call(&api, Method::POST, "/v1/topics/trunc/messages", Some(body))
                    .await
                    .0
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.broker(old_leader).kill();
    for id in &followers {
        cluster.broker(*id).resume();
    }
    for request in pending {
        let status = request.await.unwrap();
        assert_ne!(
            status,
            Some(StatusCode::OK),
            "a write was acknowledged without its replicas"
        );
    }
    let old_leader_dir = topic_log_dir(&cluster, old_leader, "trunc");
    let tail_before = log_bytes(&old_leader_dir);

    let alice = Api {
        url: cluster.url(followers[0]),
        ..alice
    };
    publish_acked(&cluster, &alice, "trunc", 2000, 5).await;
    cluster.broker(old_leader).restart();
    cluster.wait_for_isr(&alice, &key, 3).await;

    let stored = read_partition(&alice, "trunc", 0).await;
    let numbers: Vec<i64> = stored
        .iter()
        .map(|(_, value)| value.as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (0..10).chain(2000..2005).collect();
    assert_eq!(
        numbers, expected,
        "the log holds exactly the acknowledged messages"
    );
    wait_for_log_end(&cluster, &alice, &key, expected.len() as u64).await;
    cluster.stop_brokers();
    check_replicas_equal(&cluster, "trunc", 0);
    let after = log_bytes(&old_leader_dir);
    let common = tail_before
        .iter()
        .zip(&after)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        common < tail_before.len(),
        "the old leader's unacknowledged tail was not truncated"
    );
}

/// Returns the log directory of partition 0 of `topic` on broker `id`.
fn topic_log_dir(cluster: &TestCluster, id: u32, topic: &str) -> std::path::PathBuf {
    std::fs::read_dir(cluster.data_dir(id).join("topics"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&format!("{topic}@")))
        })
        .unwrap_or_else(|| panic!("broker {id} has no replica of {topic}"))
        .join("0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_acknowledges_nothing_after_election() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = TestCluster::start(dir.path(), 3, &[]).await else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    create_topic(&alice, "paused").await;
    let key = cluster.topic_key(&alice, "paused").await;
    cluster.wait_for_isr(&alice, &key, 3).await;

    // The producer keeps sending to every broker, the paused one included.
    let urls = Arc::new(Mutex::new(cluster.urls()));
    let producer = Producer::start(&alice, Arc::clone(&urls), "paused", "");
    wait_for_acks(&producer, 20).await;
    let old_leader = cluster.leader_of(&alice, &key).await;
    cluster.broker(old_leader).pause();
    let alice = Api {
        url: cluster.url(if old_leader == 1 { 2 } else { 1 }),
        ..alice
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.leader_of(&alice, &key).await == old_leader {
        assert!(
            Instant::now() < deadline,
            "no new leader within 60 s of the pause"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_acks(&producer, 20).await;
    cluster.broker(old_leader).resume();
    // The old leader comes back believing it leads, finds its session gone
    // and a newer epoch, and must not acknowledge anything meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for_acks(&producer, 20).await;
    let acked = producer.finish().await;

    cluster.wait_for_isr(&alice, &key, 3).await;
    let stored = read_partition(&alice, "paused", 0).await;
    check_stored(&stored, &acked);
    wait_for_log_end(&cluster, &alice, &key, stored.len() as u64).await;
    cluster.stop_brokers();
    check_replicas_equal(&cluster, "paused", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_restart_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = TestCluster::start(dir.path(), 3, &[]).await else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    create_topic(&alice, "zk").await;
    let key = cluster.topic_key(&alice, "zk").await;
    cluster.wait_for_isr(&alice, &key, 3).await;

    let urls = Arc::new(Mutex::new(cluster.urls()));
    let producer = Producer::start(&alice, Arc::clone(&urls), "zk", "");
    wait_for_acks(&producer, 20).await;
    cluster.zookeeper.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.zookeeper.restart();
    wait_for_acks(&producer, 50).await;
    let acked = producer.finish().await;

    cluster.wait_for_isr(&alice, &key, 3).await;
    let stored = read_partition(&alice, "zk", 0).await;
    check_stored(&stored, &acked);
    // Metadata changes work again after the restart.
    create_topic(&alice, "after-restart").await;
}

/// Runs every REST route through broker `via` and returns the responses
/// (status, body) in order, for comparison across brokers.
async fn walk_routes(api: &Api, bob: &Api, suffix: &str) -> Vec<(Option<StatusCode>, Value)> {
    let topic = format!("walk-{suffix}");
    let queue = format!("jobs-{suffix}");
    let mut results = Vec::new();
    let mut step = |result: (Option<StatusCode>, Value)| {
        results.push(result.clone());
        result
    };
    let created = step(
        try_call(
            api,
            Method::POST,
            "/v1/topics",
            Some(json!({"name": topic, "partitions": 2})),
        )
        .await,
    );
    assert_eq!(
        created.0,
        Some(StatusCode::CREATED),
        "create topic: {}",
        created.1
    );
    let listed = step(try_call(api, Method::GET, "/v1/topics", None).await);
    assert!(listed.1["topics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == topic));
    let described = step(try_call(api, Method::GET, &format!("/v1/topics/{topic}"), None).await);
    assert_eq!(
        described.0,
        Some(StatusCode::OK),
        "describe: {}",
        described.1
    );
    let published = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/topics/{topic}/messages"),
            Some(json!({"messages": [{"value": "a", "key": "k"}, {"value": "b", "key": "k"}]})),
        )
        .await,
    );
    assert_eq!(
        published.0,
        Some(StatusCode::OK),
        "publish: {}",
        published.1
    );
    let partition = published.1["offsets"][0]["partition"].as_u64().unwrap();
    let fetched = step(
        try_call(
            api,
            Method::GET,
            &format!("/v1/topics/{topic}/partitions/{partition}/messages?offset=0"),
            None,
        )
        .await,
    );
    assert_eq!(
        fetched.1["messages"].as_array().map(Vec::len),
        Some(2),
        "fetch: {}",
        fetched.1
    );
    let subscribed = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/topics/{topic}/subscriptions"),
            Some(json!({"name": "s", "start": "earliest"})),
        )
        .await,
    );
    assert_eq!(
        subscribed.0,
        Some(StatusCode::CREATED),
        "subscribe: {}",
        subscribed.1
    );
    step(
        try_call(
            api,
            Method::GET,
            &format!("/v1/topics/{topic}/subscriptions"),
            None,
        )
        .await,
    );
    let pulled = step(
        try_call(
            api,
            Method::GET,
            &format!("/v1/topics/{topic}/subscriptions/s/messages"),
            None,
        )
        .await,
    );
    assert_eq!(
        pulled.1["messages"].as_array().map(Vec::len),
        Some(2),
        "pull: {}",
        pulled.1
    );
    let committed = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/topics/{topic}/subscriptions/s/offsets"),
            Some(json!({"offsets": [{"partition": partition, "offset": 2}]})),
        )
        .await,
    );
    assert_eq!(
        committed.0,
        Some(StatusCode::NO_CONTENT),
        "commit: {}",
        committed.1
    );
    let forbidden = step(try_call(bob, Method::DELETE, &format!("/v1/topics/{topic}"), None).await);
    assert_eq!(
        forbidden.0,
        Some(StatusCode::FORBIDDEN),
        "bob deletes: {}",
        forbidden.1
    );
    let granted = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/topics/{topic}/grants"),
            Some(json!({"user": "bob", "permission": "consume"})),
        )
        .await,
    );
    assert_eq!(
        granted.0,
        Some(StatusCode::NO_CONTENT),
        "grant: {}",
        granted.1
    );
    step(
        try_call(
            api,
            Method::DELETE,
            &format!("/v1/topics/{topic}/subscriptions/s"),
            None,
        )
        .await,
    );

    let queue_created = step(
        try_call(
            api,
            Method::POST,
            "/v1/queues",
            Some(json!({"name": queue})),
        )
        .await,
    );
    assert_eq!(
        queue_created.0,
        Some(StatusCode::CREATED),
        "create queue: {}",
        queue_created.1
    );
    step(try_call(api, Method::GET, "/v1/queues", None).await);
    let sent = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/queues/{queue}/messages"),
            Some(json!({"messages": [{"value": 1}, {"value": 2}]})),
        )
        .await,
    );
    assert_eq!(sent.0, Some(StatusCode::OK), "send: {}", sent.1);
    let received = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/queues/{queue}/receive"),
            Some(json!({"max_messages": 2})),
        )
        .await,
    );
    let ids: Vec<Value> = received.1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids.len(), 2, "receive: {}", received.1);
    let acked = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/queues/{queue}/ack"),
            Some(json!({"ids": [ids[0]]})),
        )
        .await,
    );
    assert_eq!(acked.1["acked"], json!([ids[0]]), "ack: {}", acked.1);
    let nacked = step(
        try_call(
            api,
            Method::POST,
            &format!("/v1/queues/{queue}/nack"),
            Some(json!({"ids": [ids[1]]})),
        )
        .await,
    );
    assert_eq!(nacked.1["nacked"], json!([ids[1]]), "nack: {}", nacked.1);
    let queue_described =
        step(try_call(api, Method::GET, &format!("/v1/queues/{queue}"), None).await);
    assert_eq!(
        queue_described.1["depth"], 1,
        "describe queue: {}",
        queue_described.1
    );
    let queue_deleted =
        step(try_call(api, Method::DELETE, &format!("/v1/queues/{queue}"), None).await);
    assert_eq!(
        queue_deleted.0,
        Some(StatusCode::NO_CONTENT),
        "delete queue: {}",
        queue_deleted.1
    );
    let deleted = step(try_call(api, Method::DELETE, &format!("/v1/topics/{topic}"), None).await);
    assert_eq!(
        deleted.0,
        Some(StatusCode::NO_CONTENT),
        "delete topic: {}",
        deleted.1
    );
    let gone = step(try_call(api, Method::GET, &format!("/v1/topics/{topic}"), None).await);
    assert_eq!(
        gone.0,
        Some(StatusCode::NOT_FOUND),
        "describe deleted: {}",
        gone.1
    );
    results
}

/// Blanks the fields that differ between two walks for reasons other
/// than routing: names, times, ids and which broker leads the resource.
fn normalize(value: &Value, suffix: &str) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace(suffix, "X")),
        Value::Array(items) => Value::Array(items.iter().map(|v| normalize(v, suffix)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| {
                    !matches!(
                        key.as_str(),
                        "created_at"
                            | "timestamp"
                            | "id"
                            | "lease_expires_at"
                            | "ids"
                            | "acked"
                            | "nacked"
                            | "leader"
                    )
                })
                .map(|(key, v)| (key.clone(), normalize(v, suffix)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_works_through_a_non_leader() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = TestCluster::start(dir.path(), 3, &["--replication-factor", "1"]).await
    else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    let bob = cluster.user("bob", 2).await;

    // With one replica per resource, each topic and queue lives on one
    // broker: walking through each broker in turn crosses brokers for
    // most routes, and the responses must match the walk on broker 1.
    let mut walks = Vec::new();
    for id in 1..=3u32 {
        let api = Api {
            url: cluster.url(id),
            ..alice.clone()
        };
        let bob = Api {
            url: cluster.url(id),
            ..bob.clone()
        };
        let suffix = format!("b{id}");
        let results = walk_routes(&api, &bob, &suffix).await;
        walks.push((suffix, results));
    }
    let (first_suffix, first) = &walks[0];
    for (suffix, results) in &walks[1..] {
        assert_eq!(results.len(), first.len());
        for (index, (a, b)) in first.iter().zip(results).enumerate() {
            assert_eq!(a.0, b.0, "step {index}: status differs between brokers");
            if index == 1 || index == 13 {
                // The topic and queue lists include the other walks' names.
                continue;
            }
            assert_eq!(
                normalize(&a.1, first_suffix),
                normalize(&b.1, suffix),
                "step {index}: body differs between brokers"
            );
        }
    }

    // Log-out is a metadata change, sent on by a broker that does not lead
    // __meta; the token stops working on every broker.
    let (status, _) = try_call(
        &Api {
            url: cluster.url(3),
            ..alice.clone()
        },
        Method::DELETE,
        "/v1/tokens/current",
        None,
    )
    .await;
    assert_eq!(status, Some(StatusCode::NO_CONTENT));
    for id in 1..=3 {
        let api = Api {
            url: cluster.url(id),
            ..alice.clone()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = try_call(&api, Method::GET, "/v1/topics", None).await;
            if status == Some(StatusCode::UNAUTHORIZED) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {id} still accepts a logged-out token"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_work_through_a_non_leader() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = TestCluster::start(dir.path(), 3, &["--replication-factor", "1"]).await
    else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    let (status, body) = try_call(
        &alice,
        Method::POST,
        "/v1/queues",
        Some(json!({"name": "pushed"})),
    )
    .await;
    assert_eq!(status, Some(StatusCode::CREATED), "create queue: {body}");
    let description = cluster.describe(&alice).await.unwrap();
    let leader = description["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| {
            resource["dir"]
                .as_str()
                .is_some_and(|dir| dir.starts_with("queues/pushed@"))
        })
        .and_then(|resource| resource["leader"].as_u64())
        .expect("the queue has a leader") as u32;
    let other = if leader == 1 { 2 } else { 1 };
    let via = Api {
        url: cluster.url(other),
        ..alice.clone()
    };

    // A stream with a bad token is refused with the leader's 401, before
    // any upgrade.
    let url = format!(
        "{}/v1/queues/pushed/stream",
        via.url.replacen("http", "ws", 1)
    );
    let mut request = url.clone().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer nonsense".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401, "refused with the leader's status");
        }
        other => panic!("a bad token opened a stream: {:?}", other.map(|_| ())),
    }

    let mut request = url.into_client_request().unwrap();
    let header = format!("Bearer {}", alice.token.as_deref().unwrap());
    request
        .headers_mut()
        .insert("authorization", header.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("stream opens through a non-leader");
    socket
        .send(Message::text(
            json!({"type": "credit", "n": 10}).to_string(),
        ))
        .await
        .unwrap();
    let (status, body) = try_call(
        &via,
        Method::POST,
        "/v1/queues/pushed/messages",
        Some(json!({"messages": [{"value": 1}, {"value": 2}, {"value": 3}]})),
    )
    .await;
    assert_eq!(status, Some(StatusCode::OK), "send: {body}");

    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids.len() < 3 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, socket.next())
            .await
            .expect("three messages arrive within 10 s")
            .expect("the stream stays open")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "message" {
                assert_eq!(frame["value"], ids.len() as u64 + 1);
                ids.push(frame["id"].clone());
            }
        }
    }
    socket
        .send(Message::text(
            json!({"type": "ack", "ids": ids}).to_string(),
        ))
        .await
        .unwrap();
    let acked = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an ack answer within 10 s")
            .expect("the stream stays open")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "acked" {
                break frame;
            }
        }
    };
    assert_eq!(acked["acked"].as_array().unwrap().len(), 3);
    let (_, queue) = try_call(&via, Method::GET, "/v1/queues/pushed", None).await;
    assert_eq!(
        queue["depth"], 0,
        "acked through the relayed stream: {queue}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joined_broker_gets_new_and_moved_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--replication-factor", "1", "--min-insync-replicas", "1"];
    let Some(mut cluster) = TestCluster::start(dir.path(), 2, &args).await else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    create_topic(&alice, "old").await;
    let old_key = cluster.topic_key(&alice, "old").await;
    publish_acked(&cluster, &alice, "old", 0, 20).await;
    let old_leader = cluster.leader_of(&alice, &old_key).await;
    // Created with two live brokers, so it starts with two replicas.
    let (status, body) = try_call(
        &alice,
        Method::POST,
        "/v1/topics",
        Some(json!({"name": "grow", "replication_factor": 3})),
    )
    .await;
    assert_eq!(status, Some(StatusCode::CREATED), "create grow: {body}");
    let grow_key = cluster.topic_key(&alice, "grow").await;
    let grow = cluster.wait_for_isr(&alice, &grow_key, 2).await;
    assert_eq!(grow["replicas"].as_array().unwrap().len(), 2);

    let joined = cluster.add_broker(&args);
    cluster.wait_for_isr(&alice, "meta", 3).await;
    // The joined broker tops the topic up to its replication factor.
    cluster.wait_for_isr(&alice, &grow_key, 3).await;

    // New resources are spread over the live brokers, the new one included.
    let mut leaders = Vec::new();
    for index in 0..3 {
        let name = format!("new-{index}");
        create_topic(&alice, &name).await;
        let key = cluster.topic_key(&alice, &name).await;
        leaders.push(cluster.leader_of(&alice, &key).await);
    }
    assert!(
        leaders.contains(&joined),
        "no new topic went to broker {joined}: leaders {leaders:?}"
    );

    // Moving the old topic to the new broker switches once it caught up.
    let (status, body) = try_call(
        &alice,
        Method::POST,
        "/v1/cluster/reassign",
        Some(json!({"topic": "old", "replicas": [joined]})),
    )
    .await;
    assert_eq!(status, Some(StatusCode::ACCEPTED), "reassign: {body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let description = cluster.describe(&alice).await.unwrap();
        let resource = common::cluster::find_resource(&description, &old_key)
            .unwrap()
            .clone();
        if resource["replicas"] == json!([joined]) && resource["leader"] == joined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the move did not finish within 60 s: {resource}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = read_partition(&alice, "old", 0).await;
    let numbers: Vec<i64> = stored
        .iter()
        .map(|(_, value)| value.as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (0..20).collect::<Vec<i64>>(),
        "the moved topic kept every message"
    );
    publish_acked(&cluster, &alice, "old", 20, 5).await;

    // The old replica's files go once it is no longer a replica.
    let deadline = Instant::now() + Duration::from_secs(30);
    let old_dir = cluster.data_dir(old_leader).join("topics");
    while std::fs::read_dir(&old_dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("old@"))
        })
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "broker {old_leader} kept the moved replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The first broker of the list becomes the leader.
    let (status, body) = try_call(
        &alice,
        Method::POST,
        "/v1/cluster/reassign",
        Some(json!({"topic": "old", "replicas": [1, joined]})),
    )
    .await;
    assert_eq!(
        status,
        Some(StatusCode::ACCEPTED),
        "second reassign: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let description = cluster.describe(&alice).await.unwrap();
        let resource = common::cluster::find_resource(&description, &old_key)
            .unwrap()
            .clone();
        if resource["target_replicas"].is_null() && resource["replicas"] == json!([1, joined]) {
            assert_eq!(
                resource["leader"], 1,
                "the preferred leader leads: {resource}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second move did not finish within 60 s: {resource}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bad requests get clear errors.
    let (status, _) = try_call(
        &alice,
        Method::POST,
        "/v1/cluster/reassign",
        Some(json!({"topic": "old", "replicas": [99]})),
    )
    .await;
    assert_eq!(
        status,
        Some(StatusCode::BAD_REQUEST),
        "a broker that does not exist"
    );
    let bob = cluster.user("bob", 1).await;
    let (status, _) = try_call(
        &bob,
        Method::POST,
        "/v1/cluster/reassign",
        Some(json!({"topic": "old", "replicas": [1]})),
    )
    .await;
    assert_eq!(
        status,
        Some(StatusCode::FORBIDDEN),
        "only the owner moves replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_secret_broker_fails_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = TestCluster::start(dir.path(), 1, &[]).await else {
        return;
    };

    let secret = dir.path().join("other-secret");
    std::fs::write(&secret, "another-secret-0123456789abcdef").unwrap();
    let output = tokio::task::spawn_blocking({
        let zookeeper = cluster.zookeeper.connect_string();
        let data_dir = dir.path().join("intruder");
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .arg("serve")
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
                .args(["--zookeeper", &zookeeper, "--broker-id", "9"])
                .arg("--cluster-secret-file")
                .arg(&secret)
                .env("FERRY_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a broker with another secret started"
    );
    assert!(
        stderr.contains("differs from the secret of the cluster"),
        "unclear error: {stderr}"
    );

    let api = cluster.user("alice", 1).await;
    let description = cluster.describe(&api).await.unwrap();
    let brokers: Vec<u64> = description["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|broker| broker["id"].as_u64().unwrap())
        .collect();
    assert_eq!(brokers, vec![1], "the other broker never registered");
}
