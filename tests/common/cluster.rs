//! A test cluster: one ZooKeeper server and N broker processes on loopback
//! ports, with helpers to find leaders, wait for the in-sync replicas and
//! read the replicas' logs after the brokers stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::zookeeper::ZooKeeperProcess;
use super::{Api, BrokerProcess};

/// ZooKeeper session timeout of test brokers: a dead broker loses its
/// leadership after about this long.
pub const SESSION_TIMEOUT_MS: u64 = 3000;

/// Lets one test cluster run at a time: a ZooKeeper server and three
/// brokers per test already fill two cores, and a starved broker would
/// miss its 3-second ZooKeeper session.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A ZooKeeper server and its brokers; broker `i` has id `i + 1`.
pub struct TestCluster {
    pub zookeeper: ZooKeeperProcess,
    pub brokers: Vec<BrokerProcess>,
    pub dir: PathBuf,
    /// Held while the cluster runs; the last field, so it is released
    /// after the processes above were killed.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl TestCluster {
    /// Starts ZooKeeper and `count` brokers under `dir`, and waits until
    /// every broker is a live, in-sync replica of `__meta`. Returns `None`
    /// when ZooKeeper is not installed (outside CI).
    pub async fn start(dir: &Path, count: usize, extra_args: &[&str]) -> Option<TestCluster> {
        let turn = ONE_AT_A_TIME.lock().await;
        let zookeeper = ZooKeeperProcess::start(&dir.join("zookeeper"))?;
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, "test-cluster-secret-0123456789abcdef").unwrap();
        let brokers = (1..=count)
            .map(|id| start_broker(dir, id, &zookeeper.connect_string(), &secret, extra_args))
            .collect();
        let cluster = TestCluster {
            zookeeper,
            brokers,
            dir: dir.to_path_buf(),
            _turn: turn,
        };
        cluster.wait_for_meta_isr(count).await;
        Some(cluster)
    }

    /// Starts one more broker, with the next id, and returns its id.
    pub fn add_broker(&mut self, extra_args: &[&str]) -> u32 {
        let id = self.brokers.len() + 1;
        let broker = start_broker(
            &self.dir,
            id,
            &self.zookeeper.connect_string(),
            &self.dir.join("cluster-secret"),
            extra_args,
        );
        self.brokers.push(broker);
        id as u32
    }

    /// REST URLs of the running brokers.
    pub fn urls(&self) -> Vec<String> {
        self.brokers
            .iter()
            .map(|broker| broker.url.clone())
            .collect()
    }

    /// Returns the broker with id `id`.
    pub fn broker(&mut self, id: u32) -> &mut BrokerProcess {
        &mut self.brokers[id as usize - 1]
    }

    /// Returns the URL of broker `id`.
    pub fn url(&self, id: u32) -> String {
        self.brokers[id as usize - 1].url.clone()
    }

    /// Data directory of broker `id`.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.brokers[id as usize - 1].data_dir.clone()
    }

    /// Registers `username` through any broker (retrying while `__meta`
    /// has no leader) and logs in on broker `id`.
    pub async fn user(&self, username: &str, id: u32) -> Api {
        let password = format!("{username}-password");
        let body = json!({"username": username, "password": password});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, response) = try_call(
                &Api::new(&self.url(id)),
                Method::POST,
                "/v1/users",
                Some(body.clone()),
            )
            .await;
            if status == Some(StatusCode::CREATED) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "register {username}: {status:?} {response}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Api::new(&self.url(id)).login(username, &password).await
    }

    /// Sends `GET /v1/cluster` to each broker until one responds.
    pub async fn describe(&self, api: &Api) -> Option<Value> {
        for url in self.urls() {
            let caller = Api { url, ..api.clone() };
            if let (Some(StatusCode::OK), body) =
                try_call(&caller, Method::GET, "/v1/cluster", None).await
            {
                return Some(body);
            }
        }
        None
    }

    /// Waits until `__meta` has `count` in-sync replicas, reading the state
    /// through ZooKeeper-backed `/v1/cluster` once a user exists, or by
    /// registering a probe user.
    async fn wait_for_meta_isr(&self, count: usize) {
        let api = self.user("cluster-probe", 1).await;
        self.wait_for_isr(&api, "meta", count).await;
    }

    /// Waits until resource `key` has a leader and `count` in-sync replicas.
    pub async fn wait_for_isr(&self, api: &Api, key: &str, count: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(description) = self.describe(api).await {
                if let Some(resource) = find_resource(&description, key) {
                    let isr = resource["isr"].as_array().map_or(0, Vec::len);
                    if isr == count && !resource["leader"].is_null() {
                        return resource.clone();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "resource {key} did not reach {count} in-sync replicas within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Returns the ZooKeeper key of topic `name`, as `GET /v1/cluster` lists it.
    pub async fn topic_key(&self, api: &Api, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, topic) =
                try_call(api, Method::GET, &format!("/v1/topics/{name}"), None).await;
            if status == Some(StatusCode::OK) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "describe {name}: {status:?} {topic}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let dir_suffix = format!("/{name}@");
        let description = self.describe(api).await.expect("a broker answers");
        description["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|resource| {
                resource["dir"]
                    .as_str()
                    .is_some_and(|dir| dir.contains(&dir_suffix))
            })
            .and_then(|resource| resource["resource"].as_str())
            .expect("the topic has a resource state")
            .to_string()
    }

    /// Returns the current leader of `key`, waiting until it has one.
    pub async fn leader_of(&self, api: &Api, key: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(description) = self.describe(api).await {
                if let Some(leader) =
                    find_resource(&description, key).and_then(|r| r["leader"].as_u64())
                {
                    return leader as u32;
                }
            }
            assert!(
                Instant::now() < deadline,
                "resource {key} has no leader after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every broker with SIGTERM, so their logs are closed.
    pub fn stop_brokers(&mut self) {
        for broker in &mut self.brokers {
            broker.terminate();
        }
    }
}

/// Finds the resource entry with key `key` in a `/v1/cluster` description.
pub fn find_resource<'a>(description: &'a Value, key: &str) -> Option<&'a Value> {
    description["resources"]
        .as_array()?
        .iter()
        .find(|resource| resource["resource"] == key)
}

fn start_broker(
    dir: &Path,
    id: usize,
    zookeeper: &str,
    secret: &Path,
    extra_args: &[&str],
) -> BrokerProcess {
    let data_dir = dir.join(format!("broker-{id}"));
    let id = id.to_string();
    let session_timeout = SESSION_TIMEOUT_MS.to_string();
    let secret = secret.to_str().unwrap().to_string();
    let mut args: Vec<&str> = vec![
        "--zookeeper",
        zookeeper,
        "--broker-id",
        &id,
        "--grpc-listen",
        "127.0.0.1:0",
        "--cluster-secret-file",
        &secret,
        "--zookeeper-session-timeout-ms",
        &session_timeout,
        "--replica-lag-max-ms",
        "3000",
    ];
    args.extend_from_slice(extra_args);
    BrokerProcess::start(&data_dir, &args)
}

/// Sends a request and returns the status (`None` when the request failed
/// to send, as when the broker is down) and the JSON body.
pub async fn try_call(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (Option<StatusCode>, Value) {
    try_call_within(api, method, path, body, Duration::from_secs(10)).await
}

/// [`try_call`] with a time limit for the whole request.
pub async fn try_call_within(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> (Option<StatusCode>, Value) {
    let mut request = api
        .http
        .request(method, format!("{}{path}", api.url))
        .timeout(timeout);
    if let Some(token) = &api.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let Ok(response) = request.send().await else {
        return (None, Value::Null);
    };
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (Some(status), body)
}

/// Reads every message value of a topic partition with its offset, through
/// `api`, from offset 0 to the high watermark.
pub async fn read_partition(api: &Api, topic: &str, partition: u32) -> Vec<(u64, Value)> {
    let mut offset = 0;
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let path = format!(
            "/v1/topics/{topic}/partitions/{partition}/messages?offset={offset}&max_messages=10000"
        );
        let (status, body) = try_call(api, Method::GET, &path, None).await;
        if status != Some(StatusCode::OK) {
            assert!(Instant::now() < deadline, "fetch {path}: {status:?} {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            return values;
        }
        for message in messages {
            offset = message["offset"].as_u64().unwrap() + 1;
            values.push((offset - 1, message["value"].clone()));
        }
    }
}

/// Reads the encoded batches of one log directory with the storage API,
/// after its broker stopped.
pub fn log_bytes(dir: &Path) -> Vec<u8> {
    let log = ferry::log::PartitionLog::open(dir, ferry::log::LogConfig::default()).unwrap();
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut bytes = Vec::new();
    while offset < end {
        let batches = log.read_raw(offset, 1 << 20, end).unwrap();
        for batch in batches {
            let header = ferry::log::batch::decode_header(&batch).unwrap();
            offset = header.base_offset + header.last_offset_delta as u64 + 1;
            bytes.extend_from_slice(&batch);
        }
    }
    bytes
}
