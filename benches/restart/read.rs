//! Sequential read of a whole log with `read_raw` and `read`, beside
//! reading its segment files with `std::fs::File::read`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use ferry::log::{decode_header, LogConfig, PartitionLog};

use crate::page_cache::{evict_from_page_cache, files_in, read_files};
use crate::{median, READ_CHUNK_BYTES};

/// Reads of the whole log repeated per measurement.
const READ_REPEATS: usize = 3;

/// Median read times of one method.
pub struct ReadResult {
    pub method: &'static str,
    pub warm: Duration,
    pub cold: Duration,
}

/// Reads the whole of `log` with `read_raw` or `read`, 1 MiB per call,
/// and returns the bytes read.
fn read_log(log: &PartitionLog, decoded: bool) -> anyhow::Result<u64> {
    let end = log.log_end_offset();
    let mut offset = 0;
    let mut bytes = 0u64;
    while offset < end {
        if decoded {
            let batches = log.read(offset, READ_CHUNK_BYTES, u64::MAX)?;
            let last = batches.last().context("read returned no batch")?;
            offset = last.header.next_offset();
            bytes += batches
                .iter()
                .map(|b| b.header.total_len() as u64)
                .sum::<u64>();
            black_box(batches);
        } else {
            let batches = log.read_raw(offset, READ_CHUNK_BYTES, u64::MAX)?;
            let last = batches.last().context("read_raw returned no batch")?;
            offset = decode_header(last)?.next_offset();
            bytes += batches.iter().map(|b| b.len() as u64).sum::<u64>();
            black_box(batches);
        }
    }
    Ok(bytes)
}

/// Times one read of the whole log by `method`. The log is opened before
/// the clock starts and closed after it stops.
fn timed_read(dir: &Path, method: &str, log_bytes: u64) -> anyhow::Result<Duration> {
    let (elapsed, bytes) = if method == "std::fs::File::read" {
        let segment_files: Vec<PathBuf> = files_in(dir)?
            .into_iter()
            .filter(|path| path.extension().is_some_and(|e| e == "log"))
            .collect();
        let start = Instant::now();
        let bytes = read_files(&segment_files)?;
        (start.elapsed(), bytes)
    } else {
        let log = PartitionLog::open(dir, LogConfig::default())?;
        let start = Instant::now();
        let bytes = read_log(&log, method == "read")?;
        let elapsed = start.elapsed();
        log.close()?;
        (elapsed, bytes)
    };
    ensure!(
        bytes == log_bytes,
        "{method} read {bytes} bytes of a {log_bytes}-byte log"
    );
    Ok(elapsed)
}

pub fn measure_reads(dir: &Path, log_bytes: u64) -> anyhow::Result<Vec<ReadResult>> {
    let methods = ["std::fs::File::read", "read_raw", "read"];
    let mut results = Vec::new();
    for method in methods {
        read_files(&files_in(dir)?)?;
        let mut warm = Vec::new();
        for _ in 0..READ_REPEATS {
            warm.push(timed_read(dir, method, log_bytes)?);
        }
        let mut cold = Vec::new();
        for _ in 0..READ_REPEATS {
            evict_from_page_cache(dir)?;
            cold.push(timed_read(dir, method, log_bytes)?);
        }
        results.push(ReadResult {
            method,
            warm: median(warm),
            cold: median(cold),
        });
    }
    Ok(results)
}
