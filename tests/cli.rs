//! End-to-end tests of the `ferry` command line: each test starts a real
//! broker process on a free port with its own data directory, and runs the
//! CLI binary against it with its own credentials directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Maximum time a CLI command may run before the test kills it and fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A broker process, killed when dropped.
struct Broker {
    child: Child,
    url: String,
    _data_dir: TempDir,
}

impl Broker {
    fn start() -> Broker {
        let data_dir = tempfile::Builder::new()
            .prefix("cli-broker-")
            .tempdir()
            .unwrap();
        let mut child = Command::new(FERRY)
            .args(["serve", "--data-dir"])
            .arg(data_dir.path())
            .args(["--listen", "127.0.0.1:0", "--fsync", "never"])
            .args(["--password-iterations", "1000"])
            .env_remove("FERRY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start `ferry serve`");

        // The first line of standard output names the address.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = match line.trim().strip_prefix("ferry listening on ") {
            Some(url) => url.to_string(),
            None => {
                let _ = child.kill();
                panic!("unexpected first line from `ferry serve`: {line:?}");
            }
        };
        Broker {
            child,
            url,
            _data_dir: data_dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI pointed at one broker, with a private credentials directory.
struct Cli {
    broker_url: String,
    config_dir: TempDir,
}

impl Cli {
    fn new(broker: &Broker) -> Cli {
        Cli {
            broker_url: broker.url.clone(),
            config_dir: tempfile::Builder::new()
                .prefix("cli-config-")
                .tempdir()
                .unwrap(),
        }
    }

    fn credentials_path(&self) -> std::path::PathBuf {
        self.config_dir.path().join("credentials.json")
    }

    /// Runs `ferry ARGS` with `input` on standard input.
    fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(FERRY)
            .args(args)
            .env("FERRY_BROKER", &self.broker_url)
            .env("FERRY_CONFIG_DIR", self.config_dir.path())
            .env_remove("FERRY_TOKEN")
            .env_remove("FERRY_PASSWORD")
            .env_remove("FERRY_CA_CERT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start the CLI");
        child.stdin.take().unwrap().write_all(input).unwrap();
        wait_with_timeout(child, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, b"")
    }

    /// Runs a command that must succeed and returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_success(args, &output);
        String::from_utf8(output.stdout).unwrap()
    }

    fn ok_json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|err| {
            panic!(
                "`ferry {}` printed no JSON ({err}):\n{stdout}",
                args.join(" ")
            )
        })
    }

    /// Registers and logs in `username`.
    fn log_in(&self, username: &str) {
        self.ok(&["register", username, "--password", "pw-for-tests"]);
        self.ok(&["login", username, "--password", "pw-for-tests"]);
    }
}

/// Waits for `child`, killing it after [`COMMAND_TIMEOUT`]. Output is read
/// on threads so that a full pipe cannot block the child.
fn wait_with_timeout(mut child: Child, args: &[&str]) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let stderr_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).unwrap();
        bytes
    });

    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`ferry {}` did not finish within {COMMAND_TIMEOUT:?}",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout_reader.join().unwrap(),
        stderr: stderr_reader.join().unwrap(),
    }
}

