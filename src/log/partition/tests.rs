//! Tests of `PartitionLog` against real files in temporary directories.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::log::batch::{encode_batch, HEADER_LEN};
use crate::log::index::decode_entries;
use crate::log::{BatchError, RecordBatch};

const NO_LIMIT: u64 = u64::MAX;

fn config(segment_bytes: u64, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
    }
}

fn record(value: &str) -> Record {
    Record {
        timestamp_ms: 1_700_000_000_000,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        ..Record::default()
    }
}

/// Appends one batch of `count` records whose values are `"{label}-{i}"`.
fn append_values(log: &PartitionLog, label: &str, count: usize, epoch: u32) -> AppendInfo {
    let records: Vec<Record> = (0..count)
        .map(|i| record(&format!("{label}-{i}")))
        .collect();
    log.append(&records, epoch, ProducerInfo::default())
        .unwrap()
}

fn read_all(log: &PartitionLog) -> Vec<RecordBatch> {
    log.read(log.log_start_offset(), usize::MAX, NO_LIMIT)
        .unwrap()
}

fn values(batch: &RecordBatch) -> Vec<String> {
    batch
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
        .collect()
}

/// Copies the segment files of `from` into the empty directory `to`.
fn copy_segments(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_str().unwrap().starts_with('0') {
            fs::copy(entry.path(), to.join(name)).unwrap();
        }
    }
}

#[test]
fn partition_log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
    assert_send_sync::<LogError>();
}

#[test]
fn open_empty_dir_creates_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let log = PartitionLog::open(&path, config(4096, 64)).unwrap();

    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.flushed_offset(), 0);
    let segments = log.segments();
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].base_offset, 0);
    assert_eq!(segments[0].size_bytes, 0);
    assert!(path.join("00000000000000000000.log").is_file());
    assert!(path.join("00000000000000000000.index").is_file());
    assert!(log.read(0, 1024, NO_LIMIT).unwrap().is_empty());
}

#[test]
fn append_and_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut full = record("full");
    full.key = Some(Bytes::from_static(b"k"));
    full.routing_key = Some(Bytes::from_static(b"orders.eu"));
    full.producer = Some(Bytes::from_static(b"alice"));
    full.ttl_ms = 60_000;
    full.attributes = 1;
    full.headers = vec![("trace".into(), Bytes::from_static(b"abc"))];
    full.timestamp_ms = 1_700_000_000_500;

    let first = log
        .append(&[record("a"), full.clone()], 0, ProducerInfo::default())
        .unwrap();
    let second = append_values(&log, "b", 3, 0);

    assert_eq!(
        first,
        AppendInfo {
            base_offset: 0,
            last_offset: 1,
            timestamp_ms: 1_700_000_000_500
        }
    );
    assert_eq!(second.base_offset, 2);
    assert_eq!(second.last_offset, 4);
    assert_eq!(log.log_end_offset(), 5);

    let batches = read_all(&log);
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].records[1], Record { offset: 1, ..full });
    let offsets: Vec<u64> = batches[1].records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [2, 3, 4]);
}

#[test]
fn read_rejects_out_of_range_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    append_values(&log, "a", 2, 0);

    assert!(log.read(2, 1024, NO_LIMIT).unwrap().is_empty());
    let err = log.read(3, 1024, NO_LIMIT).unwrap_err();
    assert!(matches!(
        err,
        LogError::OffsetOutOfRange {
            offset: 3,
            log_start_offset: 0,
            log_end_offset: 2
        }
    ));
}

