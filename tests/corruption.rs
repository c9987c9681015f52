//! A damaged batch in the middle of a sealed segment: the broker serves the
//! batches before it, refuses the damaged one with an error that names the
//! partition and offset, counts it in `/metrics`, and `ferry-log verify`
//! finds it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_error, Api, BrokerProcess};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Returns the `ferry-log` binary the workspace build puts beside the
/// tests.
fn ferry_log() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary sits in target/<profile>/deps")
        .join("ferry-log");
    assert!(
        path.exists(),
        "{} is missing; build the workspace",
        path.display()
    );
    path
}

/// Returns the directory of partition 0 of the only topic under
/// `data_dir`.
fn partition_dir(data_dir: &Path) -> PathBuf {
    let topics = std::fs::read_dir(data_dir.join("topics")).unwrap();
    let topic = topics.map(|entry| entry.unwrap().path()).next().unwrap();
    topic.join("0")
}

#[tokio::test]
async fn damaged_batch_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &["--segment-bytes", "65536"]);
    let api = Api::user(&broker.url, "alice").await;
    let (status, _) = api
        .call(Method::POST, "/v1/topics", Some(json!({"name": "t"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // One message per request, so one batch each, all of the same size.
    let value = "v".repeat(1000);
    for _ in 0..200 {
        let (status, _) = api
            .call(
                Method::POST,
                "/v1/topics/t/messages",
                Some(json!({"messages": [{"value": value}]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    broker.terminate();

    // Flip one byte inside the records of batch 4 of the first (sealed)
    // segment.
    let partition = partition_dir(dir.path());
    let first = partition.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let batch_len = 12 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let damaged_at = 4 * batch_len + 70;
    bytes[damaged_at] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    assert!(
        std::fs::read_dir(&partition).unwrap().count() > 3,
        "the damaged segment must be sealed"
    );

    broker.restart();
    let api = Api {
        url: broker.url.clone(),
        ..api
    };
    // The batches before the damage are served.
    let fetched = api
        .get_ok("/v1/topics/t/partitions/0/messages?offset=0&max_messages=100")
        .await;
    let offsets: Vec<u64> = fetched["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    assert_eq!(fetched["next_offset"], 4);
    // The damaged batch is refused, by partition and offset.
    let result = api
        .call(
            Method::GET,
            "/v1/topics/t/partitions/0/messages?offset=4",
            None,
        )
        .await;
    assert_error(&result, StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data");
    let message = result.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("offset 4 of topics/t@"), "{message}");
    assert!(message.contains("/0 is damaged"), "{message}");
    // The batches after it are still readable.
    let after = api
        .get_ok("/v1/topics/t/partitions/0/messages?offset=5&max_messages=1")
        .await;
    assert_eq!(after["messages"][0]["offset"], 5);

    let metrics = common::metrics(&broker.url).await;
    assert!(
        metrics.contains("ferry_corrupt_batch_reads_total 1\n"),
        "{metrics}"
    );

    broker.terminate();
    let verify = Command::new(ferry_log())
        .arg("verify")
        .arg(&partition)
        .output()
        .expect("ferry-log runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(!verify.status.success(), "{report}");
    assert!(report.contains("00000000000000000000.log"), "{report}");
    assert!(report.contains(&(4 * batch_len).to_string()), "{report}");
}
