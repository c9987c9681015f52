//! Compaction of keyed logs: latest value per key, tombstones, merging of
//! segments, offsets and epochs kept, and interrupted passes.

use std::collections::BTreeMap;

use super::*;

const NOW: i64 = 1_700_000_100_000;

fn keyed(key: &str, value: Option<&str>, timestamp_ms: i64) -> Record {
    Record {
        timestamp_ms,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        ..Record::default()
    }
}

fn compaction(clean_below: u64) -> Compaction {
    Compaction {
        clean_below,
        tombstone_retention_ms: 60_000,
        now_ms: NOW,
    }
}

/// Reads the whole log and returns (offset, key, value) of every record.
fn contents(log: &PartitionLog) -> Vec<(u64, String, Option<String>)> {
    let text = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
    read_all(log)
        .into_iter()
        .flat_map(|batch| batch.records)
        .map(|r| {
            (
                r.offset,
                text(r.key.as_ref().unwrap()),
                r.value.as_ref().map(text),
            )
        })
        .collect()
}

/// The latest value per key, as a reader that folds the log sees it.
fn folded(records: &[(u64, String, Option<String>)]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (_, key, value) in records {
        match value {
            Some(value) => map.insert(key.clone(), value.clone()),
            None => map.remove(key),
        };
    }
    map
}

/// Appends 40 one-record batches over 4 keys, each key updated 10 times,
/// in segments of about 600 bytes.
fn keyed_log(dir: &Path) -> PartitionLog {
    let log = PartitionLog::open(dir, config(600, 64)).unwrap();
    for i in 0..40 {
        let key = format!("k{}", i % 4);
        let value = format!("v{i}");
        log.append(
            &[keyed(&key, Some(&value), NOW)],
            0,
            ProducerInfo::default(),
        )
        .unwrap();
    }
    log
}

#[test]
fn compaction_keeps_latest_value_per_key_at_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = keyed_log(dir.path());
    let before = contents(&log);
    let segments_before = log.segments().len();
    assert!(segments_before > 4, "{segments_before} segments");

    let outcome = log.compact(compaction(log.log_end_offset())).unwrap();
    let after = contents(&log);

    assert!(outcome.records_removed > 0);
    assert!(log.segments().len() < segments_before);
    assert_eq!(folded(&after), folded(&before));
    // Every record that is left is the one at its original offset.
    for record in &after {
        assert!(
            before.contains(record),
            "{record:?} is not in the original log"
        );
    }
    // Below the active segment each key appears once.
    let active_base = log.segments().last().unwrap().base_offset;
    let mut seen = std::collections::HashSet::new();
    for (offset, key, _) in after.iter().filter(|r| r.0 < active_base) {
        assert!(
            seen.insert(key.clone()),
            "key {key} twice, again at {offset}"
        );
    }
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(log.log_start_offset(), 0);

    // A second pass finds nothing to do.
    let again = log.compact(compaction(log.log_end_offset())).unwrap();
    assert_eq!(again.segments_rewritten, 0);
}

#[test]
fn compaction_survives_reopen_and_reads_from_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = keyed_log(dir.path());
    log.compact(compaction(log.log_end_offset())).unwrap();
    let after = contents(&log);
    log.close().unwrap();
    drop(log);

    let log = PartitionLog::open(dir.path(), config(600, 64)).unwrap();
    assert_eq!(contents(&log), after);
    // A read at any offset, removed or not, starts at the first record at
    // or after it, and batches end where the next one begins.
    for offset in 0..log.log_end_offset() {
        let batches = log.read(offset, usize::MAX, NO_LIMIT).unwrap();
        let first = batches
            .iter()
            .flat_map(|b| b.records.iter())
            .find(|r| r.offset >= offset)
            .map(|r| r.offset);
        let expected = after.iter().map(|r| r.0).find(|&o| o >= offset);
        assert_eq!(first, expected, "read at {offset}");
        assert_eq!(batches.last().unwrap().header.next_offset(), 40);
    }
    // Appends go on at the same offset.
    let info = log
        .append(&[keyed("k0", Some("new"), NOW)], 0, ProducerInfo::default())
        .unwrap();
    assert_eq!(info.base_offset, 40);
}

#[test]
fn compaction_removes_old_tombstones_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(4096, 64)).unwrap();
    let old = NOW - 120_000;
    log.append(&[keyed("gone", Some("x"), old)], 0, ProducerInfo::default())
        .unwrap();
    log.append(&[keyed("gone", None, old)], 0, ProducerInfo::default())
        .unwrap();
    log.append(
        &[keyed("recent", Some("x"), NOW)],
        0,
        ProducerInfo::default(),
    )
    .unwrap();
    log.append(&[keyed("recent", None, NOW)], 0, ProducerInfo::default())
        .unwrap();
    log.append(&[keyed("kept", Some("y"), NOW)], 0, ProducerInfo::default())
        .unwrap();
    // Roll, so that everything above is in a sealed segment.
    let big = "z".repeat(5000);
    log.append(&[keyed("big", Some(&big), NOW)], 0, ProducerInfo::default())
        .unwrap();

    log.compact(compaction(5)).unwrap();
    let keys: Vec<(u64, String, Option<String>)> = contents(&log)
        .into_iter()
        .filter(|r| r.1 != "big")
        .collect();
    assert_eq!(
        keys,
        vec![
            (3, "recent".to_string(), None),
            (4, "kept".to_string(), Some("y".to_string())),
        ]
    );
}

