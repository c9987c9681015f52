//! The messaging model on a real broker: bindings with routing-key
//! patterns, subscription filters, time to live, dead letters, and
//! idempotent producers, including across SIGKILL and restart.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, read_events, Api, BrokerProcess};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn post(api: &Api, path: &str, body: Value) -> (StatusCode, Value) {
    api.call(Method::POST, path, Some(body)).await
}

async fn create(api: &Api, path: &str, body: Value) {
    let (status, reply) = post(api, path, body).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {reply}");
}

async fn publish(api: &Api, topic: &str, messages: Value) -> Value {
    let path = format!("/v1/topics/{topic}/messages");
    let (status, reply) = post(api, &path, json!({ "messages": messages })).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply
}

/// Receives from `queue` until `count` messages arrived or `limit` passed,
/// acking each; returns their values.
async fn drain(api: &Api, queue: &str, count: usize, limit: Duration) -> Vec<Value> {
    let started = Instant::now();
    let mut values = Vec::new();
    while values.len() < count && started.elapsed() < limit {
        let (status, reply) = post(
            api,
            &format!("/v1/queues/{queue}/receive"),
            json!({"max_messages": 100, "wait_ms": 200}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let messages = reply["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            continue;
        }
        let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        let (status, reply) = post(
            api,
            &format!("/v1/queues/{queue}/ack"),
            json!({ "ids": ids }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        values.extend(messages.into_iter().map(|m| m["value"].clone()));
    }
    values
}

/// What a receive right now returns, without acking.
async fn receive(api: &Api, queue: &str, wait_ms: u64) -> Vec<Value> {
    let (status, reply) = post(
        api,
        &format!("/v1/queues/{queue}/receive"),
        json!({"max_messages": 100, "wait_ms": wait_ms}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["messages"].as_array().unwrap().clone()
}

/// Starts a broker with `args` on a new data directory and registers a
/// user of it.
async fn broker_and_user(args: &[&str]) -> (tempfile::TempDir, BrokerProcess, Api) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), args);
    let api = Api::user(&broker.url, "alice").await;
    (dir, broker, api)
}

fn values(messages: &[Value]) -> Vec<Value> {
    messages.iter().map(|m| m["value"].clone()).collect()
}

#[tokio::test]
async fn bindings_route_by_pattern_once_each() {
    let (_dir, _broker, api) = broker_and_user(&[]).await;
    create(
        &api,
        "/v1/topics",
        json!({"name": "orders", "partitions": 3}),
    )
    .await;
    for queue in ["eu", "created", "everything", "exact"] {
        create(&api, "/v1/queues", json!({ "name": queue })).await;
    }
    // Published before any binding: never routed.
    publish(
        &api,
        "orders",
        json!([{"value": "old", "routing_key": "orders.eu.created"}]),
    )
    .await;

    let bind = |queue: &'static str, pattern: &'static str| {
        let api = api.clone();
        async move {
            let (status, reply) = post(
                &api,
                &format!("/v1/queues/{queue}/bindings"),
                json!({"topic": "orders", "pattern": pattern}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{reply}");
            assert_eq!(reply["pattern"], pattern);
            reply["id"].as_u64().unwrap()
        }
    };
    bind("eu", "orders.eu.#").await;
    bind("created", "orders.*.created").await;
    bind("everything", "#").await;
    bind("exact", "orders.us.created").await;
    // Two patterns of one queue that both match route a message once.
    bind("eu", "#.created").await;

    let messages: Vec<Value> = [
        ("orders.eu.created", 1),
        ("orders.us.created", 2),
        ("orders.eu", 3),
        ("orders.eu.paid.late", 4),
        ("", 5),
        ("orders..created", 6),
    ]
    .iter()
    .map(|(key, value)| json!({"value": value, "routing_key": key, "key": format!("k{value}")}))
    .chain([json!({"value": 7})])
    .collect();
    publish(&api, "orders", Value::Array(messages)).await;

    let limit = Duration::from_secs(10);
    let mut eu = drain(&api, "eu", 4, limit).await;
    eu.sort_by_key(|v| v.as_i64());
    // `#.created` adds 2 and 6 to the `orders.eu.#` matches 1, 3 and 4.
    assert_eq!(eu, vec![json!(1), json!(2), json!(3), json!(4), json!(6)]);
    let mut created = drain(&api, "created", 3, limit).await;
    created.sort_by_key(|v| v.as_i64());
    // `*` matches the empty middle word of `orders..created`.
    assert_eq!(created, vec![json!(1), json!(2), json!(6)]);
    let mut everything = drain(&api, "everything", 7, limit).await;
    everything.sort_by_key(|v| v.as_i64());
    assert_eq!(everything, (1..=7).map(|v| json!(v)).collect::<Vec<_>>());
    assert_eq!(drain(&api, "exact", 1, limit).await, vec![json!(2)]);
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for queue in ["eu", "created", "everything", "exact"] {
        assert!(receive(&api, queue, 0).await.is_empty(), "{queue}");
    }
}

#[tokio::test]
async fn binding_requests_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let alice = Api::user(&broker.url, "alice").await;
    let bob = Api::user(&broker.url, "bob").await;
    create(&alice, "/v1/topics", json!({"name": "t"})).await;
    create(&alice, "/v1/queues", json!({"name": "q"})).await;
    create(
        &alice,
        "/v1/topics",
        json!({"name": "secret", "access": "private"}),
    )
    .await;

    let path = "/v1/queues/q/bindings";
    for (body, field) in [
        (json!({"topic": "t", "pattern": "a.b*"}), "pattern"),
        (json!({"topic": "t", "pattern": "x".repeat(256)}), "pattern"),
        (json!({"topic": "missing", "pattern": "#"}), "topic"),
        (json!({"topic": "secret", "pattern": "#"}), "topic"),
    ] {
        let (status, reply) = post(&bob, path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(field),
            "{reply}"
        );
    }
    let result = post(&alice, path, json!({"topic": "t"})).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
    let result = post(
        &alice,
        "/v1/queues/none/bindings",
        json!({"topic": "t", "pattern": "#"}),
    )
    .await;
    assert_error(&result, StatusCode::NOT_FOUND, "not_found");

    create(&bob, path, json!({"topic": "t", "pattern": "a.*"})).await;
    let result = post(&alice, path, json!({"topic": "t", "pattern": "a.*"})).await;
    assert_error(&result, StatusCode::CONFLICT, "already_exists");
    let list = alice.get_ok(path).await;
    let bindings = list["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["owner"], "bob");
    let id = bindings[0]["id"].as_u64().unwrap();

    // Only the binding's creator or the queue's owner removes it.
    let carol = Api::user(&broker.url, "carol").await;
    let result = carol
        .call(Method::DELETE, &format!("{path}/{id}"), None)
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "forbidden");
    let result = alice.call(Method::DELETE, &format!("{path}/x"), None).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
    let (status, _) = alice
        .call(Method::DELETE, &format!("{path}/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let result = alice
        .call(Method::DELETE, &format!("{path}/{id}"), None)
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "not_found");

    // A removed binding routes nothing more.
    publish(&alice, "t", json!([{"value": 1, "routing_key": "a.b"}])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receive(&alice, "q", 0).await.is_empty());
}

#[tokio::test]
async fn routing_survives_sigkill_without_loss_or_duplicates() {
    let (_dir, mut broker, api) = broker_and_user(&["--fsync", "always"]).await;
    create(
        &api,
        "/v1/topics",
        json!({"name": "events", "partitions": 2}),
    )
    .await;
    create(&api, "/v1/queues", json!({"name": "odd"})).await;
    let (status, reply) = post(
        &api,
        "/v1/queues/odd/bindings",
        json!({"topic": "events", "pattern": "odd.#"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");

    let mut acknowledged = Vec::new();
    for round in 0..4 {
        for batch in 0..10 {
            let messages: Vec<Value> = (0..10)
                .map(|i| {
                    let n = round * 100 + batch * 10 + i;
                    let key = if n % 2 == 1 { "odd.n" } else { "even.n" };
                    json!({"value": n, "routing_key": key})
                })
                .collect();
            let api = Api {
                url: broker.url.clone(),
                ..api.clone()
            };
            publish(&api, "events", Value::Array(messages)).await;
            acknowledged.extend((0..10).map(|i| round * 100 + batch * 10 + i));
        }
        // Kill while the router is most likely at work.
        broker.restart();
    }
    let api = Api {
        url: broker.url.clone(),
        ..api.clone()
    };
    let expected: Vec<i64> = acknowledged
        .iter()
        .filter(|n| *n % 2 == 1)
        .map(|n| *n as i64)
        .collect();
    let mut routed: Vec<i64> = drain(&api, "odd", expected.len(), Duration::from_secs(20))
        .await
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    routed.extend(
        values(&receive(&api, "odd", 0).await)
            .iter()
            .map(|v| v.as_i64().unwrap()),
    );
    routed.sort();
    assert_eq!(routed, expected, "every odd message routed exactly once");
}

#[tokio::test]
async fn subscription_filter_delivers_matching_keys() {
    let (_dir, _broker, api) = broker_and_user(&[]).await;
    create(&api, "/v1/topics", json!({"name": "logs", "partitions": 2})).await;
    create(
        &api,
        "/v1/topics/logs/subscriptions",
        json!({"name": "errors", "pattern": "*.error"}),
    )
    .await;
    let result = post(
        &api,
        "/v1/topics/logs/subscriptions",
        json!({"name": "bad", "pattern": "a#"}),
    )
    .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
    publish(
        &api,
        "logs",
        json!([
            {"value": 1, "routing_key": "db.error"},
            {"value": 2, "routing_key": "db.info"},
            {"value": 3},
            {"value": 4, "routing_key": "web.error", "key": "x"},
            {"value": 5, "routing_key": "web.error.late"},
        ]),
    )
    .await;
    let reply = api
        .get_ok("/v1/topics/logs/subscriptions/errors/messages?max_messages=100&wait_ms=0")
        .await;
    let mut got = values(reply["messages"].as_array().unwrap());
    got.sort_by_key(|v| v.as_i64());
    assert_eq!(got, vec![json!(1), json!(4)]);
}

#[tokio::test]
async fn expired_messages_are_never_delivered() {
    let (_dir, _broker, api) = broker_and_user(&[]).await;
    create(
        &api,
        "/v1/topics",
        json!({"name": "t", "message_ttl_ms": 300}),
    )
    .await;
    create(
        &api,
        "/v1/topics/t/subscriptions",
        json!({"name": "s", "start": "earliest"}),
    )
    .await;
    create(&api, "/v1/queues", json!({"name": "dead"})).await;
    create(
        &api,
        "/v1/queues",
        json!({"name": "q", "message_ttl_ms": 300, "dead_letter_queue": "dead"}),
    )
    .await;
    let result = post(
        &api,
        "/v1/queues",
        json!({"name": "z", "message_ttl_ms": 0}),
    )
    .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
    for ttl_ms in [json!(0), json!(9223372036854775808u64)] {
        let result = publish_status(&api, "t", json!([{"value": 0, "ttl_ms": ttl_ms}])).await;
        assert_eq!(result, StatusCode::BAD_REQUEST, "{ttl_ms}");
    }

    // Short-lived by default, one with its own long TTL.
    publish(
        &api,
        "t",
        json!([{"value": "short"}, {"value": "long", "ttl_ms": 60000}]),
    )
    .await;
    let (status, reply) = post(
        &api,
        "/v1/queues/q/messages",
        json!({"messages": [{"value": "short"}, {"value": "long", "ttl_ms": 60000}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // Before expiry both are readable.
    let fetched = api
        .get_ok("/v1/topics/t/partitions/0/messages?offset=0")
        .await;
    assert_eq!(fetched["messages"].as_array().unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;

    let fetched = api
        .get_ok("/v1/topics/t/partitions/0/messages?offset=0")
        .await;
    assert_eq!(
        values(fetched["messages"].as_array().unwrap()),
        vec![json!("long")]
    );
    assert_eq!(fetched["next_offset"], 2);
    let pulled = api
        .get_ok("/v1/topics/t/subscriptions/s/messages?wait_ms=0")
        .await;
    assert_eq!(
        values(pulled["messages"].as_array().unwrap()),
        vec![json!("long")]
    );
    assert_eq!(values(&receive(&api, "q", 0).await), vec![json!("long")]);
    let dead = receive(&api, "dead", 1000).await;
    assert_eq!(values(&dead), vec![json!("short")]);
    assert_eq!(dead[0]["headers"]["ferry-dead-letter-reason"], "expired");
    assert_eq!(dead[0]["headers"]["ferry-dead-letter-queue"], "q");
    assert_eq!(dead[0]["headers"]["ferry-dead-letter-offset"], "0");
    assert_eq!(dead[0]["headers"]["ferry-delivery-count"], "0");
}

async fn publish_status(api: &Api, topic: &str, messages: Value) -> StatusCode {
    let path = format!("/v1/topics/{topic}/messages");
    post(api, &path, json!({ "messages": messages })).await.0
}

#[tokio::test]
async fn dead_letters_after_max_deliveries_and_rejects() {
    let (_dir, mut broker, api) = broker_and_user(&["--fsync", "always"]).await;
    let bob = Api::user(&broker.url, "bob").await;
    create(&api, "/v1/queues", json!({"name": "dead"})).await;
    create(
        &api,
        "/v1/queues",
        json!({"name": "private-dead", "access": "private"}),
    )
    .await;
    for (body, field) in [
        (json!({"name": "x", "dead_letter_queue": "x"}), "itself"),
        (
            json!({"name": "x", "dead_letter_queue": "missing"}),
            "does not exist",
        ),
        (json!({"name": "x", "max_deliveries": 0}), "max_deliveries"),
    ] {
        let (status, reply) = post(&api, "/v1/queues", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(field),
            "{reply}"
        );
    }
    // Another user's private queue does not exist for bob.
    let (status, _) = post(
        &bob,
        "/v1/queues",
        json!({"name": "x", "dead_letter_queue": "private-dead"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    create(
        &api,
        "/v1/queues",
        json!({"name": "work", "max_deliveries": 2, "dead_letter_queue": "dead",
               "visibility_timeout_ms": 100}),
    )
    .await;
    let (status, _) = post(
        &api,
        "/v1/queues/work/messages",
        json!({"messages": [{"value": "poison", "headers": {"h": "kept"}}, {"value": "bad"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // "bad" is rejected at once; "poison" is received twice and never acked.
    let first = receive(&api, "work", 0).await;
    assert_eq!(values(&first), vec![json!("poison"), json!("bad")]);
    let (status, reply) = post(
        &api,
        "/v1/queues/work/nack",
        json!({"ids": [first[1]["id"]], "requeue": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = receive(&api, "work", 0).await;
    assert_eq!(values(&second), vec![json!("poison")]);
    assert_eq!(second[0]["delivery_count"], 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(receive(&api, "work", 0).await.is_empty(), "over the limit");

    // The dead letters survive a SIGKILL of the broker.
    broker.restart();
    let api = Api {
        url: broker.url.clone(),
        ..api
    };
    let dead = receive(&api, "dead", 1000).await;
    assert_eq!(values(&dead), vec![json!("bad"), json!("poison")]);
    assert_eq!(dead[0]["headers"]["ferry-dead-letter-reason"], "rejected");
    assert_eq!(dead[0]["headers"]["ferry-delivery-count"], "1");
    assert_eq!(
        dead[1]["headers"]["ferry-dead-letter-reason"],
        "max_deliveries"
    );
    assert_eq!(dead[1]["headers"]["ferry-delivery-count"], "2");
    assert_eq!(dead[1]["headers"]["ferry-dead-letter-queue"], "work");
    assert_eq!(dead[1]["headers"]["h"], "kept");
    assert_eq!(dead[1]["producer"], "alice");
    let work = api.get_ok("/v1/queues/work").await;
    assert_eq!(work["depth"], 0, "{work}");
    assert!(receive(&api, "work", 0).await.is_empty());
}

#[tokio::test]
async fn idempotent_publish_stores_once_across_restart() {
    let (_dir, mut broker, api) = broker_and_user(&["--fsync", "always"]).await;
    create(&api, "/v1/topics", json!({"name": "t", "partitions": 4})).await;
    create(&api, "/v1/queues", json!({"name": "q"})).await;
    let request = |first: u64, values: &[&str]| {
        json!({
            "producer_id": "producer-1",
            "messages": values.iter().enumerate()
                .map(|(i, v)| json!({"value": v, "sequence": first + i as u64}))
                .collect::<Vec<_>>(),
        })
    };

    for path in ["/v1/topics/t/messages", "/v1/queues/q/messages"] {
        let (status, first) = post(&api, path, request(0, &["a", "b", "c"])).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert!(first.get("duplicate").is_none());
        for _ in 0..2 {
            let (status, again) = post(&api, path, request(0, &["a", "b", "c"])).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(again["offsets"], first["offsets"]);
            assert_eq!(again["duplicate"], true);
        }
        let result = post(&api, path, request(5, &["gap"])).await;
        assert_error(&result, StatusCode::CONFLICT, "out_of_order_sequence");
        let result = post(&api, path, request(2, &["c", "d"])).await;
        assert_error(&result, StatusCode::CONFLICT, "out_of_order_sequence");
    }

    broker.restart();
    let api = Api {
        url: broker.url.clone(),
        ..api
    };
    for path in ["/v1/topics/t/messages", "/v1/queues/q/messages"] {
        let (status, again) = post(&api, path, request(0, &["a", "b", "c"])).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["duplicate"], true, "{path} after restart");
        let (status, next) = post(&api, path, request(3, &["d"])).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        assert!(next.get("duplicate").is_none());
    }

    // Stored once: four messages in the topic, all in one partition.
    let topic = api.get_ok("/v1/topics/t").await;
    let ends: Vec<u64> = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .collect();
    assert_eq!(ends.iter().sum::<u64>(), 4, "{topic}");
    assert_eq!(ends.iter().filter(|end| **end > 0).count(), 1, "{topic}");
    assert_eq!(
        values(&receive(&api, "q", 0).await),
        vec![json!("a"), json!("b"), json!("c"), json!("d")]
    );

    // Malformed idempotent requests.
    for body in [
        json!({"messages": [{"value": 1, "sequence": 0}]}),
        json!({"producer_id": "p", "messages": [{"value": 1}]}),
        json!({"producer_id": "p", "messages": [{"value": 1, "sequence": 0}, {"value": 2, "sequence": 2}]}),
        json!({"producer_id": "", "messages": [{"value": 1, "sequence": 0}]}),
        json!({"producer_id": "p", "messages": [{"value": 1, "sequence": 2147483648u64}]}),
        json!({"producer_id": "p", "messages": [
            {"value": 1, "sequence": 0, "key": "k1"},
            {"value": 2, "sequence": 1, "key": "k2"},
            {"value": 3, "sequence": 2, "key": "k3"},
            {"value": 4, "sequence": 3, "key": "k4"},
            {"value": 5, "sequence": 4, "key": "k5"}]}),
    ] {
        let result = post(&api, "/v1/topics/t/messages", body.clone()).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
    }
    // Producer ids belong to their user: bob's "producer-1" is new.
    let bob = Api::user(&api.url, "bob").await;
    let (status, bobs) = post(&bob, "/v1/queues/q/messages", request(0, &["bob"])).await;
    assert_eq!(status, StatusCode::OK, "{bobs}");
    assert!(bobs.get("duplicate").is_none(), "{bobs}");
    // A new producer starts at 0.
    let result = post(
        &api,
        "/v1/topics/t/messages",
        json!({"producer_id": "new", "messages": [{"value": 1, "sequence": 1}]}),
    )
    .await;
    assert_error(&result, StatusCode::CONFLICT, "out_of_order_sequence");
}

#[tokio::test]
async fn subscription_events_stream_and_commit() {
    let (_dir, broker, api) = broker_and_user(&[]).await;
    create(&api, "/v1/topics", json!({"name": "t"})).await;
    create(
        &api,
        "/v1/topics/t/subscriptions",
        json!({"name": "s", "pattern": "keep.#"}),
    )
    .await;
    let url = format!("{}/v1/topics/t/subscriptions/s/events", broker.url);

    // Errors come as plain responses before any stream starts.
    let missing = api
        .http
        .get(format!(
            "{}/v1/topics/t/subscriptions/none/events",
            broker.url
        ))
        .bearer_auth(api.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let anonymous = api.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Browsers cannot set headers on an event stream: the token may come
    // in the query.
    create(
        &api,
        "/v1/topics/t/subscriptions",
        json!({"name": "browser"}),
    )
    .await;
    let in_query = api
        .http
        .get(format!(
            "{}/v1/topics/t/subscriptions/browser/events?access_token={}",
            broker.url,
            api.token.as_ref().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), StatusCode::OK);
    drop(in_query);

    let mut response = api
        .http
        .get(&url)
        .bearer_auth(api.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    publish(
        &api,
        "t",
        json!([
            {"value": "a", "routing_key": "keep.1"},
            {"value": "skipped", "routing_key": "drop"},
            {"value": {"b": "ü"}, "routing_key": "keep"},
        ]),
    )
    .await;
    let events = read_events(&mut response, 2, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "message");
    assert_eq!(events[0].1, "0-0");
    let first: Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(first["value"], "a");
    assert_eq!(events[1].1, "0-2");
    let second: Value = serde_json::from_str(&events[1].2).unwrap();
    assert_eq!(second["value"]["b"], "ü");

    // What the stream sent is committed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = api.get_ok("/v1/topics/t/subscriptions").await;
        let s = list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|subscription| subscription["name"] == "s")
            .unwrap();
        if s["committed"] == json!([{"partition": 0, "offset": 3}]) {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleting the subscription ends the stream with an error event.
    let (status, _) = api
        .call(Method::DELETE, "/v1/topics/t/subscriptions/s", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let events = read_events(&mut response, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "error");
    let error: Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
}

#[tokio::test]
async fn dead_letters_reach_a_recreated_dead_letter_queue() {
    let (_dir, _broker, api) = broker_and_user(&[]).await;
    create(&api, "/v1/queues", json!({"name": "dead"})).await;
    create(
        &api,
        "/v1/queues",
        json!({"name": "work", "dead_letter_queue": "dead"}),
    )
    .await;
    let reject_one = |value: &'static str| {
        let api = api.clone();
        async move {
            let (status, _) = post(
                &api,
                "/v1/queues/work/messages",
                json!({"messages": [{"value": value}]}),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let received = receive(&api, "work", 1000).await;
            let (status, reply) = post(
                &api,
                "/v1/queues/work/nack",
                json!({"ids": [received[0]["id"]], "requeue": false}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{reply}");
        }
    };

    // With the dead-letter queue gone, the dead letter is dropped.
    let (status, _) = api.call(Method::DELETE, "/v1/queues/dead", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    reject_one("dropped").await;
    // A new queue of that name receives the next dead letters.
    create(&api, "/v1/queues", json!({"name": "dead"})).await;
    reject_one("kept").await;
    assert_eq!(
        values(&receive(&api, "dead", 2000).await),
        vec![json!("kept")]
    );
}

#[tokio::test]
async fn revoked_grant_stops_a_binding() {
    let (_dir, broker, alice) = broker_and_user(&[]).await;
    let bob = Api::user(&broker.url, "bob").await;
    create(
        &bob,
        "/v1/topics",
        json!({"name": "private", "access": "private"}),
    )
    .await;
    let grant = json!({"user": "alice", "permission": "consume"});
    let (status, reply) = post(&bob, "/v1/topics/private/grants", grant.clone()).await;
    assert!(status.is_success(), "{status} {reply}");
    create(&alice, "/v1/queues", json!({"name": "mine"})).await;
    create(
        &alice,
        "/v1/queues/mine/bindings",
        json!({"topic": "private", "pattern": "#"}),
    )
    .await;
    publish(&bob, "private", json!([{"value": "granted"}])).await;
    let routed = drain(&alice, "mine", 1, Duration::from_secs(5)).await;
    assert_eq!(routed, vec![json!("granted")]);

    let (status, _) = bob
        .call(Method::DELETE, "/v1/topics/private/grants", Some(grant))
        .await;
    assert!(status.is_success(), "{status}");
    publish(&bob, "private", json!([{"value": "revoked"}])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receive(&alice, "mine", 0).await.is_empty());
}

#[tokio::test]
async fn receive_skips_a_run_of_expired_messages() {
    let (_dir, _broker, api) = broker_and_user(&[]).await;
    create(&api, "/v1/queues", json!({"name": "q"})).await;
    for batch in 0..3 {
        let expired: Vec<Value> = (0..1000)
            .map(|n| json!({"value": batch * 1000 + n, "ttl_ms": 1}))
            .collect();
        let body = json!({ "messages": expired });
        let (status, _) = post(&api, "/v1/queues/q/messages", body).await;
        assert_eq!(status, StatusCode::OK);
    }
    let live = json!({"messages": [{"value": "live"}]});
    let (status, _) = post(&api, "/v1/queues/q/messages", live).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, reply) = post(
        &api,
        "/v1/queues/q/receive",
        json!({"max_messages": 1, "wait_ms": 10000}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        values(reply["messages"].as_array().unwrap()),
        vec![json!("live")]
    );
}

#[tokio::test]
async fn short_leases_dead_letter_each_message_once() {
    let (_dir, _broker, api) = broker_and_user(&["--fsync", "always"]).await;
    create(&api, "/v1/queues", json!({"name": "dead"})).await;
    create(
        &api,
        "/v1/queues",
        json!({"name": "q", "dead_letter_queue": "dead", "visibility_timeout_ms": 1}),
    )
    .await;
    let messages: Vec<Value> = (0..200).map(|n| json!({"value": n, "ttl_ms": 1})).collect();
    let (status, _) = post(
        &api,
        "/v1/queues/q/messages",
        json!({ "messages": messages }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Concurrent receivers with 1 ms leases race for the expired messages.
    let receivers: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    receive(&api, "q", 0).await;
                }
            })
        })
        .collect();
    for receiver in receivers {
        receiver.await.unwrap();
    }
    let mut dead: Vec<i64> = drain(&api, "dead", 200, Duration::from_secs(10))
        .await
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    dead.sort_unstable();
    assert_eq!(dead, (0..200).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receive(&api, "dead", 0).await.is_empty(),
        "no second copies"
    );
}

#[tokio::test]
async fn binding_start_survives_sigkill_behind_a_backlog() {
    let (_dir, mut broker, api) = broker_and_user(&["--fsync", "always"]).await;
    create(&api, "/v1/topics", json!({"name": "t"})).await;
    create(&api, "/v1/queues", json!({"name": "busy"})).await;
    create(&api, "/v1/queues", json!({"name": "late"})).await;
    create(
        &api,
        "/v1/queues/busy/bindings",
        json!({"topic": "t", "pattern": "#"}),
    )
    .await;
    // A backlog keeps the router busy.
    for batch in 0..10 {
        let messages: Vec<Value> = (0..500)
            .map(|n| json!({"value": batch * 500 + n}))
            .collect();
        publish(&api, "t", Value::Array(messages)).await;
    }
    create(
        &api,
        "/v1/queues/late/bindings",
        json!({"topic": "t", "pattern": "late"}),
    )
    .await;
    publish(
        &api,
        "t",
        json!([{"value": "after", "routing_key": "late"}]),
    )
    .await;
    broker.restart();
    let api = Api {
        url: broker.url.clone(),
        ..api
    };
    let routed = drain(&api, "late", 1, Duration::from_secs(20)).await;
    assert_eq!(routed, vec![json!("after")]);
}

#[tokio::test]
async fn pull_goes_past_many_skipped_messages() {
    let (_dir, _broker, api) = broker_and_user(&[]).await;
    create(&api, "/v1/topics", json!({"name": "t"})).await;
    create(
        &api,
        "/v1/topics/t/subscriptions",
        json!({"name": "s", "pattern": "keep", "start": "earliest"}),
    )
    .await;
    // More skipped bytes than one take reads (64 reads of 1 MiB).
    let big = "x".repeat(1_000_000);
    for _ in 0..70 {
        publish(&api, "t", json!([{"value": big, "routing_key": "skip"}])).await;
    }
    publish(&api, "t", json!([{"value": "kept", "routing_key": "keep"}])).await;
    let started = Instant::now();
    let pulled = api
        .get_ok("/v1/topics/t/subscriptions/s/messages?wait_ms=20000")
        .await;
    assert_eq!(
        values(pulled["messages"].as_array().unwrap()),
        vec![json!("kept")]
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the pull waited out its wait"
    );
}

#[tokio::test]
async fn event_stream_commits_only_what_the_connection_took() {
    let (_dir, broker, api) = broker_and_user(&[]).await;
    create(&api, "/v1/topics", json!({"name": "t"})).await;
    create(
        &api,
        "/v1/topics/t/subscriptions",
        json!({"name": "s", "start": "earliest"}),
    )
    .await;
    let big = "x".repeat(100_000);
    for _ in 0..400 {
        publish(&api, "t", json!([{"value": big}])).await;
    }
    // A client that reads nothing and goes away.
    let response = api
        .http
        .get(format!("{}/v1/topics/t/subscriptions/s/events", broker.url))
        .bearer_auth(api.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(response);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let list = api.get_ok("/v1/topics/t/subscriptions").await;
    let committed = list["subscriptions"][0]["committed"][0]["offset"]
        .as_u64()
        .unwrap();
    assert!(committed < 400, "committed {committed} of 400 never read");
}