fn assert_success(args: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "`ferry {}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Parses one JSON document per line.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

fn write_jsonl(path: &Path, values: &[Value]) {
    let mut text = String::new();
    for value in values {
        text.push_str(&value.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn login_stores_private_credentials() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);
    cli.log_in("alice");

    let path = cli.credentials_path();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file mode");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(stored["username"], "alice");
    assert!(stored["token"]
        .as_str()
        .is_some_and(|token| !token.is_empty()));
    assert_eq!(stored["brokers"][0], format!("{}/", broker.url));

    let whoami = cli.ok_json(&["whoami"]);
    assert_eq!(whoami["username"], "alice");

    let token = stored["token"].as_str().unwrap().to_string();
    cli.ok(&["logout"]);
    assert!(!path.exists(), "logout leaves the credentials file");

    // The revoked token no longer works.
    let output = cli.run(&["--token", &token, "topic", "list"]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn published_file_reads_back() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);
    cli.log_in("alice");
    cli.ok(&["topic", "create", "events", "--partitions", "1"]);

    let values: Vec<Value> = (0..120)
        .map(|index| match index % 4 {
            0 => json!({ "index": index, "tags": ["a", "b"] }),
            1 => json!(format!("text {index} with \"quotes\" and ünïcode")),
            2 => json!(index),
            _ => Value::Null,
        })
        .collect();
    let input = cli.config_dir.path().join("events.jsonl");
    write_jsonl(&input, &values);

    let summary = cli.ok_json(&[
        "publish",
        "events",
        "--file",
        input.to_str().unwrap(),
        "--batch-size",
        "25",
    ]);
    assert_eq!(summary["messages"], 120);

    let stdout = cli.ok(&[
        "consume",
        "events",
        "--partition",
        "0",
        "--offset",
        "0",
        "--max-messages",
        "1000",
    ]);
    let messages = json_lines(&stdout);
    let read: Vec<Value> = messages
        .iter()
        .map(|message| message["value"].clone())
        .collect();
    assert_eq!(read, values);
    let offsets: Vec<u64> = messages
        .iter()
        .map(|message| message["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (0..120).collect::<Vec<u64>>());
    assert_eq!(messages[0]["producer"], "alice");
}

#[test]
fn publish_arguments_become_values() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);
    cli.log_in("alice");
    cli.ok(&["topic", "create", "args"]);

    let published = cli.ok_json(&[
        "publish",
        "args",
        "42",
        r#"{"a":1}"#,
        "plain text",
        "--key",
        "k",
        "--header",
        "h=v",
    ]);
    assert_eq!(published["offsets"].as_array().unwrap().len(), 3);

    let messages = json_lines(&cli.ok(&["consume", "args"]));
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["value"], json!(42));
    assert_eq!(messages[1]["value"], json!({ "a": 1 }));
    assert_eq!(messages[2]["value"], json!("plain text"));
    assert_eq!(messages[2]["key"], "k");
    assert_eq!(messages[2]["headers"]["h"], "v");
}

#[test]
fn queue_send_receive_ack() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);
    cli.log_in("alice");
    cli.ok(&["queue", "create", "jobs"]);
    cli.ok(&["send", "jobs", r#"{"job":1}"#, r#"{"job":2}"#]);

    let stdout = cli.ok(&["receive", "jobs", "--max-messages", "10", "--ack"]);
    let deliveries = json_lines(&stdout);
    let values: Vec<Value> = deliveries.iter().map(|d| d["value"].clone()).collect();
    assert_eq!(values, vec![json!({ "job": 1 }), json!({ "job": 2 })]);
    assert!(deliveries.iter().all(|d| d["id"].is_string()));
    assert!(deliveries.iter().all(|d| d["delivery_count"] == 1));

    let queue = cli.ok_json(&["queue", "describe", "jobs"]);
    assert_eq!(queue["in_flight"], 0);
    assert_eq!(queue["depth"], 0);
}

#[test]
fn binding_routes_published_messages() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);
    cli.log_in("alice");
    cli.ok(&["topic", "create", "orders"]);
    cli.ok(&["queue", "create", "eu", "--message-ttl-ms", "60000"]);
    let binding = cli.ok_json(&[
        "binding",
        "add",
        "eu",
        "--topic",
        "orders",
        "--pattern",
        "orders.eu.#",
    ]);
    assert_eq!(binding["pattern"], "orders.eu.#");
    let list = cli.ok_json(&["binding", "list", "eu"]);
    assert_eq!(list.as_array().unwrap().len(), 1);

    cli.ok(&["publish", "orders", "1", "--routing-key", "orders.eu.paid"]);
    cli.ok(&["publish", "orders", "2", "--routing-key", "orders.us.paid"]);
    cli.ok(&[
        "publish",
        "orders",
        "3",
        "--routing-key",
        "orders.eu",
        "--ttl-ms",
        "60000",
    ]);
    let stdout = cli.ok(&[
        "receive",
        "eu",
        "--max-messages",
        "10",
        "--wait-ms",
        "5000",
        "--ack",
    ]);
    let mut values: Vec<Value> = json_lines(&stdout)
        .iter()
        .map(|d| d["value"].clone())
        .collect();
    if values.len() < 2 {
        let more = cli.ok(&[
            "receive",
            "eu",
            "--max-messages",
            "10",
            "--wait-ms",
            "5000",
            "--ack",
        ]);
        values.extend(json_lines(&more).iter().map(|d| d["value"].clone()));
    }
    assert_eq!(values, vec![json!(1), json!(3)]);

    let id = binding["id"].to_string();
    cli.ok(&["binding", "remove", "eu", &id]);
    assert_eq!(cli.ok_json(&["binding", "list", "eu"]), json!([]));
    let failed = cli.run(&["publish", "orders", "4", "--ttl-ms", "0"]);
    assert!(!failed.status.success());
}