#[test]
fn compaction_keeps_epoch_starts_and_producer_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(600, 64)).unwrap();
    let producer = ProducerInfo {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: 0,
    };
    for i in 0..30u32 {
        let epoch = i / 10;
        let info = if i == 12 {
            producer
        } else {
            ProducerInfo::default()
        };
        log.append(&[keyed("same", Some(&format!("v{i}")), NOW)], epoch, info)
            .unwrap();
    }
    let epochs_before: Vec<_> = (0..3).map(|e| log.epoch_end_offset(e)).collect();
    let producer_before = log.producer_batches(7);
    log.compact(compaction(log.log_end_offset())).unwrap();
    log.close().unwrap();
    drop(log);

    let log = PartitionLog::open(dir.path(), config(600, 64)).unwrap();
    let epochs_after: Vec<_> = (0..3).map(|e| log.epoch_end_offset(e)).collect();
    assert_eq!(epochs_after, epochs_before);
    assert_eq!(log.producer_batches(7), producer_before);
    assert_eq!(log.last_leader_epoch(), Some(2));
}

#[test]
fn compaction_stays_below_clean_below() {
    let dir = tempfile::tempdir().unwrap();
    let log = keyed_log(dir.path());
    let before = contents(&log);
    let outcome = log.compact(compaction(0)).unwrap();
    assert_eq!(outcome, CompactionOutcome::default());
    assert_eq!(contents(&log), before);

    // With a limit inside the log, records at or above it are all kept.
    let limit = log.segments()[3].next_offset;
    log.compact(compaction(limit)).unwrap();
    let after = contents(&log);
    let kept_above: Vec<_> = after.iter().filter(|r| r.0 >= limit).collect();
    let all_above: Vec<_> = before.iter().filter(|r| r.0 >= limit).collect();
    assert_eq!(kept_above, all_above);
}

#[test]
fn open_finishes_an_interrupted_merge() {
    let dir = tempfile::tempdir().unwrap();
    let log = keyed_log(dir.path());
    let expected = contents(&log);
    let segments = log.segments();
    log.close().unwrap();
    drop(log);

    // Compact a copy, then put back the segments that the merge deleted,
    // as if the broker had crashed before deleting them.
    let copy = tempfile::tempdir().unwrap();
    copy_segments(dir.path(), copy.path());
    let compacted = PartitionLog::open(copy.path(), config(600, 64)).unwrap();
    compacted
        .compact(compaction(compacted.log_end_offset()))
        .unwrap();
    let compacted_contents = contents(&compacted);
    compacted.close().unwrap();
    drop(compacted);
    for segment in &segments {
        let name = segment.path.file_name().unwrap();
        if !copy.path().join(name).exists() {
            fs::copy(&segment.path, copy.path().join(name)).unwrap();
        }
    }
    fs::write(
        copy.path().join("00000000000000000000.log.cleaned"),
        b"partial",
    )
    .unwrap();

    let reopened = PartitionLog::open(copy.path(), config(600, 64)).unwrap();
    assert_eq!(contents(&reopened), compacted_contents);
    assert_eq!(folded(&compacted_contents), folded(&expected));
    assert!(!copy
        .path()
        .join("00000000000000000000.log.cleaned")
        .exists());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the updates and deletes, a reader that folds the compacted
    /// log sees what it saw before compaction.
    #[test]
    fn compaction_preserves_the_fold(ops in prop::collection::vec((0u8..6, prop::option::weighted(0.8, 0u16..1000)), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(400, 64)).unwrap();
        for (key, value) in &ops {
            let value = value.map(|v| v.to_string());
            log.append(&[keyed(&format!("k{key}"), value.as_deref(), NOW)], 0, ProducerInfo::default())
                .unwrap();
        }
        let before = contents(&log);
        log.compact(Compaction { tombstone_retention_ms: 0, now_ms: NOW + 1, ..compaction(log.log_end_offset()) }).unwrap();
        let after = contents(&log);
        prop_assert_eq!(folded(&after), folded(&before));
        prop_assert_eq!(log.log_end_offset(), ops.len() as u64);
    }
}

#[test]
fn replica_copies_a_compacted_log_with_its_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let leader = keyed_log(dir.path());
    leader.compact(compaction(leader.log_end_offset())).unwrap();

    let replica_dir = tempfile::tempdir().unwrap();
    let replica = PartitionLog::open(replica_dir.path(), config(600, 64)).unwrap();
    while replica.log_end_offset() < leader.log_end_offset() {
        let batches = leader
            .read_raw(replica.log_end_offset(), 4096, NO_LIMIT)
            .unwrap();
        for batch in batches {
            replica.append_replica_batch(&batch).unwrap();
        }
    }
    assert_eq!(contents(&replica), contents(&leader));
    replica.close().unwrap();
    drop(replica);
    let reopened = PartitionLog::open(replica_dir.path(), config(600, 64)).unwrap();
    assert_eq!(contents(&reopened), contents(&leader));
    assert_eq!(reopened.log_end_offset(), 40);
}
