//! Test harness: real broker processes on loopback ports and a thin JSON
//! HTTP caller, so tests see exactly what clients see.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub mod cluster;
pub mod mariadb;
pub mod zookeeper;

/// A `ferry serve` child process.
pub struct BrokerProcess {
    child: Child,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
}

impl BrokerProcess {
    /// Starts a broker on a free loopback port with `data_dir`, with 1000
    /// password iterations and `--fsync never` unless `extra_args` set them.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> BrokerProcess {
        let extra_args: Vec<String> = extra_args.iter().map(|arg| arg.to_string()).collect();
        let (child, url) = spawn(data_dir, &extra_args);
        BrokerProcess {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            extra_args,
        }
    }

    /// Kills the broker with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker with SIGTERM (graceful shutdown) and waits.
    pub fn terminate(&mut self) {
        send_sigterm(self.child.id());
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same data directory; the port changes.
    pub fn restart(&mut self) {
        self.kill();
        let (child, url) = spawn(&self.data_dir, &self.extra_args);
        self.child = child;
        self.url = url;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process with SIGSTOP: it keeps its sockets but does
    /// nothing, like a broker cut off from everyone.
    pub fn pause(&self) {
        send_signal("-STOP", self.child.id());
    }

    /// Continues a paused process with SIGCONT.
    pub fn resume(&self) {
        send_signal("-CONT", self.child.id());
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn send_sigterm(pid: u32) {
    send_signal("-TERM", pid);
}

fn send_signal(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status();
}

fn spawn(data_dir: &Path, extra_args: &[String]) -> (Child, String) {
    // Cheap password hashes keep tests fast unless a test sets its own.
    let default_iterations: &[&str] = if extra_args.iter().any(|arg| arg == "--password-iterations")
    {
        &[]
    } else {
        &["--password-iterations", "1000"]
    };
    // Tests that do not test durability skip the fsync cost.
    let default_fsync: &[&str] = if extra_args.iter().any(|arg| arg == "--fsync") {
        &[]
    } else {
        &["--fsync", "never"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(default_iterations)
        .args(default_fsync)
        .args(extra_args)
        .env(
            "FERRY_LOG",
            std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("failed to start the ferry binary");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("failed to read the broker's first line");
    let url = line
        .trim()
        .strip_prefix("ferry listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the broker: {line:?}"))
        .to_string();
    (child, url)
}

/// A JSON caller for one broker URL, optionally with a token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    /// Base URL.
    pub url: String,
    /// Bearer token, if logged in.
    pub token: Option<String>,
}

impl Api {
    /// A caller without a token.
    pub fn new(url: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client builds"),
            url: url.to_string(),
            token: None,
        }
    }

    /// Registers `username` and logs in; returns a caller with the token.
    pub async fn user(url: &str, username: &str) -> Api {
        let api = Api::new(url);
        let password = format!("{username}-password");
        let (status, body) = api
            .call(
                Method::POST,
                "/v1/users",
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body}");
        api.login(username, &password).await
    }

    /// The same caller, talking to `url` (a restarted broker's).
    pub fn with_url(&self, url: &str) -> Api {
        Api {
            url: url.to_string(),
            ..self.clone()
        }
    }

    /// Logs in as an existing user.
    pub async fn login(&self, username: &str, password: &str) -> Api {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/tokens",
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "login {username}: {body}");
        Api {
            token: Some(
                body["token"]
                    .as_str()
                    .expect("token is a string")
                    .to_string(),
            ),
            ..self.clone()
        }
    }

    /// Sends a request with an optional JSON body; returns the status and
    /// the JSON body (`null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.finish(request).await
    }

    /// Sends a request with a raw body.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = request.header("content-type", "application/json");
        self.finish(request).await
    }

    async fn finish(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request failed to send");
        let status = response.status();
        let bytes = response.bytes().await.expect("failed to read body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, body)
    }

    /// GET that must succeed with 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// POST that must succeed with `expected`.
    pub async fn post_expect(&self, path: &str, body: Value, expected: StatusCode) -> Value {
        let (status, response) = self.call(Method::POST, path, Some(body)).await;
        assert_eq!(status, expected, "POST {path}: {response}");
        response
    }
}

/// Asserts an error response: status and error code.
pub fn assert_error(result: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(result.0, status, "unexpected status, body: {}", result.1);
    assert_eq!(
        result.1["error"]["code"], code,
        "unexpected error body: {}",
        result.1
    );
    assert!(
        result.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {}",
        result.1
    );
}

/// Directory of the real data sets: `FERRY_TEST_DATA` or `../shared/data`.
/// Returns `None` (after saying so) when it is missing; under `CI=true` a
/// missing directory fails the test instead.
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FERRY_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.is_dir() {
        eprintln!("reading real data sets from {}", dir.display());
        return Some(dir);
    }
    let message = format!(
        "real data directory {} is missing; set FERRY_TEST_DATA to the data sets' directory",
        dir.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message} (CI=true makes this a failure)");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// Reads server-sent events from `response` until `count` events arrived
/// or `limit` passed; returns (event, id, data) triples.
pub async fn read_events(
    response: &mut reqwest::Response,
    count: usize,
    limit: Duration,
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + limit;
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count && Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_millis(200), response.chunk()).await;
        match chunk {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(_) => break,
            Err(_) => {}
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = value.trim().to_string();
                }
            }
            // Keep-alive comments have no event.
            if !event.is_empty() {
                events.push((event, id, data));
            }
        }
    }
    events
}

/// Binds port 0 on 127.0.0.1 and returns the port the kernel chose. The
/// port is free again when this returns, so another process could take it
/// before the server that is given it binds it. A start that loses that
/// race fails with the server's port-in-use message.
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|err| panic!("failed to bind a free port on 127.0.0.1: {err}"))
        .port()
}

/// Returns the broker's `/metrics` text.
pub async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .and_then(|response| response.error_for_status())
        .expect("GET /metrics")
        .text()
        .await
        .expect("read /metrics")
}
