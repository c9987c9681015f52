//! Crash safety: a producer and consumers run against a broker with
//! `--fsync always` while the test SIGKILLs and restarts it at random
//! moments. Afterwards every acknowledged message is present exactly once
//! and in order per partition, committed subscription offsets are kept,
//! and acked queue messages stay acked while unacked ones come back.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Api, BrokerProcess};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KILLS: usize = 12;
const PARTITIONS: u64 = 3;

/// What the broker acknowledged while it was being killed.
#[derive(Default)]
struct Acknowledged {
    /// (partition, offset) -> sequence number of each acknowledged publish.
    published: BTreeMap<(u64, u64), u64>,
    /// Every sequence number a publish was attempted for.
    attempted: HashSet<u64>,
    /// Last acknowledged commit per partition.
    committed: HashMap<u64, u64>,
    /// Queue sends acknowledged.
    queue_sent: HashSet<u64>,
    /// Queue sends attempted.
    queue_attempted: HashSet<u64>,
    /// Queue messages whose ack was acknowledged.
    queue_acked: HashSet<u64>,
    /// Queue messages with an ack in flight when the broker died.
    queue_ack_unknown: HashSet<u64>,
}

/// A small xorshift generator; the seed is printed so a failure can be
/// reproduced with `FERRY_CRASH_SEED`.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let seed = std::env::var("FERRY_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed}");
    let mut random = Random(seed);

    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(
        dir.path(),
        &["--fsync", "always", "--segment-bytes", "65536"],
    );
    let setup = Api::user(&broker.url, "crasher").await;
    setup
        .post_expect(
            "/v1/topics",
            json!({"name": "events", "partitions": PARTITIONS}),
            StatusCode::CREATED,
        )
        .await;
    setup
        .post_expect(
            "/v1/topics/events/subscriptions",
            json!({"name": "sub", "start": "earliest"}),
            StatusCode::CREATED,
        )
        .await;
    setup
        .post_expect(
            "/v1/queues",
            json!({"name": "jobs", "visibility_timeout_ms": 2000}),
            StatusCode::CREATED,
        )
        .await;
    let token = setup.token.clone();

    let url = Arc::new(Mutex::new(broker.url.clone()));
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = tokio::spawn(run_clients(
        Arc::clone(&url),
        token.clone(),
        Arc::clone(&acknowledged),
        Arc::clone(&stop),
        random.below(u64::MAX),
    ));

    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(150 + random.below(500))).await;
        broker.kill();
        eprintln!("kill {}: broker SIGKILLed", kill + 1);
        broker.restart();
        *url.lock().unwrap() = broker.url.clone();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap();
    broker.kill();
    broker.restart();

    let api = Api {
        token,
        ..Api::new(&broker.url)
    };
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    eprintln!(
        "acknowledged: {} publishes, {} queue sends, {} queue acks",
        acknowledged.published.len(),
        acknowledged.queue_sent.len(),
        acknowledged.queue_acked.len()
    );
    assert!(
        acknowledged.published.len() > 100,
        "the producer made too little progress to test anything"
    );
    check_topic(&api, &acknowledged).await;
    check_commits(&api, &acknowledged).await;
    check_queue(&api, &acknowledged).await;
}

