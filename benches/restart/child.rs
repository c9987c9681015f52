//! The child processes of the restart benchmark: this binary run again
//! with `FERRY_RESTART_BENCH_CHILD` set, to fill a log and stop cleanly, or
//! to leave an unflushed tail and be killed.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use ferry::log::{encoded_batch_len, LogConfig, PartitionLog, ProducerInfo, Record};

use crate::{MIB, RECORDS_PER_BATCH, VALUE_BYTES};

/// Selects the child role: `fill` or `crash`.
pub const CHILD_ROLE_VAR: &str = "FERRY_RESTART_BENCH_CHILD";
const CHILD_DIR_VAR: &str = "FERRY_RESTART_BENCH_LOG_DIR";
const CHILD_BYTES_VAR: &str = "FERRY_RESTART_BENCH_BYTES";
/// Last line a child prints once its log is in the state to measure.
const READY_LINE: &str = "ready";
/// Minimum bytes in the active segment after the fill, so that a full scan
/// of it has half a default segment to read.
const MIN_ACTIVE_SEGMENT_BYTES: u64 = 64 * MIB;
/// Bytes the unclean-stop child appends after its checkpoint, unflushed.
const TAIL_BYTES: u64 = 4 * MIB;
/// Maximum time a child may take to fill the log before it gives up.
const FILL_TIME_LIMIT: Duration = Duration::from_secs(600);
/// Maximum time an unclean-stop child waits for its SIGKILL before it exits.
const KILL_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// Runs the child role `role` named by `CHILD_ROLE_VAR`.
pub fn run_child(role: &str) -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::var(CHILD_DIR_VAR).with_context(|| format!("missing {CHILD_DIR_VAR}"))?,
    );
    match role {
        "fill" => {
            let bytes: u64 = std::env::var(CHILD_BYTES_VAR)
                .with_context(|| format!("missing {CHILD_BYTES_VAR}"))?
                .parse()
                .with_context(|| {
                    format!("invalid {CHILD_BYTES_VAR}: expected a number of bytes")
                })?;
            fill_and_close(&dir, bytes)
        }
        "crash" => checkpoint_append_tail_and_wait(&dir),
        other => bail!("unknown child role {other:?}: expected `fill` or `crash`"),
    }
}

fn records() -> Vec<Record> {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    (0..RECORDS_PER_BATCH)
        .map(|i| Record {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(value.clone()),
            ..Record::default()
        })
        .collect()
}

fn total_bytes(log: &PartitionLog) -> u64 {
    log.segments().iter().map(|s| s.size_bytes).sum()
}

fn active_segment_bytes(log: &PartitionLog) -> u64 {
    log.segments().last().map_or(0, |s| s.size_bytes)
}

/// Appends until the log contains `target_bytes` and its active segment at
/// least `MIN_ACTIVE_SEGMENT_BYTES`, then closes it: a clean stop.
fn fill_and_close(dir: &Path, target_bytes: u64) -> anyhow::Result<()> {
    let log = PartitionLog::open(dir, LogConfig::default())?;
    let records = records();
    let start = Instant::now();
    let mut appended: u64 = 0;
    loop {
        if appended >= target_bytes && active_segment_bytes(&log) >= MIN_ACTIVE_SEGMENT_BYTES {
            break;
        }
        ensure!(
            start.elapsed() < FILL_TIME_LIMIT,
            "filling {} timed out after {FILL_TIME_LIMIT:?} at {appended} bytes",
            dir.display()
        );
        let info = log.append(&records, 0, ProducerInfo::default())?;
        let next = log.log_end_offset();
        ensure!(next == info.last_offset + 1, "offsets are not dense");
        appended += encoded_batch_len(&records) as u64;
    }
    log.close()?;
    let seconds = start.elapsed().as_secs_f64();
    println!("end_offset={}", log.log_end_offset());
    println!("log_bytes={}", total_bytes(&log));
    println!("segments={}", log.segments().len());
    println!("active_bytes={}", active_segment_bytes(&log));
    println!("fill_seconds={seconds}");
    println!("{READY_LINE}");
    Ok(())
}

/// Opens the log, flushes, writes the recovery checkpoint, appends
/// `TAIL_BYTES` without flushing, reports the offsets and waits to be
/// killed.
fn checkpoint_append_tail_and_wait(dir: &Path) -> anyhow::Result<()> {
    let log = PartitionLog::open(dir, LogConfig::default())?;
    log.flush()?;
    log.write_checkpoint()?;
    let checkpoint_offset = log.log_end_offset();
    let records = records();
    let mut appended: u64 = 0;
    while appended < TAIL_BYTES {
        log.append(&records, 0, ProducerInfo::default())?;
        appended += encoded_batch_len(&records) as u64;
    }
    println!("checkpoint_offset={checkpoint_offset}");
    println!("flushed_offset={}", log.flushed_offset());
    println!("end_offset={}", log.log_end_offset());
    println!("active_bytes={}", active_segment_bytes(&log));
    let segments = log.segments();
    let active = segments.last().context("log has no segment")?;
    println!("active_file_bytes={}", fs::metadata(&active.path)?.len());
    println!("{READY_LINE}");
    std::io::stdout().flush()?;
    std::thread::sleep(KILL_WAIT_LIMIT);
    bail!("no SIGKILL arrived within {KILL_WAIT_LIMIT:?}")
}

/// Values a child printed before its ready line.
pub struct ChildReport(HashMap<String, String>);

impl ChildReport {
    pub fn u64(&self, key: &str) -> u64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child reported no valid {key}: {:?}", self.0))
    }

    pub fn f64(&self, key: &str) -> f64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child reported no valid {key}: {:?}", self.0))
    }
}

/// Runs this binary as a child in `role` on `dir` and reads its report. With
/// `kill`, sends it SIGKILL once it is ready and checks that the signal
/// ended it. Otherwise waits for it to exit with success.
pub fn run_child_process(
    role: &str,
    dir: &Path,
    target_bytes: u64,
    kill: bool,
) -> anyhow::Result<ChildReport> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ROLE_VAR, role)
        .env(CHILD_DIR_VAR, dir)
        .env(CHILD_BYTES_VAR, target_bytes.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("failed to start the child process")?;
    let stdout = child.stdout.take().context("child has no stdout")?;
    let mut values = HashMap::new();
    let mut ready = false;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == READY_LINE {
            ready = true;
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            values.insert(key.to_string(), value.to_string());
        }
    }
    if kill && ready {
        // SAFETY: `kill` only sends a signal. The child has not been waited
        // for, so its PID cannot have been reused.
        let code = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        ensure!(
            code == 0,
            "kill failed: {}",
            std::io::Error::last_os_error()
        );
    }
    let status = child.wait()?;
    ensure!(ready, "child {role} exited before it was ready: {status}");
    if kill {
        ensure!(
            status.signal() == Some(libc::SIGKILL),
            "child {role} was not ended by SIGKILL: {status}"
        );
    } else {
        ensure!(status.success(), "child {role} failed: {status}");
    }
    Ok(ChildReport(values))
}
