//! Storage micro-benchmarks for `ferry::log`, each with baselines measured
//! in the same run, so results can be read as ratios on any machine.
//!
//! - `append_<size>_x100`: `PartitionLog::append` of batches of 100 records
//!   with values of 100 B or 1 KiB, without flushing. The baselines copy the
//!   same encoded bytes with `copy_from_slice` into a pre-touched 64 MiB
//!   buffer, and write them sequentially to a file with one `fdatasync` per
//!   sample (so per sample, not per batch, like the log run without flush).
//! - `read_1KiB_x100`: `read` (decoded) and `read_raw` of a whole 16 MiB log,
//!   1 MiB per call. The baseline copies the same bytes with
//!   `copy_from_slice`, 1 MiB at a time, into one reused buffer.
//!
//! Logs and files live in a temporary directory on the default temp file
//! system, so the numbers include its page cache behaviour.
//! Run: `cargo bench --bench log`. About a minute in all.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry::log::{encode_batch, LogConfig, PartitionLog, ProducerInfo, Record};

const RECORDS_PER_BATCH: usize = 100;
/// Size of the destination buffer of the memory copy baseline.
const COPY_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// Size of the log that the read benchmark reads.
const READ_LOG_BYTES: usize = 16 * 1024 * 1024;
const READ_CHUNK_BYTES: usize = 1024 * 1024;

fn records(value_len: usize) -> Vec<Record> {
    let value = Bytes::from(vec![b'v'; value_len]);
    (0..RECORDS_PER_BATCH)
        .map(|i| Record {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(value.clone()),
            ..Record::default()
        })
        .collect()
}

fn bench_append(c: &mut Criterion, label: &str, value_len: usize) {
    let records = records(value_len);
    let encoded = encode_batch(0, 0, ProducerInfo::default(), &records);
    let mut group = c.benchmark_group(format!("append_{label}_x{RECORDS_PER_BATCH}"));
    group.throughput(Throughput::Bytes(encoded.len() as u64));

    group.bench_function("partition_log", |b| {
        // A fresh log per sample bounds the disk space one sample uses.
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(log.append(&records, 0, ProducerInfo::default()).unwrap());
            }
            start.elapsed()
        })
    });

    group.bench_function("memcpy", |b| {
        let mut buffer = vec![1u8; COPY_BUFFER_BYTES];
        let mut position = 0;
        b.iter(|| {
            if position + encoded.len() > buffer.len() {
                position = 0;
            }
            buffer[position..position + encoded.len()].copy_from_slice(black_box(&encoded));
            position += encoded.len();
        })
    });

    group.bench_function("file_write_fdatasync", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut file = File::create(dir.path().join("baseline")).unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(black_box(&encoded)).unwrap();
            }
            file.sync_data().unwrap();
            start.elapsed()
        })
    });
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let records = records(1024);
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut log_bytes = 0;
    while log_bytes < READ_LOG_BYTES {
        log.append(&records, 0, ProducerInfo::default()).unwrap();
        log_bytes = log.segments().iter().map(|s| s.size_bytes as usize).sum();
    }
    let end = log.log_end_offset();

    let mut group = c.benchmark_group(format!("read_1KiB_x{RECORDS_PER_BATCH}"));
    group.throughput(Throughput::Bytes(log_bytes as u64));
    group.bench_function("partition_log_read", |b| {
        b.iter(|| {
            let mut offset = 0;
            while offset < end {
                let batches = log.read(offset, READ_CHUNK_BYTES, u64::MAX).unwrap();
                offset = batches.last().unwrap().header.next_offset();
                black_box(batches);
            }
        })
    });
    group.bench_function("partition_log_read_raw", |b| {
        b.iter(|| {
            let mut offset = 0;
            while offset < end {
                let batches = log.read_raw(offset, READ_CHUNK_BYTES, u64::MAX).unwrap();
                let last = ferry::log::decode_header(batches.last().unwrap()).unwrap();
                offset = last.next_offset();
                black_box(batches);
            }
        })
    });
    group.bench_function("memcpy", |b| {
        // Like a reader that consumes each chunk before the next call, the
        // copies reuse one chunk-sized destination.
        let source = vec![1u8; log_bytes];
        let mut destination = vec![0u8; READ_CHUNK_BYTES];
        b.iter(|| {
            for from in source.chunks(READ_CHUNK_BYTES) {
                destination[..from.len()].copy_from_slice(black_box(from));
                black_box(&destination);
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_append(c, "100B", 100);
    bench_append(c, "1KiB", 1024);
    bench_read(c);
}

criterion_group! {
    name = log_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = benches
}
criterion_main!(log_benches);