async fn run_clients(
    url: Arc<Mutex<String>>,
    token: Option<String>,
    acknowledged: Arc<Mutex<Acknowledged>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut random = Random(seed | 1);
    let mut sequence = 0u64;
    let mut queue_sequence = 1_000_000_000u64;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let api = Api {
            http: http.clone(),
            url: url.lock().unwrap().clone(),
            token: token.clone(),
        };

        // Publish a batch of 1 to 20 numbered messages.
        let count = 1 + random.below(20);
        let sequences: Vec<u64> = (sequence..sequence + count).collect();
        sequence += count;
        acknowledged.lock().unwrap().attempted.extend(&sequences);
        let messages: Vec<Value> = sequences
            .iter()
            .map(|s| json!({"value": {"seq": s}, "key": format!("k{}", s % 7)}))
            .collect();
        if let Some(body) = try_call(
            &api,
            Method::POST,
            "/v1/topics/events/messages",
            json!({ "messages": messages }),
        )
        .await
        {
            let mut acknowledged = acknowledged.lock().unwrap();
            for (entry, seq) in body["offsets"].as_array().unwrap().iter().zip(&sequences) {
                let key = (
                    entry["partition"].as_u64().unwrap(),
                    entry["offset"].as_u64().unwrap(),
                );
                assert!(
                    acknowledged.published.insert(key, *seq).is_none(),
                    "offset {key:?} acknowledged twice"
                );
            }
        }

        // Send to the queue.
        let queue_values: Vec<u64> = (queue_sequence..queue_sequence + 3).collect();
        queue_sequence += 3;
        acknowledged
            .lock()
            .unwrap()
            .queue_attempted
            .extend(&queue_values);
        let messages: Vec<Value> = queue_values.iter().map(|v| json!({ "value": v })).collect();
        if try_call(
            &api,
            Method::POST,
            "/v1/queues/jobs/messages",
            json!({ "messages": messages }),
        )
        .await
        .is_some()
        {
            acknowledged
                .lock()
                .unwrap()
                .queue_sent
                .extend(&queue_values);
        }

        // Every other round: receive and ack from the queue.
        if round.is_multiple_of(2) {
            if let Some(body) = try_call(
                &api,
                Method::POST,
                "/v1/queues/jobs/receive",
                json!({"max_messages": 4}),
            )
            .await
            {
                let messages = body["messages"].as_array().unwrap().clone();
                let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
                let values: HashMap<String, u64> = messages
                    .iter()
                    .map(|m| {
                        (
                            m["id"].as_str().unwrap().to_string(),
                            m["value"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                if !ids.is_empty() {
                    acknowledged
                        .lock()
                        .unwrap()
                        .queue_ack_unknown
                        .extend(values.values());
                    if let Some(body) = try_call(
                        &api,
                        Method::POST,
                        "/v1/queues/jobs/ack",
                        json!({ "ids": ids }),
                    )
                    .await
                    {
                        let mut acknowledged = acknowledged.lock().unwrap();
                        for id in body["acked"].as_array().unwrap() {
                            let value = values[id.as_str().unwrap()];
                            acknowledged.queue_acked.insert(value);
                            acknowledged.queue_ack_unknown.remove(&value);
                        }
                    }
                }
            }
        }

        // Every third round: pull from the subscription and commit.
        if round.is_multiple_of(3) {
            let path = "/v1/topics/events/subscriptions/sub/messages?max_messages=50";
            if let Some(body) = try_call(&api, Method::GET, path, Value::Null).await {
                let mut next: HashMap<u64, u64> = HashMap::new();
                for message in body["messages"].as_array().unwrap() {
                    let partition = message["partition"].as_u64().unwrap();
                    let offset = message["offset"].as_u64().unwrap() + 1;
                    let entry = next.entry(partition).or_insert(offset);
                    *entry = (*entry).max(offset);
                }
                if !next.is_empty() {
                    let offsets: Vec<Value> = next
                        .iter()
                        .map(|(p, o)| json!({"partition": p, "offset": o}))
                        .collect();
                    let path = "/v1/topics/events/subscriptions/sub/offsets";
                    if try_call(&api, Method::POST, path, json!({ "offsets": offsets }))
                        .await
                        .is_some()
                    {
                        let mut acknowledged = acknowledged.lock().unwrap();
                        for (partition, offset) in next {
                            let entry = acknowledged.committed.entry(partition).or_insert(0);
                            *entry = (*entry).max(offset);
                        }
                    }
                }
            }
        }
    }
}

/// The response body of a successful call, or `None` when the broker was
/// unreachable or died during the call (the outcome is then unknown).
async fn try_call(api: &Api, method: Method, path: &str, body: Value) -> Option<Value> {
    let mut request = api.http.request(method, format!("{}{path}", api.url));
    if let Some(token) = &api.token {
        request = request.bearer_auth(token);
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return None;
        }
    };
    let status = response.status();
    let text = response.bytes().await.ok()?;
    assert!(
        status.is_success(),
        "{path} failed with {status}: {}",
        String::from_utf8_lossy(&text)
    );
    if text.is_empty() {
        return Some(Value::Null);
    }
    serde_json::from_slice(&text).ok()
}

async fn check_topic(api: &Api, acknowledged: &Acknowledged) {
    let mut seen_sequences = HashSet::new();
    for partition in 0..PARTITIONS {
        let mut offset = 0;
        let mut last_sequence = None;
        loop {
            let body = api
                .get_ok(&format!("/v1/topics/events/partitions/{partition}/messages?offset={offset}&max_messages=1000"))
                .await;
            for message in body["messages"].as_array().unwrap() {
                let at = message["offset"].as_u64().unwrap();
                let sequence = message["value"]["seq"].as_u64().unwrap();
                assert!(
                    acknowledged.attempted.contains(&sequence),
                    "message {sequence} was never sent"
                );
                assert!(
                    seen_sequences.insert(sequence),
                    "message {sequence} stored twice"
                );
                if let Some(expected) = acknowledged.published.get(&(partition, at)) {
                    assert_eq!(
                        sequence, *expected,
                        "acknowledged offset {partition}/{at} holds another message"
                    );
                }
                if let Some(last) = last_sequence {
                    assert!(
                        sequence > last,
                        "partition {partition} out of order at offset {at}"
                    );
                }
                last_sequence = Some(sequence);
            }
            offset = body["next_offset"].as_u64().unwrap();
            if offset >= body["high_watermark"].as_u64().unwrap() {
                break;
            }
        }
    }
    let missing: Vec<_> = acknowledged
        .published
        .iter()
        .filter(|(_, sequence)| !seen_sequences.contains(sequence))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages lost: {missing:?}"
    );
}

async fn check_commits(api: &Api, acknowledged: &Acknowledged) {
    let listed = api.get_ok("/v1/topics/events/subscriptions").await;
    let committed = listed["subscriptions"][0]["committed"]
        .as_array()
        .unwrap()
        .clone();
    for (partition, offset) in &acknowledged.committed {
        let stored = committed
            .iter()
            .find(|entry| entry["partition"] == *partition)
            .and_then(|entry| entry["offset"].as_u64())
            .unwrap();
        assert!(
            stored >= *offset,
            "partition {partition}: committed {offset}, broker has {stored}"
        );
    }
}

async fn check_queue(api: &Api, acknowledged: &Acknowledged) {
    // Leases taken before the last kill end within the queue's 2 s
    // visibility timeout; receive until nothing is left or in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut received = HashSet::new();
    let mut empty = 0;
    while empty < 2 && Instant::now() < deadline {
        let body = api
            .post_expect(
                "/v1/queues/jobs/receive",
                json!({"max_messages": 100, "wait_ms": 500, "visibility_timeout_ms": 60000}),
                StatusCode::OK,
            )
            .await;
        let messages = body["messages"].as_array().unwrap();
        if messages.is_empty() {
            if api.get_ok("/v1/queues/jobs").await["in_flight"] == 0 {
                empty += 1;
            }
            continue;
        }
        empty = 0;
        let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        for message in messages {
            let value = message["value"].as_u64().unwrap();
            assert!(
                acknowledged.queue_attempted.contains(&value),
                "queue message {value} was never sent"
            );
            assert!(
                !acknowledged.queue_acked.contains(&value),
                "acked queue message {value} came back"
            );
            assert!(
                received.insert(value),
                "queue message {value} delivered twice in the drain"
            );
        }
        api.post_expect("/v1/queues/jobs/ack", json!({ "ids": ids }), StatusCode::OK)
            .await;
    }
    let lost: Vec<_> = acknowledged
        .queue_sent
        .iter()
        .filter(|value| {
            !acknowledged.queue_acked.contains(value)
                && !acknowledged.queue_ack_unknown.contains(value)
                && !received.contains(value)
        })
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged queue messages lost: {lost:?}"
    );
}