#[test]
fn read_respects_max_bytes_and_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..5 {
        append_values(&log, &format!("batch{i}"), 2, 0);
    }
    let batch_len = log.read_raw(0, 1, NO_LIMIT).unwrap()[0].len();

    // One byte still returns the first batch whole.
    assert_eq!(log.read(3, 1, NO_LIMIT).unwrap().len(), 1);
    assert_eq!(log.read(3, 1, NO_LIMIT).unwrap()[0].header.base_offset, 2);
    // Room for two and a half batches returns two.
    assert_eq!(log.read(0, batch_len * 5 / 2, NO_LIMIT).unwrap().len(), 2);
    assert_eq!(log.read(0, batch_len * 2, NO_LIMIT).unwrap().len(), 2);
    // max_offset stops before the batch starting at 6, even inside a batch.
    let bases: Vec<u64> = log
        .read(0, usize::MAX, 6)
        .unwrap()
        .iter()
        .map(|b| b.header.base_offset)
        .collect();
    assert_eq!(bases, [0, 2, 4]);
    assert_eq!(log.read(0, usize::MAX, 5).unwrap().len(), 3);
    // A batch below max_offset is returned even when max_offset is inside it.
    assert_eq!(log.read(5, usize::MAX, 5).unwrap().len(), 1);
}

#[test]
fn read_at_every_offset_finds_containing_batch() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of a few KiB and an entry every 100 bytes exercise index
    // lookups inside segments and the step from one segment to the next.
    let log = PartitionLog::open(dir.path(), config(4000, 100)).unwrap();
    let mut appended = Vec::new();
    for i in 0..300usize {
        let count = 1 + i % 5;
        let records: Vec<Record> = (0..count)
            .map(|j| record(&"x".repeat((i * 7 + j * 13) % 90)))
            .collect();
        appended.push(log.append(&records, 0, ProducerInfo::default()).unwrap());
    }
    assert!(log.segments().len() > 3, "expected several segments");
    let index_entries: usize = log
        .segments()
        .iter()
        .map(|s| {
            decode_entries(&fs::read(s.path.with_extension("index")).unwrap())
                .unwrap()
                .len()
        })
        .sum();
    assert!(index_entries > 50, "only {index_entries} index entries");

    for info in &appended {
        for offset in info.base_offset..=info.last_offset {
            let batches = log.read(offset, 1, NO_LIMIT).unwrap();
            assert_eq!(batches.len(), 1, "offset {offset}");
            assert_eq!(
                batches[0].header.base_offset, info.base_offset,
                "offset {offset}"
            );
            assert_eq!(
                batches[0].header.last_offset(),
                info.last_offset,
                "offset {offset}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn read_finds_batch_for_any_sizes(
        sizes in proptest::collection::vec((1usize..6, 0usize..300), 1..60),
        interval in 0u32..600,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(2048, interval)).unwrap();
        let mut appended = Vec::new();
        for (count, value_len) in sizes {
            let records = vec![record(&"v".repeat(value_len)); count];
            appended.push(log.append(&records, 0, ProducerInfo::default()).unwrap());
        }
        for info in &appended {
            for offset in info.base_offset..=info.last_offset {
                let batches = log.read(offset, 1, NO_LIMIT).unwrap();
                prop_assert_eq!(batches.len(), 1);
                prop_assert_eq!(batches[0].header.base_offset, info.base_offset);
            }
        }
    }
}

#[test]
fn roll_seals_and_trims_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
    for i in 0..60 {
        append_values(&log, &format!("value-{i:03}"), 2, 0);
    }

    let segments = log.segments();
    assert!(segments.len() > 3, "{} segments", segments.len());
    for pair in segments.windows(2) {
        assert_eq!(pair[0].next_offset, pair[1].base_offset);
        assert!(pair[0].size_bytes <= 1024);
        let file_len = fs::metadata(&pair[0].path).unwrap().len();
        assert_eq!(file_len, pair[0].size_bytes, "sealed segment not trimmed");
    }
    let active = segments.last().unwrap();
    assert_eq!(fs::metadata(&active.path).unwrap().len(), 1024);

    let offsets: Vec<u64> = read_all(&log)
        .iter()
        .flat_map(|b| b.records.iter().map(|r| r.offset))
        .collect();
    assert_eq!(offsets, (0..120).collect::<Vec<u64>>());
}

