//! Cluster tests: a real ZooKeeper server and three real broker processes
//! on loopback ports. Brokers are killed with SIGKILL, paused with SIGSTOP
//! and restarted, and every acknowledged message must survive.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::cluster::{log_bytes, read_partition, try_call, TestCluster};
use common::Api;

/// A publisher that sends one numbered message per request, round robin
/// over the brokers, and records which numbers were acknowledged and when.
struct Producer {
    /// Acknowledged numbers with the times their request was sent and
    /// answered.
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
                    let (status, _) = try_call(&caller, Method::POST, &path, Some(body)).await;
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

    /// The first acknowledgement of a request sent after `since`.
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
    let logs: Vec<Vec<u8>> = (1..=cluster.brokers.len() as u32)
        .map(|id| {
            let topics = cluster.data_dir(id).join("topics");
            let dir = std::fs::read_dir(&topics)
                .unwrap()
                .flatten()
                .map(|entry| entry.path())
                .find(|path| {
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{topic_dir_name}@")))
                })
                .unwrap_or_else(|| panic!("broker {id} has no replica of {topic_dir_name}"));
            log_bytes(&dir.join(partition.to_string()))
        })
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
    // Bounded: the topic holds at most 20000 messages.
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
