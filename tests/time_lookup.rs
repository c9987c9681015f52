//! `GET /v1/topics/{t}/partitions/{p}/offset?timestamp=T` on a real broker.

mod common;

use std::time::Duration;

use common::{assert_error, Api, BrokerProcess};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn offset_by_timestamp_finds_first_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let api = Api::user(&broker.url, "alice").await;
    let (status, _) = api
        .call(Method::POST, "/v1/topics", Some(json!({"name": "t"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for value in 0..3 {
        let (status, _) = api
            .call(
                Method::POST,
                "/v1/topics/t/messages",
                Some(json!({"messages": [{"value": value}]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fetched = api
        .get_ok("/v1/topics/t/partitions/0/messages?offset=0")
        .await;
    let times: Vec<i64> = fetched["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(times.len(), 3);

    let lookup = |t: i64| {
        let api = api.clone();
        async move {
            api.get_ok(&format!("/v1/topics/t/partitions/0/offset?timestamp={t}"))
                .await
        }
    };
    let first = lookup(0).await;
    assert_eq!(
        first,
        json!({"partition": 0, "offset": 0, "timestamp": times[0]})
    );
    let second = lookup(times[0] + 1).await;
    assert_eq!(second["offset"], 1);
    assert_eq!(second["timestamp"], times[1]);
    let exact = lookup(times[2]).await;
    assert_eq!(exact["offset"], 2);
    // Later than every message: the high watermark, and no timestamp.
    let after = lookup(times[2] + 1).await;
    assert_eq!(
        after,
        json!({"partition": 0, "offset": 3, "timestamp": null})
    );

    for (path, field) in [
        ("/v1/topics/t/partitions/0/offset", "timestamp"),
        (
            "/v1/topics/t/partitions/0/offset?timestamp=soon",
            "timestamp",
        ),
        ("/v1/topics/t/partitions/1/offset?timestamp=0", "partition"),
    ] {
        let result = api.call(Method::GET, path, None).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "invalid_argument");
        assert!(
            result.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{path}"
        );
    }
    let result = api
        .call(
            Method::GET,
            "/v1/topics/none/partitions/0/offset?timestamp=0",
            None,
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "not_found");
}