#[test]
fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
        for i in 0..40 {
            append_values(&log, &format!("v{i}"), 3, i / 10);
        }
        log.close().unwrap();
        assert!(matches!(
            log.append(&[record("late")], 9, ProducerInfo::default()),
            Err(LogError::Closed { .. })
        ));
        let active = log.segments().pop().unwrap();
        assert_eq!(fs::metadata(&active.path).unwrap().len(), active.size_bytes);
        read_all(&log)
    };

    let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(read_all(&log), before);
    // The epoch of the last batch carries over.
    assert!(matches!(
        log.append(&[record("old epoch")], 2, ProducerInfo::default()),
        Err(LogError::StaleLeaderEpoch {
            leader_epoch: 2,
            latest_leader_epoch: 3
        })
    ));
    assert_eq!(append_values(&log, "next", 1, 3).base_offset, 120);
}

#[test]
fn reopen_without_close_recovers_preallocated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let log = PartitionLog::open(dir.path(), config(8192, 64)).unwrap();
        for i in 0..10 {
            append_values(&log, &format!("v{i}"), 2, 0);
        }
        read_all(&log)
    };

    let log = PartitionLog::open(dir.path(), config(8192, 64)).unwrap();
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(log.flushed_offset(), 20);
    assert_eq!(read_all(&log), before);
}

#[test]
fn open_rejects_second_open_of_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(
        PartitionLog::open(dir.path(), LogConfig::default()),
        Err(LogError::Locked { .. })
    ));
}

#[test]
fn open_rejects_invalid_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for segment_bytes in [0, 60, u64::from(u32::MAX) + 1] {
        assert!(matches!(
            PartitionLog::open(dir.path(), config(segment_bytes, 64)),
            Err(LogError::InvalidConfig { .. })
        ));
    }
}

#[test]
fn open_with_empty_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = PartitionLog::open(dir.path(), config(4096, 64)).unwrap();
        append_values(&log, "a", 3, 1);
        log.close().unwrap();
    }
    // A crash right after a roll created the next segment file.
    fs::write(dir.path().join("00000000000000000003.log"), b"").unwrap();

    let log = PartitionLog::open(dir.path(), config(4096, 64)).unwrap();
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(append_values(&log, "b", 1, 1).base_offset, 3);
    assert_eq!(read_all(&log).len(), 2);
    assert_eq!(
        log.segments()[1].size_bytes as usize,
        log.read_raw(3, 1, NO_LIMIT).unwrap()[0].len()
    );
}

#[test]
fn open_rebuilds_missing_sealed_index() {
    let dir = tempfile::tempdir().unwrap();
    let first_index = {
        let log = PartitionLog::open(dir.path(), config(2048, 64)).unwrap();
        for i in 0..40 {
            append_values(&log, &format!("v{i}"), 2, 0);
        }
        log.close().unwrap();
        log.segments()[0].path.with_extension("index")
    };
    let expected = fs::read(&first_index).unwrap();
    assert!(!expected.is_empty());
    fs::remove_file(&first_index).unwrap();

    let log = PartitionLog::open(dir.path(), config(2048, 64)).unwrap();
    assert_eq!(fs::read(&first_index).unwrap(), expected);
    assert_eq!(log.read(5, 1, NO_LIMIT).unwrap()[0].header.base_offset, 4);
}

#[test]
fn oversized_batch_gets_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
    append_values(&log, "small", 1, 0);
    let big = record(&"b".repeat(5000));
    let info = log
        .append(std::slice::from_ref(&big), 0, ProducerInfo::default())
        .unwrap();
    append_values(&log, "after", 1, 0);

    let segments = log.segments();
    assert_eq!(segments.len(), 3);
    assert_eq!(segments[1].base_offset, info.base_offset);
    assert!(segments[1].size_bytes > 5000);
    let read = log.read(info.base_offset, 1, NO_LIMIT).unwrap();
    assert_eq!(read[0].records[0].value, big.value);
}

