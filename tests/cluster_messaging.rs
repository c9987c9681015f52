//! The messaging model in a three-broker cluster: bindings and dead
//! letters that cross brokers, and an idempotent producer that retries
//! through another broker after its topic's leader was killed.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{try_call, TestCluster};
use common::{read_events, Api};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Sends until a broker responds with a status other than 503.
async fn call_until_served(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, reply) = try_call(api, Method::POST, path, Some(body.clone())).await;
        match status {
            Some(status) if status != StatusCode::SERVICE_UNAVAILABLE => return (status, reply),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{path}: {status:?} {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create(api: &Api, path: &str, body: Value) {
    let (status, reply) = call_until_served(api, path, body).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {reply}");
}

/// Receives and acks from `queue` until nothing arrives for a second;
/// returns the values in delivery order.
async fn drain(api: &Api, queue: &str, limit: Duration) -> Vec<Value> {
    let started = Instant::now();
    let mut values = Vec::new();
    let mut quiet_since = Instant::now();
    while started.elapsed() < limit && quiet_since.elapsed() < Duration::from_secs(2) {
        let (status, reply) = call_until_served(
            api,
            &format!("/v1/queues/{queue}/receive"),
            json!({"max_messages": 100, "wait_ms": 500}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let messages = reply["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            continue;
        }
        quiet_since = Instant::now();
        let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        let (status, reply) = call_until_served(
            api,
            &format!("/v1/queues/{queue}/ack"),
            json!({ "ids": ids }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        values.extend(messages.iter().map(|m| m["value"].clone()));
    }
    values
}

fn batch(first: u64, count: u64) -> Value {
    json!({
        "producer_id": "checkout-1",
        "messages": (first..first + count)
            .map(|n| json!({"value": n, "sequence": n, "routing_key": "orders.created"}))
            .collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn routing_dead_letters_and_retries_cross_brokers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = TestCluster::start(dir.path(), 3, &[]).await else {
        return;
    };
    let alice = cluster.user("alice", 1).await;
    create(&alice, "/v1/queues", json!({"name": "dead"})).await;
    create(
        &alice,
        "/v1/queues",
        json!({"name": "work", "dead_letter_queue": "dead"}),
    )
    .await;
    create(&alice, "/v1/topics", json!({"name": "orders"})).await;
    create(&alice, "/v1/queues", json!({"name": "created"})).await;
    create(
        &alice,
        "/v1/topics/orders/subscriptions",
        json!({"name": "watch", "start": "earliest"}),
    )
    .await;
    let topic_key = cluster.topic_key(&alice, "orders").await;
    let topic_leader = cluster.leader_of(&alice, &topic_key).await;
    let description = cluster.describe(&alice).await.unwrap();
    let queue_leader = |name: &str| {
        let dir_part = format!("/{name}@");
        description["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dir"].as_str().is_some_and(|d| d.contains(&dir_part)))
            .and_then(|r| r["leader"].as_u64())
            .unwrap() as u32
    };
    // Resources created one after another get different leaders, so
    // routing and dead-lettering go over the cluster RPC.
    assert_ne!(topic_leader, queue_leader("created"), "{description}");
    assert_ne!(queue_leader("work"), queue_leader("dead"), "{description}");

    create(
        &alice,
        "/v1/queues/created/bindings",
        json!({"topic": "orders", "pattern": "*.created"}),
    )
    .await;
    let publish = "/v1/topics/orders/messages";
    let (status, first) = call_until_served(&alice, publish, batch(0, 10)).await;
    assert_eq!(status, StatusCode::OK, "{first}");

    // The topic's leader dies; the producer retries through another broker.
    cluster.broker(topic_leader).kill();
    let survivor = (1..=3).find(|id| *id != topic_leader).unwrap();
    let api = Api {
        url: cluster.url(survivor),
        ..alice.clone()
    };
    let (status, retry) = call_until_served(&api, publish, batch(0, 10)).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["offsets"], first["offsets"]);
    let (status, next) = call_until_served(&api, publish, batch(10, 10)).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert!(next.get("duplicate").is_none(), "{next}");

    // Every message reached the bound queue exactly once.
    let mut routed: Vec<u64> = drain(&api, "created", Duration::from_secs(60))
        .await
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    routed.sort_unstable();
    assert_eq!(routed, (0..20).collect::<Vec<_>>());

    // A rejected message crosses to the dead-letter queue's leader.
    let (status, _) = call_until_served(
        &api,
        "/v1/queues/work/messages",
        json!({"messages": [{"value": "reject me"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, received) = call_until_served(
        &api,
        "/v1/queues/work/receive",
        json!({"max_messages": 1, "wait_ms": 5000}),
    )
    .await;
    let id = received["messages"][0]["id"].clone();
    let (status, reply) = call_until_served(
        &api,
        "/v1/queues/work/nack",
        json!({"ids": [id], "requeue": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, dead) = call_until_served(
        &api,
        "/v1/queues/dead/receive",
        json!({"max_messages": 10, "wait_ms": 10000}),
    )
    .await;
    let dead = dead["messages"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["value"], "reject me");
    assert_eq!(dead[0]["headers"]["ferry-dead-letter-reason"], "rejected");

    // The event stream works on a broker that does not lead the topic.
    let leader = cluster.leader_of(&api, &topic_key).await;
    let other = (1..=3)
        .find(|id| *id != leader && *id != topic_leader)
        .unwrap();
    let mut events = api
        .http
        .get(format!(
            "{}/v1/topics/orders/subscriptions/watch/events?max_messages=5",
            cluster.url(other)
        ))
        .bearer_auth(api.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let received = read_events(&mut events, 20, Duration::from_secs(30)).await;
    let values: Vec<u64> = received
        .iter()
        .map(|(_, _, data)| {
            serde_json::from_str::<Value>(data).unwrap()["value"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(values, (0..20).collect::<Vec<_>>());
}
