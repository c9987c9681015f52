//! Restart and sequential read benchmarks for `ferry::log` on one partition
//! holding 1 GiB and then 4 GiB, each beside baselines measured in the same
//! run. Prints Markdown tables for `docs/benchmarks.md`.
//!
//! Restart is the time `PartitionLog::open` takes in four cases:
//!
//! - empty log (baseline: the fixed cost of an open);
//! - after a clean stop: a child process fills the log with batches of 100
//!   records of 1 KiB until it contains the target size and its active
//!   segment contains at least 64 MiB, then calls `close` and exits;
//! - after an unclean stop: a child process opens that log, flushes, writes
//!   the recovery checkpoint, appends a 4 MiB tail without flushing it and
//!   is killed with SIGKILL by this process;
//! - the same unclean stop with the `recovery-checkpoint` file deleted
//!   before the open (baseline: the scan of the whole active segment and of
//!   every batch header, which is what recovery cost before checkpoints).
//!
//! SIGKILL ends the process but not the kernel, so the page cache keeps the
//! unflushed tail and the open must find every appended offset. The first
//! open after a stop also syncs that tail. The repeated opens that follow
//! it find the same files, already synced: a clean-stop open is followed by
//! an untimed `close`, and an unclean-stop open by a drop without `close`.
//!
//! Sequential read (1 GiB only) reads the whole log with `read_raw` and with
//! `read` (decoded, CRC checked), 1 MiB per call, beside reading the same
//! segment files with `std::fs::File::read` into a 1 MiB buffer.
//!
//! Warm figures run with the files in the page cache. Cold figures first
//! evict this benchmark's files, and only those, with
//! `posix_fadvise(POSIX_FADV_DONTNEED)` after syncing them, and report the
//! share of their pages that `mincore` still finds resident. The disk is
//! virtual, so a host-side cache may still serve "cold" reads.
//!
//! The children are this binary, run again with `FERRY_RESTART_BENCH_CHILD`
//! set. Data goes to `target/restart-bench` (up to about 4.2 GiB), which is
//! deleted at the end. Run: `cargo bench --bench restart` (about a minute
//! plus the build).

// A bench target's root looks for modules beside it, in `benches/`.
#[path = "restart/child.rs"]
mod child;
#[path = "restart/page_cache.rs"]
mod page_cache;
#[path = "restart/read.rs"]
mod read;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use ferry::log::{LogConfig, PartitionLog};

use child::{run_child, run_child_process, ChildReport, CHILD_ROLE_VAR};
use page_cache::{evict_from_page_cache, files_in, read_files, resident_share};
use read::{measure_reads, ReadResult};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Log sizes measured, in bytes of batches.
const LOG_SIZES: [u64; 2] = [GIB, 4 * GIB];
const RECORDS_PER_BATCH: usize = 100;
const VALUE_BYTES: usize = 1024;
const WARM_REPEATS: usize = 5;
const COLD_REPEATS: usize = 3;
const READ_CHUNK_BYTES: usize = 1024 * 1024;

fn main() -> anyhow::Result<()> {
    if let Ok(role) = std::env::var(CHILD_ROLE_VAR) {
        return run_child(&role);
    }
    // `cargo bench` passes `--bench`. Without it (`cargo test --benches`)
    // the benchmark would write gigabytes, so it only checks that it runs.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("restart: skipped, run it with `cargo bench --bench restart`");
        return Ok(());
    }
    run_parent()
}

// ---------------------------------------------------------------------------
// Restart

/// Step after each timed open.
#[derive(Clone, Copy, PartialEq)]
enum AfterOpen {
    /// `close`: the next open finds a clean stop.
    Close,
    /// A drop without `close`: the next open finds an unclean stop.
    Drop,
}

/// Timings of the opens of one log state.
struct OpenTimings {
    first: Duration,
    warm_median: Duration,
    cold_median: Duration,
    /// Largest share of the files' pages resident after an eviction.
    cold_resident: f64,
    resumed: bool,
}

/// Opens the log in `dir`, checks its log end offset, and returns the time
/// the open took and whether it resumed at a checkpoint.
fn timed_open(dir: &Path, expected_end: u64, after: AfterOpen) -> anyhow::Result<(Duration, bool)> {
    let start = Instant::now();
    let log = PartitionLog::open(dir, LogConfig::default())?;
    let elapsed = start.elapsed();
    ensure!(
        log.log_end_offset() == expected_end,
        "log end offset after open is {}, expected {expected_end}",
        log.log_end_offset()
    );
    let resumed = log.resumed_at_checkpoint();
    if after == AfterOpen::Close {
        log.close()?;
    }
    drop(log);
    Ok((elapsed, resumed))
}