#[test]
fn oversized_first_batch_grows_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
    let big = record(&"b".repeat(3000));
    log.append(&[big], 0, ProducerInfo::default()).unwrap();

    let segments = log.segments();
    assert_eq!(segments.len(), 1);
    assert!(fs::metadata(&segments[0].path).unwrap().len() >= 3000);
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn append_rejects_empty_and_stale_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(
        log.append(&[], 0, ProducerInfo::default()),
        Err(LogError::EmptyBatch)
    ));
    append_values(&log, "a", 1, 5);
    assert!(matches!(
        log.append(&[record("b")], 4, ProducerInfo::default()),
        Err(LogError::StaleLeaderEpoch {
            leader_epoch: 4,
            latest_leader_epoch: 5
        })
    ));
    assert_eq!(log.log_end_offset(), 1);
}

/// The two ways to append a batch encoded elsewhere: with record checks
/// (`append_batch`) and with the CRC check only (`append_replica_batch`).
type AppendEncoded = fn(&PartitionLog, &[u8]) -> Result<AppendInfo, LogError>;

const APPEND_ENCODED: [(&str, AppendEncoded); 2] = [
    ("append_batch", PartitionLog::append_batch),
    ("append_replica_batch", PartitionLog::append_replica_batch),
];

#[test]
fn append_batch_replicates_log() {
    for (name, append) in APPEND_ENCODED {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let leader = PartitionLog::open(leader_dir.path(), config(1024, 64)).unwrap();
        let follower = PartitionLog::open(follower_dir.path(), config(1024, 64)).unwrap();
        for i in 0..30 {
            append_values(&leader, &format!("r{i}"), 1 + i % 3, (i / 10) as u32);
        }

        let mut offset = 0;
        while offset < leader.log_end_offset() {
            for raw in leader.read_raw(offset, 500, NO_LIMIT).unwrap() {
                let info = append(&follower, &raw).unwrap();
                offset = info.last_offset + 1;
            }
        }
        assert_eq!(follower.log_end_offset(), leader.log_end_offset(), "{name}");
        assert_eq!(read_all(&follower), read_all(&leader), "{name}");
    }
}

#[test]
fn append_batch_rejects_invalid_batches() {
    for (name, append) in APPEND_ENCODED {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append_values(&log, "a", 2, 0);

        let wrong_base = encode_batch(5, 0, ProducerInfo::default(), &[record("x")]);
        assert!(
            matches!(
                append(&log, &wrong_base),
                Err(LogError::UnexpectedBaseOffset {
                    base_offset: 5,
                    log_end_offset: 2
                })
            ),
            "{name}"
        );

        let mut corrupt = encode_batch(2, 0, ProducerInfo::default(), &[record("x")]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x40;
        assert!(
            matches!(
                append(&log, &corrupt),
                Err(LogError::InvalidBatch {
                    offset: 2,
                    reason: BatchError::CrcMismatch { .. }
                })
            ),
            "{name}"
        );

        let empty = encode_batch(2, 0, ProducerInfo::default(), &[]);
        assert!(
            matches!(append(&log, &empty), Err(LogError::EmptyBatch)),
            "{name}"
        );
        assert!(
            matches!(
                append(&log, &[0; 10]),
                Err(LogError::InvalidBatch { offset: 2, .. })
            ),
            "{name}"
        );
        assert_eq!(log.log_end_offset(), 2, "{name}");
    }
}

#[test]
fn truncate_to_inside_batch_and_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
    let mut appended = Vec::new();
    for i in 0..40 {
        appended.push(append_values(&log, &format!("t{i:02}"), 3, 0));
    }
    let before = read_all(&log);
    let segment_count = log.segments().len();
    assert!(segment_count > 3);

    // Offset 31 lies inside the batch that starts at 30.
    log.truncate_to(31).unwrap();
    assert_eq!(log.log_end_offset(), 30);
    assert!(log.flushed_offset() <= 30);
    let after = read_all(&log);
    assert_eq!(after[..], before[..10]);
    assert!(log.segments().len() < segment_count);
    for segment in log.segments() {
        assert!(segment.base_offset < 30);
        assert!(segment.path.is_file());
    }
    let removed = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_str().unwrap();
            name.ends_with(".log") && name[..20].parse::<u64>().unwrap() > 30
        })
        .count();
    assert_eq!(
        removed, 0,
        "segment files above the truncation point remain"
    );

    // Appending continues at the new end, also after a reopen.
    assert_eq!(append_values(&log, "new", 2, 0).base_offset, 30);
    drop(log);
    let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
    assert_eq!(log.log_end_offset(), 32);
    let last = log.read(30, 1, NO_LIMIT).unwrap();
    assert_eq!(values(&last[0]), ["new-0", "new-1"]);
}

