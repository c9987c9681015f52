//! MariaDB server for tests: a `mariadbd` child process on a free loopback
//! port, with its data directory, socket and error log under one directory,
//! and a database `ferry` with a user `ferry` (password `ferry`).
//!
//! It uses Debian's `mariadb-server` package (10.11 tested), which
//! `tools/test` installs when it runs as root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::free_loopback_port;

/// Maximum time from spawning `mariadbd` until it accepts clients.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A MariaDB server child process.
pub struct MariaDbProcess {
    child: Child,
    port: u16,
    /// Contains `data/`, `mysql.sock` and `error.log`.
    dir: PathBuf,
}

impl MariaDbProcess {
    /// Creates a data directory under `dir`, starts the server on a free
    /// loopback port and creates the `ferry` database and user.
    ///
    /// Returns `None` after printing how to install MariaDB when its
    /// programs are missing. Under `CI=true` that case panics.
    pub fn start(dir: &Path) -> Option<MariaDbProcess> {
        if let Some(reason) = missing_programs() {
            let message = format!(
                "MariaDB is not available: {reason}. Install it with \
                 `apt-get install mariadb-server` (Debian, Ubuntu), or run tools/test, \
                 which installs it when run as root"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message} (CI=true makes this a failure)");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }
        let dir = std::path::absolute(dir).expect("absolute MariaDB directory");
        fs::create_dir_all(&dir).expect("create the MariaDB directory");
        install(&dir.join("data"));
        let port = free_loopback_port();
        let mut mariadb = MariaDbProcess {
            child: spawn(&dir, port),
            port,
            dir,
        };
        mariadb.wait_ready();
        mariadb.sql(
            "CREATE DATABASE ferry; \
             CREATE USER 'ferry'@'127.0.0.1' IDENTIFIED BY 'ferry'; \
             GRANT ALL ON ferry.* TO 'ferry'@'127.0.0.1';",
        );
        Some(mariadb)
    }

    /// Returns the URL of the `ferry` database for `--mysql-url`.
    pub fn url(&self) -> String {
        format!("mysql://ferry:ferry@127.0.0.1:{}/ferry", self.port)
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts it again on the same port and data,
    /// then waits until it accepts clients. InnoDB recovers committed
    /// transactions from its redo log.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.dir, self.port);
        self.wait_ready();
    }

    /// Runs `statements` as root over the socket and returns the output of
    /// `mariadb --batch --skip-column-names`.
    pub fn sql(&self, statements: &str) -> String {
        let output = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg("--user=root")
            .arg("--batch")
            .arg("--skip-column-names")
            .arg("-e")
            .arg(statements)
            .output()
            .expect("run the mariadb client");
        assert!(
            output.status.success(),
            "`{statements}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mysql.sock")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mariadbd exited during start with {status}; its log:\n{}",
                    fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
                );
            }
            let ping = Command::new("mariadb-admin")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket().display()))
                .arg("--user=root")
                .arg("ping")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if ping.is_ok_and(|status| status.success()) {
                return;
            }
            thread::sleep(READY_POLL_INTERVAL);
        }
        self.kill();
        panic!(
            "mariadbd did not accept clients within {} s; its log:\n{}",
            READY_TIMEOUT.as_secs(),
            fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
        );
    }
}

impl Drop for MariaDbProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Returns why MariaDB cannot run, or `None` when its programs exist.
fn missing_programs() -> Option<String> {
    let missing: Vec<&str> = ["mariadbd", "mariadb-install-db", "mariadb", "mariadb-admin"]
        .into_iter()
        .filter(|program| {
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "command -v {program} || test -x /usr/sbin/{program}"
                ))
                .stdout(Stdio::null())
                .status()
                .map_or(true, |status| !status.success())
        })
        .collect();
    (!missing.is_empty()).then(|| format!("missing programs: {}", missing.join(", ")))
}

/// Attempts at creating a data directory before a test fails.
const INSTALL_ATTEMPTS: usize = 3;

/// Creates the system tables in `data` with `mariadb-install-db`. Tests in
/// one process create their directories one at a time, and a failed
/// attempt is retried on an empty directory: a bootstrap run once failed
/// here, without a message, while two other tests loaded the machine.
fn install(data: &Path) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut failures = Vec::new();
    for _ in 0..INSTALL_ATTEMPTS {
        let _ = fs::remove_dir_all(data);
        let output = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--user=root")
            .arg("--auth-root-authentication-method=socket")
            .arg("--skip-test-db")
            .output()
            .expect("run mariadb-install-db");
        if output.status.success() {
            return;
        }
        failures.push(format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    panic!(
        "mariadb-install-db failed {INSTALL_ATTEMPTS} times:\n{}",
        failures.join("\n---\n")
    );
}

fn spawn(dir: &Path, port: u16) -> Child {
    let program = if Path::new("/usr/sbin/mariadbd").exists() {
        "/usr/sbin/mariadbd"
    } else {
        "mariadbd"
    };
    Command::new(program)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg("--user=root")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--socket={}", dir.join("mysql.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .arg("--skip-name-resolve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mariadbd")
}