#[test]
fn subscribe_streams_and_commits() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);
    cli.log_in("alice");
    cli.ok(&["topic", "create", "feed"]);
    cli.ok(&[
        "subscription",
        "create",
        "feed",
        "reader",
        "--start",
        "earliest",
    ]);
    cli.ok(&["publish", "feed", "one", "two", "three"]);

    let stdout = cli.ok(&[
        "subscribe",
        "feed",
        "reader",
        "--count",
        "3",
        "--credits",
        "2",
    ]);
    let values: Vec<Value> = json_lines(&stdout)
        .iter()
        .map(|message| message["value"].clone())
        .collect();
    assert_eq!(values, vec![json!("one"), json!("two"), json!("three")]);

    let subscriptions = cli.ok_json(&["subscription", "list", "feed"]);
    assert_eq!(subscriptions[0]["committed"][0]["offset"], 3);
}

#[test]
fn errors_exit_with_status_one() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);
    cli.log_in("alice");

    let output = cli.run(&["topic", "describe", "missing"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");

    // A bad line stops a file publish and names the line.
    cli.ok(&["topic", "create", "strict"]);
    let output = cli.run_with_input(&["publish", "strict", "--file", "-"], b"1\nnot json\n");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2 of standard input"), "{stderr}");

    // Without a broker, the error names the one that failed.
    let unreachable = cli.run(&["--broker", "http://127.0.0.1:1", "health"]);
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}

#[test]
fn bench_reports_json() {
    let broker = Broker::start();
    let cli = Cli::new(&broker);

    let report = cli.ok_json(&[
        "bench",
        "--messages",
        "300",
        "--size",
        "20",
        "--batch",
        "50",
        "--connections",
        "2",
        "--json",
    ]);
    assert_eq!(report["target"], "broker");
    assert_eq!(report["messages"], 300);
    assert_eq!(report["requests"], 6);
    assert_eq!(report["stopped_by"], "messages");

    let baseline = cli.ok_json(&["bench", "--baseline", "--messages", "300", "--json"]);
    assert_eq!(baseline["target"], "baseline");
    assert_eq!(baseline["messages"], 300);
}

#[test]
fn every_subcommand_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["register"],
        &["login"],
        &["logout"],
        &["whoami"],
        &["topic"],
        &["topic", "create"],
        &["topic", "list"],
        &["topic", "describe"],
        &["topic", "delete"],
        &["publish"],
        &["consume"],
        &["subscription"],
        &["subscription", "create"],
        &["subscription", "list"],
        &["subscription", "delete"],
        &["subscribe"],
        &["pull"],
        &["commit"],
        &["queue"],
        &["queue", "create"],
        &["queue", "list"],
        &["queue", "describe"],
        &["queue", "delete"],
        &["send"],
        &["receive"],
        &["ack"],
        &["nack"],
        &["grant"],
        &["revoke"],
        &["cluster"],
        &["health"],
        &["metrics"],
        &["openapi"],
        &["bench"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = Command::new(FERRY).args(&args).output().unwrap();
        assert_success(&args, &output);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("Usage:"),
            "`ferry {}`:\n{help}",
            args.join(" ")
        );

        // Every option has a description, on its line or indented below it.
        args.pop();
        args.push("-h");
        let output = Command::new(FERRY).args(&args).output().unwrap();
        assert_success(&args, &output);
        let help = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = help.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if !trimmed.starts_with('-') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let same_line = trimmed.trim_end().contains("  ");
            let next_line = lines.get(index + 1).is_some_and(|next| {
                let next_trimmed = next.trim_start();
                next.len() - next_trimmed.len() > indent
                    && !next_trimmed.is_empty()
                    && !next_trimmed.starts_with('-')
            });
            assert!(
                same_line || next_line,
                "`ferry {}` has an option without help: {line}",
                args.join(" ")
            );
        }
    }
}