#[test]
fn truncate_to_segment_base_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(1024, 64)).unwrap();
    for i in 0..30 {
        append_values(&log, &format!("s{i:02}"), 2, 0);
    }
    let second_base = log.segments()[1].base_offset;

    log.truncate_to(NO_LIMIT).unwrap();
    assert_eq!(log.log_end_offset(), 60);

    log.truncate_to(second_base).unwrap();
    assert_eq!(log.log_end_offset(), second_base);
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.segments()[1].size_bytes, 0);
    assert!(log.read(second_base, 10, NO_LIMIT).unwrap().is_empty());
    assert_eq!(append_values(&log, "x", 1, 0).base_offset, second_base);

    log.truncate_to(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segments().len(), 1);
    assert_eq!(append_values(&log, "y", 1, 0).base_offset, 0);
}

#[test]
fn truncate_to_resets_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    append_values(&log, "a", 1, 1);
    append_values(&log, "b", 1, 4);
    log.truncate_to(1).unwrap();
    // Epoch 2 is above the epoch of the remaining batch (1).
    assert_eq!(append_values(&log, "c", 1, 2).base_offset, 1);
}

#[test]
fn concurrent_append_read_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), config(16 * 1024, 256)).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    const WRITERS: usize = 2;
    const BATCHES_PER_WRITER: usize = 300;

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..BATCHES_PER_WRITER {
                    append_values(&log, &format!("w{w}-b{i}"), 1 + i % 4, 0);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let log = log.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut reads = 0u64;
                let mut offset = 0;
                // Bounded even if the writers stall.
                for _ in 0..1_000_000 {
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    let end = log.log_end_offset();
                    let batches = log.read(offset, 4096, NO_LIMIT).unwrap();
                    let mut expected = None;
                    for batch in &batches {
                        if let Some(next) = expected {
                            assert_eq!(batch.header.base_offset, next);
                        }
                        assert_eq!(batch.records.len(), batch.header.record_count as usize);
                        expected = Some(batch.header.next_offset());
                    }
                    if let Some(first) = batches.first() {
                        assert!(first.header.base_offset <= offset);
                        assert!(offset <= first.header.last_offset());
                    }
                    reads += 1;
                    offset = if end == 0 {
                        0
                    } else {
                        (reads * 7 + r as u64) % end
                    };
                }
                reads
            })
        })
        .collect();
    let flusher = {
        let log = log.clone();
        let done = done.clone();
        thread::spawn(move || {
            for _ in 0..100_000 {
                if done.load(Ordering::Acquire) {
                    break;
                }
                log.flush().unwrap();
                assert!(log.flushed_offset() <= log.log_end_offset());
            }
        })
    };

    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    flusher.join().unwrap();

    log.flush().unwrap();
    assert_eq!(log.flushed_offset(), log.log_end_offset());
    let batches = read_all(&log);
    assert_eq!(batches.len(), WRITERS * BATCHES_PER_WRITER);
    for w in 0..WRITERS {
        let prefix = format!("w{w}-b");
        // Values look like "w0-b17-2": writer, batch number, record number.
        let in_log_order: Vec<usize> = batches
            .iter()
            .map(|b| values(b)[0].clone())
            .filter_map(|v| {
                let rest = v.strip_prefix(&prefix)?;
                rest.split('-').next()?.parse().ok()
            })
            .collect();
        let expected: Vec<usize> = (0..BATCHES_PER_WRITER).collect();
        assert_eq!(in_log_order, expected, "batches of writer {w}");
    }
    assert!(log.segments().len() > 2);
}

