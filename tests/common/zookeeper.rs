//! Standalone ZooKeeper server for tests: a `java` child process on a free
//! loopback port, with its configuration, data and log under one directory.
//!
//! The classpath comes from `FERRY_ZOOKEEPER_CLASSPATH`, which `tools/test`
//! sets, or else the jars of Debian's `zookeeper` package (ZooKeeper 3.8).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_loopback_port;

/// Classpath of Debian's `zookeeper` package. slf4j-simple sends the
/// server's log to stderr, which goes to `zookeeper.log`.
pub const DEFAULT_CLASSPATH: &str =
    "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// Maximum time from spawning java until the server serves requests.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of `zookeeper.log` quoted when the server fails to start.
const LOG_TAIL_LINES: usize = 40;

/// A standalone ZooKeeper server child process.
pub struct ZooKeeperProcess {
    child: Child,
    port: u16,
    /// Contains `zoo.cfg`, `data/` and `zookeeper.log`.
    dir: PathBuf,
    classpath: String,
}

impl ZooKeeperProcess {
    /// Starts ZooKeeper on a free loopback port with its files under `dir`
    /// and waits until it serves requests (see `wait_ready`).
    ///
    /// Returns `None` after printing how to install ZooKeeper when java or a
    /// jar of the classpath is missing. Under `CI=true` that case panics.
    /// Panics when the server exits or does not serve requests within 30 s.
    pub fn start(dir: &Path) -> Option<ZooKeeperProcess> {
        let classpath = std::env::var("FERRY_ZOOKEEPER_CLASSPATH")
            .unwrap_or_else(|_| DEFAULT_CLASSPATH.to_string());
        if let Some(reason) = missing_requirement(&classpath) {
            let message = format!(
                "ZooKeeper is not available: {reason}. Install it with \
                 `apt-get install zookeeper` (Debian, Ubuntu), or run tools/test, \
                 which installs it when run as root"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message} (CI=true makes this a failure)");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }

        let dir = std::path::absolute(dir)
            .unwrap_or_else(|err| panic!("invalid ZooKeeper directory {}: {err}", dir.display()));
        fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|err| panic!("failed to create {}/data: {err}", dir.display()));
        let port = free_loopback_port();
        write_config(&dir, port);

        let log = File::create(dir.join("zookeeper.log")).unwrap_or_else(|err| {
            panic!("failed to create {}/zookeeper.log: {err}", dir.display())
        });
        let child = spawn(&dir, &classpath, log);
        let mut zookeeper = ZooKeeperProcess {
            child,
            port,
            dir,
            classpath,
        };
        zookeeper.wait_ready();
        Some(zookeeper)
    }

    /// Returns the client address, e.g. `127.0.0.1:41234`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Returns the client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts it again on the same port and data
    /// directory, then waits until it serves requests. Panics when another
    /// process took the port while the server was down.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(err) = TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)) {
            panic!(
                "failed to restart ZooKeeper: port {} on 127.0.0.1 was taken by another \
                 process while ZooKeeper was down ({err}); start a new ZooKeeperProcess, \
                 which picks a free port, instead",
                self.port
            );
        }
        // Appending keeps the log of the earlier run for failure messages.
        let log_path = self.dir.join("zookeeper.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|err| panic!("failed to open {}: {err}", log_path.display()));
        self.child = spawn(&self.dir, &self.classpath, log);
        self.wait_ready();
    }

    /// Sends a four-letter-word command (`ruok`, `srvr` or `stat`, the ones
    /// `zoo.cfg` allows) and returns the reply, or `None` when the server
    /// does not reply within 1 s.
    pub fn send_four_letter_word(&self, command: &str) -> Option<String> {
        four_letter_word(self.port, command)
    }

    /// Suspends the server with SIGSTOP. Its sockets stay open but it
    /// processes no requests, like a server stalled by a long GC pause.
    pub fn pause(&self) {
        send_signal(self.child.id(), "STOP");
    }

    /// Resumes a server suspended by `pause` with SIGCONT.
    pub fn resume(&self) {
        send_signal(self.child.id(), "CONT");
    }

    /// Polls every 100 ms until `ruok` returns `imok` and `srvr` reports a
    /// mode. `imok` alone only means that the process listens: ZooKeeper 3.8
    /// returns it about 150 ms before it serves requests, while `srvr` still
    /// returns "This ZooKeeper instance is not currently serving requests".
    /// Panics with the tail of the log when the server exits first or the
    /// 30 s timeout passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let max_polls = READY_TIMEOUT.as_millis() / READY_POLL_INTERVAL.as_millis();
        for _ in 0..max_polls {
            match self.child.try_wait() {
                Ok(Some(status)) => panic!(
                    "ZooKeeper exited during start with {status}{}; last lines of {}:\n{}",
                    self.port_in_use_hint(),
                    self.log_path().display(),
                    self.log_tail()
                ),
                Ok(None) => {}
                Err(err) => panic!("failed to check the ZooKeeper process: {err}"),
            }
            if is_serving(self.port) {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(READY_POLL_INTERVAL);
        }
        self.kill();
        panic!(
            "ZooKeeper did not start serving requests on port {} within {} s; \
             last lines of {}:\n{}",
            self.port,
            READY_TIMEOUT.as_secs(),
            self.log_path().display(),
            self.log_tail()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    fn log_tail(&self) -> String {
        match fs::read_to_string(self.log_path()) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(LOG_TAIL_LINES);
                lines[start..].join("\n")
            }
            Err(err) => format!("(failed to read the log: {err})"),
        }
    }

    fn port_in_use_hint(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        if log.contains("Address already in use") {
            format!(" (port {} is in use by another process)", self.port)
        } else {
            String::new()
        }
    }
}