/// Times the first open of `dir` as the child left it, then warm and cold
/// repeats of the same state. Every open must find `expected_end`, and
/// whether it resumed at a checkpoint must match `expected_resumed`, or the
/// first open when that is `None`.
fn measure_opens(
    dir: &Path,
    expected_end: u64,
    expected_resumed: Option<bool>,
    after: AfterOpen,
) -> anyhow::Result<OpenTimings> {
    let (first, resumed) = timed_open(dir, expected_end, after)?;
    let expected_resumed = expected_resumed.unwrap_or(resumed);
    let check = |(elapsed, resumed): (Duration, bool)| -> anyhow::Result<Duration> {
        ensure!(
            resumed == expected_resumed,
            "open of {} resumed at a checkpoint: {resumed}, expected {expected_resumed}",
            dir.display()
        );
        Ok(elapsed)
    };
    check((first, resumed))?;
    let mut warm = Vec::new();
    for _ in 0..WARM_REPEATS {
        warm.push(check(timed_open(dir, expected_end, after)?)?);
    }
    let mut cold = Vec::new();
    let mut cold_resident: f64 = 0.0;
    for _ in 0..COLD_REPEATS {
        evict_from_page_cache(dir)?;
        cold_resident = cold_resident.max(resident_share(dir)?);
        cold.push(check(timed_open(dir, expected_end, after)?)?);
    }
    Ok(OpenTimings {
        first,
        warm_median: median(warm),
        cold_median: median(cold),
        cold_resident,
        resumed,
    })
}

/// Restart timings of one log size.
struct SizeResult {
    log_bytes: u64,
    segments: u64,
    fill_seconds: f64,
    empty: OpenTimings,
    clean: OpenTimings,
    unclean: OpenTimings,
    unclean_active_bytes: u64,
    /// Length of the active segment's file at the unclean stop, with the
    /// allocated zero tail.
    unclean_active_file_bytes: u64,
    full_scan: OpenTimings,
    full_scan_active_bytes: u64,
    reads: Option<Vec<ReadResult>>,
}

/// Checks that an unclean-stop child checkpointed at `start_offset`, the
/// end it found, and that its tail stayed unflushed by the log.
fn check_unflushed_tail(report: &ChildReport, start_offset: u64) -> anyhow::Result<()> {
    let checkpoint = report.u64("checkpoint_offset");
    ensure!(
        checkpoint == start_offset,
        "checkpoint at offset {checkpoint}, expected {start_offset}"
    );
    let flushed = report.u64("flushed_offset");
    ensure!(
        flushed == checkpoint,
        "the log flushed the tail up to offset {flushed}, past the checkpoint at {checkpoint}"
    );
    ensure!(
        report.u64("end_offset") > checkpoint,
        "no tail was appended"
    );
    Ok(())
}

fn measure_size(root: &Path, target_bytes: u64) -> anyhow::Result<SizeResult> {
    let empty_dir = root.join("empty");
    PartitionLog::open(&empty_dir, LogConfig::default())?.close()?;
    let empty = measure_opens(&empty_dir, 0, None, AfterOpen::Close)?;

    let dir = root.join("partition");
    let filled = run_child_process("fill", &dir, target_bytes, false)?;
    let end = filled.u64("end_offset");
    let clean = measure_opens(&dir, end, Some(true), AfterOpen::Close)?;

    let reads = if target_bytes == LOG_SIZES[0] {
        Some(measure_reads(&dir, filled.u64("log_bytes"))?)
    } else {
        None
    };

    // The cold opens evicted the files. A broker that crashed would find
    // them in the page cache, so the first open after each stop does too.
    read_files(&files_in(&dir)?)?;
    let crashed = run_child_process("crash", &dir, 0, true)?;
    check_unflushed_tail(&crashed, end)?;
    let unclean = measure_opens(&dir, crashed.u64("end_offset"), Some(true), AfterOpen::Drop)?;

    read_files(&files_in(&dir)?)?;
    let crashed_again = run_child_process("crash", &dir, 0, true)?;
    check_unflushed_tail(&crashed_again, crashed.u64("end_offset"))?;
    fs::remove_file(dir.join(ferry::log::CHECKPOINT_FILE_NAME))
        .context("failed to delete the recovery checkpoint")?;
    let full_scan = measure_opens(
        &dir,
        crashed_again.u64("end_offset"),
        Some(false),
        AfterOpen::Drop,
    )?;

    fs::remove_dir_all(root)?;
    Ok(SizeResult {
        log_bytes: filled.u64("log_bytes"),
        segments: filled.u64("segments"),
        fill_seconds: filled.f64("fill_seconds"),
        empty,
        clean,
        unclean,
        unclean_active_bytes: crashed.u64("active_bytes"),
        unclean_active_file_bytes: crashed.u64("active_file_bytes"),
        full_scan,
        full_scan_active_bytes: crashed_again.u64("active_bytes"),
        reads,
    })
}

