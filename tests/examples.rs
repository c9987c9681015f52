//! Runs every program under `examples/` against a real broker, each on a
//! fresh data directory, and checks its exit status and output. The
//! examples check their own outcome (every task done, every subscriber
//! served, ...) and exit with status 1 otherwise.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::BrokerProcess;

/// Returns the path of example binary `name`, which `cargo build --examples`
/// (run by tools/test) puts beside the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary sits in target/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing; run `cargo build --examples` first (tools/test does)",
        path.display()
    );
    path
}

/// Runs example `name` against a new broker; returns its output.
fn run(name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let output = Command::new(example(name))
        .args(["--url", &broker.url, "--user", "example-user"])
        .output()
        .expect("example starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[test]
fn hello_world() {
    let out = run("hello_world");
    assert!(out.contains(" [x] Sent 'Hello World!'"), "{out}");
    assert!(out.contains(" [x] Received 'Hello World!'"), "{out}");
}

#[test]
fn work_queues() {
    let out = run("work_queues");
    assert!(out.contains("worker 0 took task-"), "{out}");
    assert!(
        out.contains(" [x] All 12 tasks done, 1 after its worker died"),
        "{out}"
    );
    assert!(out.contains("(delivery 2)"), "{out}");
}

#[test]
fn pub_sub() {
    let out = run("pub_sub");
    for subscriber in ["screen", "archive", "alerts"] {
        assert!(
            out.contains(&format!(" [{subscriber}] received [\"log line 1\"")),
            "{out}"
        );
    }
    assert!(
        out.contains(" [x] Every subscriber got every message"),
        "{out}"
    );
}

#[test]
fn routing() {
    let out = run("routing");
    assert!(out.contains(" [errors-to-disk] error: disk full"), "{out}");
    assert!(
        out.contains(" [all-to-screen] info: service started"),
        "{out}"
    );
    assert!(!out.contains("debug:"), "{out}");
}

#[test]
fn topics() {
    let out = run("topics");
    assert!(
        out.contains(r#" [critical] ["kern.critical", "app.critical"]"#),
        "{out}"
    );
    assert!(
        out.contains(r#" [kernel] ["kern.critical", "kern.info", "kern"]"#),
        "{out}"
    );
}

#[test]
fn request_reply() {
    let out = run("request_reply");
    assert!(out.contains(" [.] fib(10) = 55"), "{out}");
    assert!(out.contains(" [.] fib(30) = 832040"), "{out}");
    assert!(out.contains(" [x] No server: gave up after"), "{out}");
}