impl Drop for ZooKeeperProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Returns why ZooKeeper cannot run, or `None` when java and every jar of
/// `classpath` exist. Entries with a `*` wildcard are not checked.
fn missing_requirement(classpath: &str) -> Option<String> {
    let java = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(err) = java {
        return Some(format!("failed to run `java -version`: {err}"));
    }
    let missing: Vec<&str> = classpath
        .split(':')
        .filter(|entry| !entry.is_empty() && !entry.contains('*'))
        .filter(|entry| !Path::new(entry).exists())
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "missing from the classpath: {}",
            missing.join(", ")
        ))
    }
}

/// Writes `dir/zoo.cfg` for a standalone server. The session timeouts in
/// ms are short (2 s minimum) so tests see session expiry quickly, and only
/// the four-letter words that the tests send are allowed.
fn write_config(dir: &Path, port: u16) {
    let config = format!(
        "tickTime=1000\n\
         minSessionTimeout=2000\n\
         maxSessionTimeout=30000\n\
         dataDir={data}\n\
         clientPort={port}\n\
         clientPortAddress=127.0.0.1\n\
         admin.enableServer=false\n\
         4lw.commands.whitelist=ruok,srvr,stat\n",
        data = dir.join("data").display(),
    );
    let path = dir.join("zoo.cfg");
    fs::write(&path, config)
        .unwrap_or_else(|err| panic!("failed to write {}: {err}", path.display()));
}

/// Spawns the server with stdout and stderr going to `log`.
fn spawn(dir: &Path, classpath: &str, log: File) -> Child {
    let stderr = log
        .try_clone()
        .unwrap_or_else(|err| panic!("failed to duplicate the ZooKeeper log handle: {err}"));
    Command::new("java")
        .arg("-Xmx256m")
        .arg("-cp")
        .arg(classpath)
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(dir.join("zoo.cfg"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start java for ZooKeeper: {err}"))
}

/// Returns whether the server on `port` returns `imok` to `ruok` and
/// reports its mode (`Mode: standalone`) in the `srvr` reply.
fn is_serving(port: u16) -> bool {
    four_letter_word(port, "ruok").as_deref() == Some("imok")
        && four_letter_word(port, "srvr").is_some_and(|reply| reply.contains("Mode: "))
}

/// Sends a four-letter-word command such as `ruok` and returns the reply,
/// or `None` when connecting, sending or reading takes over 1 s or fails.
/// A paused server accepts the connection but never replies.
fn four_letter_word(port: u16, command: &str) -> Option<String> {
    let timeout = Duration::from_secs(1);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(command.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply)
}

/// Sends `signal` (a `kill -s` name such as `STOP`) to `pid`. Panics when
/// `kill` fails, because a test that pauses the server relies on it.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|err| panic!("failed to run `kill -s {signal} {pid}`: {err}"));
    assert!(
        status.success(),
        "`kill -s {signal} {pid}` failed with {status}"
    );
}