#[test]
fn flush_to_group_commit_saves_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), LogConfig::default()).unwrap());
    const THREADS: usize = 8;
    const ROUNDS: usize = 40;

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..ROUNDS {
                    let info = append_values(&log, &format!("t{t}-{i}"), 1, 0);
                    log.flush_to(info.last_offset + 1).unwrap();
                    assert!(log.flushed_offset() > info.last_offset);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }

    let calls = (THREADS * ROUNDS) as u64;
    let syncs = log.flush_count();
    assert!(syncs > 0);
    assert!(syncs < calls, "{syncs} syncs for {calls} flush_to calls");
    assert_eq!(log.flushed_offset(), log.log_end_offset());
}

#[test]
fn flush_to_covered_offset_does_not_sync() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    append_values(&log, "a", 3, 0);
    log.flush_to(3).unwrap();
    assert_eq!(log.flush_count(), 1);
    log.flush_to(2).unwrap();
    log.flush_to(3).unwrap();
    log.flush_to(100).unwrap();
    assert_eq!(log.flush_count(), 1);
    assert_eq!(log.flushed_offset(), 3);
}

#[test]
fn header_len_constant_matches_minimum_batch() {
    let bytes = encode_batch(0, 0, ProducerInfo::default(), &[]);
    assert_eq!(bytes.len(), HEADER_LEN);
}

mod allocation;
mod descriptors;
mod recovery;

#[test]
fn producer_batches_survive_reopen_and_follow_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let producer = |base_sequence| ProducerInfo {
        producer_id: 42,
        producer_epoch: 0,
        base_sequence,
    };
    let batches = |log: &PartitionLog| -> Vec<(i32, i32, u64)> {
        log.producer_batches(42)
            .iter()
            .map(|b| (b.first_sequence, b.last_sequence, b.base_offset))
            .collect()
    };
    {
        let log = PartitionLog::open(dir.path(), config(1 << 20, 4096)).unwrap();
        append_values(&log, "plain", 2, 0);
        for (i, base_sequence) in [0, 3, 5, 6, 9, 10].into_iter().enumerate() {
            let count = if i == 0 { 3 } else { 1 };
            let records: Vec<Record> = (0..count).map(|_| record("p")).collect();
            log.append(&records, 0, producer(base_sequence)).unwrap();
        }
        // Five batches are kept, the oldest forgotten.
        assert_eq!(
            batches(&log),
            vec![(3, 3, 5), (5, 5, 6), (6, 6, 7), (9, 9, 8), (10, 10, 9)]
        );
        assert!(log.producer_batches(7).is_empty());
        log.close().unwrap();
    }
    let log = PartitionLog::open(dir.path(), config(1 << 20, 4096)).unwrap();
    assert_eq!(
        batches(&log),
        vec![(3, 3, 5), (5, 5, 6), (6, 6, 7), (9, 9, 8), (10, 10, 9)]
    );
    log.truncate_to(7).unwrap();
    // The table is rebuilt from what is left, so the older batch is back.
    assert_eq!(batches(&log), vec![(0, 2, 2), (3, 3, 5), (5, 5, 6)]);
}

