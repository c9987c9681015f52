//! A walk over every REST route with two users over a real socket,
//! checking statuses, error codes and bodies.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, Api, BrokerProcess};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn api_walk_two_users() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        dir.path(),
        &[
            "--max-message-bytes",
            "1000",
            "--max-request-bytes",
            "100000",
        ],
    );
    let anonymous = Api::new(&broker.url);

    // Health, metrics and the API description need no token.
    assert_eq!(anonymous.get_ok("/healthz").await["status"], "ok");
    let (status, metrics) = anonymous.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("ferry_messages_published_total"));
    assert_eq!(
        anonymous.get_ok("/v1/openapi.json").await["openapi"],
        "3.0.3"
    );

    accounts(&anonymous).await;
    let alice = Api::user(&broker.url, "alice").await;
    let bob = Api::user(&broker.url, "bob").await;

    topics(&alice, &bob).await;
    subscriptions(&alice, &bob).await;
    queues(&alice, &bob).await;
    private_resources(&alice, &bob).await;
    limits(&alice).await;

    let cluster = alice.get_ok("/v1/cluster").await;
    assert_eq!(cluster["brokers"][0]["alive"], true);
    assert_eq!(cluster["controller"], 0);

    // Log-out: the token stops working.
    let (status, _) = bob.call(Method::DELETE, "/v1/tokens/current", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &bob.call(Method::GET, "/v1/topics", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
}

async fn accounts(anonymous: &Api) {
    let register = |body: Value| anonymous.call(Method::POST, "/v1/users", Some(body));
    let created = register(json!({"username": "carol", "password": "long enough"})).await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    assert_eq!(created.1["username"], "carol");
    assert_error(
        &register(json!({"username": "carol", "password": "long enough"})).await,
        StatusCode::CONFLICT,
        "already_exists",
    );
    let invalid_name = register(json!({"username": "no spaces", "password": "long enough"})).await;
    assert_error(&invalid_name, StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(invalid_name.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("username"));
    let short = register(json!({"username": "dave", "password": "short"})).await;
    assert_error(&short, StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(short.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("password"));
    let wrong_type = register(json!({"username": 5, "password": "long enough"})).await;
    assert_error(&wrong_type, StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(wrong_type.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("username"));
    let unknown =
        register(json!({"username": "erin", "password": "long enough", "admin": true})).await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(unknown.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin"));
    let malformed = anonymous
        .call_raw(Method::POST, "/v1/users", "{\"username\": ")
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "invalid_argument");
    let empty = anonymous.call_raw(Method::POST, "/v1/users", "").await;
    assert_error(&empty, StatusCode::BAD_REQUEST, "invalid_argument");
    // An array with the fields in order is not an object.
    let array = anonymous
        .call_raw(Method::POST, "/v1/users", r#"["arrayuser", "long enough"]"#)
        .await;
    assert_error(&array, StatusCode::BAD_REQUEST, "invalid_argument");
    let unicode = register(json!({"username": "zoë", "password": "long enough"})).await;
    assert_error(&unicode, StatusCode::BAD_REQUEST, "invalid_argument");

    let login = |body: Value| anonymous.call(Method::POST, "/v1/tokens", Some(body));
    let token = login(json!({"username": "carol", "password": "long enough"})).await;
    assert_eq!(token.0, StatusCode::CREATED);
    assert!(token.1["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(token.1["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_error(
        &login(json!({"username": "carol", "password": "wrong password"})).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    assert_error(
        &login(json!({"username": "nobody", "password": "long enough"})).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );

    // Every other route needs a valid token.
    assert_error(
        &anonymous.call(Method::GET, "/v1/topics", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let forged = Api {
        token: Some("eyJhbGciOiJIUzI1NiJ9.e30.invalid".into()),
        ..anonymous.clone()
    };
    assert_error(
        &forged.call(Method::GET, "/v1/queues", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    );
    let non_ascii = anonymous
        .http
        .get(format!("{}/v1/topics", anonymous.url))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(non_ascii.status(), StatusCode::UNAUTHORIZED);
    assert_error(
        &anonymous.call(Method::GET, "/v1/no/such/route", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn topics(alice: &Api, bob: &Api) {
    let created = alice
        .post_expect(
            "/v1/topics",
            json!({"name": "orders", "partitions": 3}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["owner"], "alice");
    assert_eq!(created["partitions"].as_array().unwrap().len(), 3);
    assert_error(
        &alice
            .call(Method::POST, "/v1/topics", Some(json!({"name": "orders"})))
            .await,
        StatusCode::CONFLICT,
        "already_exists",
    );
    for bad in [
        json!({"name": "bad/name"}),
        json!({"name": ""}),
        json!({"name": "t", "partitions": 0}),
    ] {
        assert_error(
            &alice.call(Method::POST, "/v1/topics", Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    let listed = bob.get_ok("/v1/topics").await;
    assert!(listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "orders"));

    // Publish: offsets in request order, keyed messages stay together.
    let body = json!({"messages": [
        {"value": {"n": 1}, "key": "k"},
        {"value": "two", "key": "k", "headers": {"h": "v"}, "routing_key": "a.b"},
        {"value_b64": "AAEC", "key": "k"},
    ]});
    let published = bob
        .post_expect("/v1/topics/orders/messages", body, StatusCode::OK)
        .await;
    let offsets = published["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3);
    let partition = offsets[0]["partition"].as_u64().unwrap();
    for (index, entry) in offsets.iter().enumerate() {
        assert_eq!(entry["partition"].as_u64().unwrap(), partition);
        assert_eq!(entry["offset"].as_u64().unwrap(), index as u64);
    }

    let path = format!("/v1/topics/orders/partitions/{partition}/messages?offset=0");
    let fetched = alice.get_ok(&path).await;
    let messages = fetched["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["value"], json!({"n": 1}));
    assert_eq!(messages[0]["producer"], "bob");
    assert_eq!(messages[1]["headers"]["h"], "v");
    assert_eq!(messages[1]["routing_key"], "a.b");
    assert_eq!(messages[2]["value_b64"], "AAEC");
    assert_eq!(fetched["next_offset"], 3);
    assert_eq!(fetched["high_watermark"], 3);
    let one = alice
        .get_ok(&format!(
            "/v1/topics/orders/partitions/{partition}/messages?offset=1&max_messages=1"
        ))
        .await;
    assert_eq!(one["messages"].as_array().unwrap().len(), 1);
    assert_eq!(one["messages"][0]["offset"], 1);
    assert_eq!(one["next_offset"], 2);

    let described = alice.get_ok("/v1/topics/orders").await;
    assert_eq!(described["partitions"][partition as usize]["end_offset"], 3);

    // Fetch errors.
    let out_of_range = alice
        .call(
            Method::GET,
            &format!("/v1/topics/orders/partitions/{partition}/messages?offset=99"),
            None,
        )
        .await;
    assert_error(
        &out_of_range,
        StatusCode::BAD_REQUEST,
        "offset_out_of_range",
    );
    for bad in [
        "/v1/topics/orders/partitions/7/messages",
        "/v1/topics/orders/partitions/x/messages",
        "/v1/topics/orders/partitions/0/messages?offset=-1",
        "/v1/topics/orders/partitions/0/messages?max_messages=0",
        "/v1/topics/orders/partitions/0/messages?wait_ms=999999",
        "/v1/topics/orders/partitions/0/messages?bogus=1",
    ] {
        assert_error(
            &alice.call(Method::GET, bad, None).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &alice.call(Method::GET, "/v1/topics/missing", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A long poll returns as soon as a message arrives.
    let waiting = {
        let alice = alice.clone();
        let path =
            format!("/v1/topics/orders/partitions/{partition}/messages?offset=3&wait_ms=10000");
        tokio::spawn(async move {
            let started = Instant::now();
            (alice.get_ok(&path).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = json!({"messages": [{"value": "late", "key": "k"}]});
    alice
        .post_expect("/v1/topics/orders/messages", body, StatusCode::OK)
        .await;
    let (late, elapsed) = waiting.await.unwrap();
    assert_eq!(late["messages"][0]["value"], "late");
    assert!(
        elapsed < Duration::from_secs(9),
        "long poll waited {elapsed:?}"
    );
    let empty = alice
        .get_ok(&format!(
            "/v1/topics/orders/partitions/{partition}/messages?offset=4&wait_ms=100"
        ))
        .await;
    assert_eq!(empty["messages"], json!([]));
    assert_eq!(empty["next_offset"], 4);

    // Only the owner deletes; deletion removes the messages.
    assert_error(
        &bob.call(Method::DELETE, "/v1/topics/orders", None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (status, _) = alice.call(Method::DELETE, "/v1/topics/orders", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &alice.call(Method::GET, "/v1/topics/orders", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    alice
        .post_expect("/v1/topics", json!({"name": "orders"}), StatusCode::CREATED)
        .await;
    let fresh = alice.get_ok("/v1/topics/orders").await;
    assert_eq!(
        fresh["partitions"][0]["end_offset"], 0,
        "re-created topic starts empty"
    );
    assert_error(
        &alice.call(Method::PUT, "/v1/topics/orders", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

async fn subscriptions(alice: &Api, bob: &Api) {
    alice
        .post_expect(
            "/v1/topics",
            json!({"name": "events", "partitions": 2}),
            StatusCode::CREATED,
        )
        .await;
    let early: Vec<Value> = (0..4).map(|n| json!({"value": n})).collect();
    alice
        .post_expect(
            "/v1/topics/events/messages",
            json!({"messages": early}),
            StatusCode::OK,
        )
        .await;

    let created = bob
        .post_expect(
            "/v1/topics/events/subscriptions",
            json!({"name": "audit", "start": "earliest"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["name"], "audit");
    bob.post_expect(
        "/v1/topics/events/subscriptions",
        json!({"name": "tail"}),
        StatusCode::CREATED,
    )
    .await;
    assert_error(
        &bob.call(
            Method::POST,
            "/v1/topics/events/subscriptions",
            Some(json!({"name": "audit"})),
        )
        .await,
        StatusCode::CONFLICT,
        "already_exists",
    );
    let listed = alice.get_ok("/v1/topics/events/subscriptions").await;
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 2);

    let pulled = bob
        .get_ok("/v1/topics/events/subscriptions/audit/messages?max_messages=10")
        .await;
    let values: Vec<&Value> = pulled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["value"])
        .collect();
    assert_eq!(values.len(), 4, "earliest sees all four: {pulled}");
    // The position moved on: a second pull finds nothing.
    let again = bob
        .get_ok("/v1/topics/events/subscriptions/audit/messages?wait_ms=100")
        .await;
    assert_eq!(again["messages"], json!([]));
    // "latest" saw nothing of the old messages.
    let tail = bob
        .get_ok("/v1/topics/events/subscriptions/tail/messages?wait_ms=100")
        .await;
    assert_eq!(tail["messages"], json!([]));

    // One entry per partition: the next offset after its last message.
    let mut next: std::collections::BTreeMap<u64, u64> = Default::default();
    for message in pulled["messages"].as_array().unwrap() {
        let partition = message["partition"].as_u64().unwrap();
        let offset = message["offset"].as_u64().unwrap() + 1;
        let entry = next.entry(partition).or_insert(offset);
        *entry = (*entry).max(offset);
    }
    let commits: Vec<Value> = next
        .iter()
        .map(|(partition, offset)| json!({"partition": partition, "offset": offset}))
        .collect();
    let twice = json!({"offsets": [{"partition": 0, "offset": 1}, {"partition": 0, "offset": 2}]});
    let repeated = bob
        .call(
            Method::POST,
            "/v1/topics/events/subscriptions/audit/offsets",
            Some(twice),
        )
        .await;
    assert_error(&repeated, StatusCode::BAD_REQUEST, "invalid_argument");
    let (status, body) = bob
        .call(
            Method::POST,
            "/v1/topics/events/subscriptions/audit/offsets",
            Some(json!({"offsets": commits})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let listed = bob.get_ok("/v1/topics/events/subscriptions").await;
    let audit = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "audit")
        .unwrap()
        .clone();
    let committed: u64 = audit["committed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["offset"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, 4);
    assert_error(
        &bob.call(
            Method::POST,
            "/v1/topics/events/subscriptions/audit/offsets",
            Some(json!({"offsets": [{"partition": 9, "offset": 0}]})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &bob.call(
            Method::GET,
            "/v1/topics/events/subscriptions/missing/messages",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let (status, _) = bob
        .call(Method::DELETE, "/v1/topics/events/subscriptions/tail", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &bob.call(Method::DELETE, "/v1/topics/events/subscriptions/tail", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn queues(alice: &Api, bob: &Api) {
    let created = alice
        .post_expect(
            "/v1/queues",
            json!({"name": "jobs", "visibility_timeout_ms": 300}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["depth"], 0);
    assert_error(
        &alice
            .call(Method::POST, "/v1/queues", Some(json!({"name": "jobs"})))
            .await,
        StatusCode::CONFLICT,
        "already_exists",
    );
    let sent = bob
        .post_expect(
            "/v1/queues/jobs/messages",
            json!({"messages": [{"value": "a"}, {"value": "b"}, {"value": "c"}]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(sent["offsets"].as_array().unwrap().len(), 3);
    let listed = bob.get_ok("/v1/queues").await;
    assert!(listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "jobs"));

    let received = alice
        .post_expect(
            "/v1/queues/jobs/receive",
            json!({"max_messages": 2}),
            StatusCode::OK,
        )
        .await;
    let messages = received["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["value"], "a");
    assert_eq!(messages[0]["delivery_count"], 1);
    assert_eq!(messages[0]["producer"], "bob");
    let first_id = messages[0]["id"].as_str().unwrap().to_string();
    let second_id = messages[1]["id"].as_str().unwrap().to_string();

    let described = alice.get_ok("/v1/queues/jobs").await;
    assert_eq!(described["depth"], 3);
    assert_eq!(described["in_flight"], 2);

    let acked = alice
        .post_expect(
            "/v1/queues/jobs/ack",
            json!({"ids": [first_id, "99-1", "junk"]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(acked["acked"], json!([first_id]));
    assert_eq!(acked["failed"].as_array().unwrap().len(), 2);
    let again = alice
        .post_expect(
            "/v1/queues/jobs/ack",
            json!({"ids": [first_id]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(again["acked"], json!([]), "a second ack of one id fails");

    // nack with requeue: delivered again with a higher count.
    let nacked = alice
        .post_expect(
            "/v1/queues/jobs/nack",
            json!({"ids": [second_id]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(nacked["nacked"], json!([second_id]));
    let redelivered = alice
        .post_expect(
            "/v1/queues/jobs/receive",
            json!({"max_messages": 5}),
            StatusCode::OK,
        )
        .await;
    let messages = redelivered["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{redelivered}");
    assert_eq!(messages[0]["value"], "b");
    assert_eq!(messages[0]["delivery_count"], 2);
    assert_eq!(messages[1]["value"], "c");

    // An expired lease redelivers.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = alice
        .post_expect(
            "/v1/queues/jobs/receive",
            json!({"max_messages": 5, "wait_ms": 2000}),
            StatusCode::OK,
        )
        .await;
    let counts: Vec<u64> = expired["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["delivery_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![3, 2], "{expired}");
    let ids: Vec<Value> = expired["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    alice
        .post_expect(
            "/v1/queues/jobs/nack",
            json!({"ids": ids, "requeue": false}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(alice.get_ok("/v1/queues/jobs").await["depth"], 0);

    // Receive on an empty queue with a short wait.
    let empty = alice
        .post_expect(
            "/v1/queues/jobs/receive",
            json!({"wait_ms": 100}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(empty["messages"], json!([]));
    for bad in [
        json!({"max_messages": 0}),
        json!({"max_messages": "x"}),
        json!({"wait_ms": 3600000}),
    ] {
        assert_error(
            &alice
                .call(Method::POST, "/v1/queues/jobs/receive", Some(bad))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &alice
            .call(
                Method::POST,
                "/v1/queues/jobs/ack",
                Some(json!({"ids": []})),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    // The second user cannot delete the first one's queue.
    assert_error(
        &bob.call(Method::DELETE, "/v1/queues/jobs", None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (status, _) = alice.call(Method::DELETE, "/v1/queues/jobs", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &bob.call(Method::GET, "/v1/queues/jobs", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn private_resources(alice: &Api, bob: &Api) {
    alice
        .post_expect(
            "/v1/topics",
            json!({"name": "secret", "access": "private"}),
            StatusCode::CREATED,
        )
        .await;
    alice
        .post_expect(
            "/v1/queues",
            json!({"name": "inbox", "access": "private"}),
            StatusCode::CREATED,
        )
        .await;
    // To bob they do not exist.
    let listed = bob.get_ok("/v1/topics").await;
    assert!(!listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "secret"));
    assert_error(
        &bob.call(Method::GET, "/v1/topics/secret", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &bob.call(
            Method::POST,
            "/v1/queues/inbox/messages",
            Some(json!({"messages": [{"value": 1}]})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &bob.call(
            Method::POST,
            "/v1/topics/secret/grants",
            Some(json!({"user": "bob", "permission": "consume"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A consume grant makes the topic visible and readable, not writable.
    let grant = json!({"user": "bob", "permission": "consume"});
    let (status, body) = alice
        .call(
            Method::POST,
            "/v1/topics/secret/grants",
            Some(grant.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    alice
        .post_expect(
            "/v1/topics/secret/messages",
            json!({"messages": [{"value": "hush"}]}),
            StatusCode::OK,
        )
        .await;
    let fetched = bob.get_ok("/v1/topics/secret/partitions/0/messages").await;
    assert_eq!(fetched["messages"][0]["value"], "hush");
    assert_error(
        &bob.call(
            Method::POST,
            "/v1/topics/secret/messages",
            Some(json!({"messages": [{"value": 1}]})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &bob.call(
            Method::POST,
            "/v1/topics/secret/grants",
            Some(json!({"user": "bob", "permission": "publish"})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &alice
            .call(
                Method::POST,
                "/v1/topics/secret/grants",
                Some(json!({"user": "nobody", "permission": "consume"})),
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &alice
            .call(
                Method::POST,
                "/v1/topics/secret/grants",
                Some(json!({"user": "bob", "permission": "admin"})),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    let (status, _) = alice
        .call(Method::DELETE, "/v1/topics/secret/grants", Some(grant))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &bob.call(Method::GET, "/v1/topics/secret", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Queue grants work the same way.
    let grant = json!({"user": "bob", "permission": "publish"});
    let (status, _) = alice
        .call(Method::POST, "/v1/queues/inbox/grants", Some(grant))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    bob.post_expect(
        "/v1/queues/inbox/messages",
        json!({"messages": [{"value": 1}]}),
        StatusCode::OK,
    )
    .await;
    assert_error(
        &bob.call(Method::POST, "/v1/queues/inbox/receive", Some(json!({})))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

async fn limits(alice: &Api) {
    alice
        .post_expect("/v1/topics", json!({"name": "limits"}), StatusCode::CREATED)
        .await;
    let too_big = json!({"messages": [{"value": "x".repeat(2000)}]});
    let result = alice
        .call(Method::POST, "/v1/topics/limits/messages", Some(too_big))
        .await;
    assert_error(&result, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert!(result.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages[0]"));
    let huge_request = json!({"messages": vec![json!({"value": "y".repeat(500)}); 400]});
    assert_error(
        &alice
            .call(
                Method::POST,
                "/v1/topics/limits/messages",
                Some(huge_request),
            )
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
    for (body, field) in [
        (json!({"messages": []}), "messages"),
        (json!({"messages": [{"key": "k"}]}), "messages[0]"),
        (json!({"messages": [{"value": 1, "extra": 2}]}), "extra"),
        (
            json!({"messages": [{"value": 1, "headers": {"h": 5}}]}),
            "messages[0].headers",
        ),
        (json!({"messages": "nope"}), "messages"),
        (json!({}), "messages"),
    ] {
        let result = alice
            .call(Method::POST, "/v1/topics/limits/messages", Some(body))
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
        let message = result.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "`{message}` does not name {field}");
    }
    // Values nested deeper than 128 levels are rejected before storing.
    let deep = format!("{}1{}", "[".repeat(129), "]".repeat(129));
    let body = format!(r#"{{"messages":[{{"value":{deep}}}]}}"#);
    let result = alice
        .call_raw(Method::POST, "/v1/topics/limits/messages", body)
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(result.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages[0].value"));
    let ok = format!("{}1{}", "[".repeat(128), "]".repeat(128));
    let body = format!(r#"{{"messages":[{{"value":{ok}}}]}}"#);
    let (status, body) = alice
        .call_raw(Method::POST, "/v1/topics/limits/messages", body)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = alice.call(Method::DELETE, "/v1/topics/limits", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    alice
        .post_expect("/v1/topics", json!({"name": "limits"}), StatusCode::CREATED)
        .await;

    // Nothing of the rejected requests was stored.
    let described = alice.get_ok("/v1/topics/limits").await;
    assert_eq!(described["partitions"][0]["end_offset"], 0);

    // Unicode survives intact.
    let body = json!({"messages": [{"value": "日本語 🚀", "key": "ключ", "headers": {"ü": "ß"}}]});
    alice
        .post_expect("/v1/topics/limits/messages", body, StatusCode::OK)
        .await;
    let fetched = alice
        .get_ok("/v1/topics/limits/partitions/0/messages")
        .await;
    assert_eq!(fetched["messages"][0]["value"], "日本語 🚀");
    assert_eq!(fetched["messages"][0]["key"], "ключ");
    assert_eq!(fetched["messages"][0]["headers"]["ü"], "ß");
}
