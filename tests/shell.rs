//! `ferry shell` driven through its standard input like a person at the
//! keyboard: every menu entry, and subscriptions that deliver while the
//! menu stays open.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::BrokerProcess;

/// A running shell with its input and output lines.
struct Shell {
    child: Child,
    input: Option<ChildStdin>,
    output: Receiver<String>,
    seen: Vec<String>,
    /// Where the lines of the current menu choice start in `seen`.
    mark: usize,
    _config: tempfile::TempDir,
}

impl Shell {
    fn start(url: &str) -> Shell {
        let config = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("shell")
            .env("FERRY_BROKER", url)
            .env("FERRY_CONFIG_DIR", config.path())
            .env_remove("FERRY_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("failed to start the shell");
        let input = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, output) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Shell {
            child,
            input: Some(input),
            output,
            seen: Vec::new(),
            mark: 0,
            _config: config,
        }
    }

    /// Types `lines`, one per line.
    fn type_lines(&mut self, lines: &[&str]) {
        let input = self.input.as_mut().expect("input is open");
        for line in lines {
            writeln!(input, "{line}").unwrap();
        }
        input.flush().unwrap();
    }

    /// Closes the shell's standard input.
    fn close_input(&mut self) {
        self.input = None;
    }

    /// Waits until a line containing `text` appears since the current
    /// menu choice; returns it. Background output may come in any order
    /// with the choice's own lines.
    fn expect(&mut self, text: &str) -> String {
        if let Some(line) = self.seen[self.mark..]
            .iter()
            .find(|line| line.contains(text))
        {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "the shell printed no line with {text:?}; its output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the menu number of `entry`, read from the printed menu.
fn entry(shell: &mut Shell, name: &str) -> String {
    let line = shell
        .seen
        .iter()
        .rev()
        .find(|line| line.ends_with(&format!(") {name}")))
        .cloned()
        .unwrap_or_else(|| panic!("menu entry {name:?} not printed"));
    line.split(')').next().unwrap().trim().to_string()
}

#[test]
fn shell_covers_every_menu_entry() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let mut shell = Shell::start(&broker.url);
    shell.expect("-- not logged in --");
    shell.expect(") Exit");
    let choose = |shell: &mut Shell, name: &str, answers: &[&str]| {
        let number = entry(shell, name);
        shell.mark = shell.seen.len();
        shell.type_lines(&[&number]);
        shell.type_lines(answers);
    };

    choose(&mut shell, "Register", &["carol", "carol-password"]);
    shell.expect("registered carol");
    choose(&mut shell, "Log in", &["carol", "wrong"]);
    shell.expect("error:");
    choose(&mut shell, "Log in", &["carol", "carol-password"]);
    shell.expect("logged in as carol until");
    shell.expect("-- logged in as carol --");

    choose(&mut shell, "Create queue", &["jobs"]);
    shell.expect("created queue jobs");
    choose(&mut shell, "List queues", &[]);
    shell.expect("jobs  depth 0");
    choose(&mut shell, "Send to a queue", &["jobs", r#"{"n": 1}"#]);
    shell.expect("stored at partition 0 offset 0");
    choose(&mut shell, "Receive from a queue", &["jobs"]);
    shell.expect(r#"[jobs] {"n":1} (from carol)"#);

    // A queue subscription prints while the menu waits for input.
    choose(&mut shell, "Subscribe to a queue", &["jobs"]);
    shell.expect("subscribed to queue jobs");
    choose(&mut shell, "Send to a queue", &["jobs", "plain text"]);
    shell.expect(r#"[jobs] "plain text" (from carol)"#);
    choose(&mut shell, "Unsubscribe from a queue", &["jobs"]);
    shell.expect("unsubscribed from queue jobs");
    choose(&mut shell, "Unsubscribe from a queue", &["jobs"]);
    shell.expect("error: not subscribed to queue jobs");

    choose(&mut shell, "Create topic", &["news"]);
    shell.expect("created topic news");
    choose(&mut shell, "List topics", &[]);
    shell.expect("news  partitions 1");
    choose(&mut shell, "Subscribe to a topic", &["news"]);
    shell.expect("subscribed to topic news");
    choose(&mut shell, "Publish to a topic", &["news", "[1, 2]"]);
    shell.expect("stored at partition 0 offset 0");
    shell.expect("[news] collected a message");
    choose(&mut shell, "Show collected topic messages", &["news"]);
    shell.expect("[news] [1,2] (from carol)");

    choose(&mut shell, "Delete topic", &["news"]);
    shell.expect("deleted topic news");
    choose(&mut shell, "Delete queue", &["jobs"]);
    shell.expect("deleted queue jobs");
    choose(&mut shell, "Delete queue", &["jobs"]);
    shell.expect("error: queue `jobs` not found");
    shell.type_lines(&["99"]);
    shell.expect("error: `99` is not a menu number");
    choose(&mut shell, "Exit", &[]);
    shell.expect("Bye");
    let status = shell.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn shell_exits_at_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let mut shell = Shell::start(&broker.url);
    shell.expect(") Exit");
    // Closing standard input in the middle of a question ends the shell.
    shell.type_lines(&["4"]);
    shell.expect("Queue name:");
    shell.close_input();
    shell.expect("Bye");
    assert!(shell.child.wait().unwrap().success());
}