#[test]
fn retention_deletes_oldest_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(300, 4096)).unwrap();
    let timed = |value: &str, timestamp_ms: i64| Record {
        timestamp_ms,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        ..Record::default()
    };
    // Each batch of 4 records of 40 bytes fills most of a 300-byte segment.
    for batch in 0..6i64 {
        let records: Vec<Record> = (0..4)
            .map(|i| timed(&format!("{batch}-{i}-{}", "x".repeat(36)), 1_000 * batch))
            .collect();
        log.append(&records, 0, ProducerInfo::default()).unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() >= 4, "{segments:?}");
    let end = log.log_end_offset();

    // Nothing without limits, and nothing at or above keep_from.
    let none = log
        .apply_retention(Retention::default(), 10_000, end)
        .unwrap();
    assert_eq!(none.segments, 0);
    let kept = Retention {
        max_age_ms: Some(1),
        max_bytes: None,
    };
    assert_eq!(log.apply_retention(kept, 100_000, 0).unwrap().segments, 0);

    // By age: segments whose newest record is over 2.5 s old at t = 4.5 s.
    let by_age = Retention {
        max_age_ms: Some(2_500),
        max_bytes: None,
    };
    let outcome = log.apply_retention(by_age, 4_500, end).unwrap();
    assert_eq!(outcome.segments, 2, "{:?}", log.segments());
    assert_eq!(outcome.log_start_offset, 8);
    assert_eq!(log.log_start_offset(), 8);
    assert!(!segments[0].path.exists());
    assert!(log.read(0, usize::MAX, NO_LIMIT).is_err());
    assert_eq!(
        log.read(8, usize::MAX, NO_LIMIT).unwrap()[0].records[0].offset,
        8
    );

    // By size: keep at most one segment's worth besides the active one.
    let by_size = Retention {
        max_age_ms: None,
        max_bytes: Some(segments[0].size_bytes),
    };
    let outcome = log.apply_retention(by_size, 4_500, end).unwrap();
    assert!(outcome.segments >= 1);
    let left = log.segments();
    let total: u64 = left.iter().map(|s| s.size_bytes).sum();
    assert!(
        !left.is_empty() && total - left[0].size_bytes < segments[0].size_bytes,
        "{left:?}"
    );
    assert_eq!(log.log_end_offset(), end);

    // Reopening keeps the new start.
    let start = log.log_start_offset();
    log.close().unwrap();
    drop(log);
    let reopened = PartitionLog::open(dir.path(), config(300, 4096)).unwrap();
    assert_eq!(reopened.log_start_offset(), start);
    assert_eq!(reopened.log_end_offset(), end);
}

#[test]
fn offset_for_timestamp_with_out_of_order_times() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(300, 4096)).unwrap();
    let timed = |timestamp_ms: i64| Record {
        timestamp_ms,
        value: Some(Bytes::from(vec![b'v'; 40])),
        ..Record::default()
    };
    // Offsets 0.. with times that step back: 10 20 15 | 30 25 40 | 35 50 45 ...
    let times = [10, 20, 15, 30, 25, 40, 35, 50, 45, 60, 55, 70];
    for chunk in times.chunks(3) {
        let records: Vec<Record> = chunk.iter().map(|&t| timed(t)).collect();
        log.append(&records, 0, ProducerInfo::default()).unwrap();
    }
    assert!(log.segments().len() > 1, "{:?}", log.segments());
    let end = log.log_end_offset();
    let lookup = |t: i64| {
        log.offset_for_timestamp(t, end)
            .unwrap()
            .map(|found| (found.offset, found.timestamp_ms))
    };
    // The first offset whose time is at or after t.
    for t in [0, 10, 11, 16, 21, 26, 31, 41, 46, 56, 61, 70] {
        let expected = times
            .iter()
            .position(|&time| time >= t)
            .map(|offset| (offset as u64, times[offset]));
        assert_eq!(lookup(t), expected, "t = {t}");
    }
    assert_eq!(lookup(71), None);
    // Nothing at or above max_offset counts.
    assert_eq!(log.offset_for_timestamp(60, 9).unwrap(), None);
    assert_eq!(
        log.offset_for_timestamp(26, 3)
            .unwrap()
            .map(|found| found.offset),
        None
    );
    assert_eq!(
        log.offset_for_timestamp(26, 4)
            .unwrap()
            .map(|found| found.offset),
        Some(3)
    );
}

mod compaction;
mod time_index;