// ---------------------------------------------------------------------------
// Report

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

fn ratio(numerator: Duration, denominator: Duration) -> String {
    format!("{:.2}", numerator.as_secs_f64() / denominator.as_secs_f64())
}

/// Picks the timings of one case out of the results of a log size.
type TimingsOf = fn(&SizeResult) -> &OpenTimings;

fn run_parent() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/restart-bench");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut results = Vec::new();
    for size in LOG_SIZES {
        results.push(measure_size(&root, size)?);
    }
    let _ = fs::remove_dir_all(&root);
    let (small, large) = (&results[0], &results[1]);

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Run started {started} on {cores} cores, Linux {}.",
        kernel.trim()
    );
    println!();
    for result in &results {
        println!(
            "Log of {} bytes in {} segments: filled and closed in {:.1} s ({:.0} MiB/s). \
             Active segment at the unclean stop: {:.1} MiB of batches in a {:.1} MiB file \
             with checkpoint, {:.1} MiB of batches for the full scan.",
            result.log_bytes,
            result.segments,
            result.fill_seconds,
            result.log_bytes as f64 / MIB as f64 / result.fill_seconds,
            result.unclean_active_bytes as f64 / MIB as f64,
            result.unclean_active_file_bytes as f64 / MIB as f64,
            result.full_scan_active_bytes as f64 / MIB as f64,
        );
    }
    println!();
    println!(
        "| case | 1 GiB first open ms | 1 GiB warm median ms | 4 GiB first open ms | \
         4 GiB warm median ms | 4 GiB / 1 GiB (warm) | resumed at checkpoint |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows: [(&str, TimingsOf); 4] = [
        ("empty log (baseline)", |r| &r.empty),
        ("clean stop", |r| &r.clean),
        ("unclean stop (SIGKILL), checkpoint", |r| &r.unclean),
        ("unclean stop, checkpoint deleted (baseline)", |r| {
            &r.full_scan
        }),
    ];
    for (label, timings) in rows {
        let (a, b) = (timings(small), timings(large));
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            ms(a.first),
            ms(a.warm_median),
            ms(b.first),
            ms(b.warm_median),
            ratio(b.warm_median, a.warm_median),
            if a.resumed { "yes" } else { "no" },
        );
    }
    let recovery = |r: &SizeResult, pick: fn(&OpenTimings) -> Duration| {
        pick(&r.unclean).saturating_sub(pick(&r.clean))
    };
    let warm_recovery = (
        recovery(small, |t| t.warm_median),
        recovery(large, |t| t.warm_median),
    );
    println!(
        "| unclean minus clean (recovery of the tail) | | {} | | {} | {} | |",
        ms(warm_recovery.0),
        ms(warm_recovery.1),
        ratio(warm_recovery.1, warm_recovery.0),
    );
    println!();
    println!(
        "| case (cold cache) | 1 GiB median ms | 4 GiB median ms | 4 GiB / 1 GiB | \
         max resident after eviction |"
    );
    println!("|---|---|---|---|---|");
    for (label, timings) in rows {
        let (a, b) = (timings(small), timings(large));
        println!(
            "| {label} | {} | {} | {} | {:.1}% |",
            ms(a.cold_median),
            ms(b.cold_median),
            ratio(b.cold_median, a.cold_median),
            100.0 * a.cold_resident.max(b.cold_resident),
        );
    }
    let cold_recovery = (
        recovery(small, |t| t.cold_median),
        recovery(large, |t| t.cold_median),
    );
    println!(
        "| unclean minus clean (recovery of the tail) | {} | {} | {} | |",
        ms(cold_recovery.0),
        ms(cold_recovery.1),
        ratio(cold_recovery.1, cold_recovery.0),
    );
    println!();
    println!(
        "| read of the 1 GiB log | warm GiB/s | cold GiB/s | warm / std::fs | cold / std::fs |"
    );
    println!("|---|---|---|---|---|");
    let reads = small.reads.as_ref().context("no read results")?;
    let baseline = &reads[0];
    for read in reads {
        let rate = |d: Duration| small.log_bytes as f64 / GIB as f64 / d.as_secs_f64();
        println!(
            "| {} | {:.2} | {:.2} | {} | {} |",
            read.method,
            rate(read.warm),
            rate(read.cold),
            ratio(baseline.warm, read.warm),
            ratio(baseline.cold, read.cold),
        );
    }
    Ok(())
}
