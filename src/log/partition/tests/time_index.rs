//! The time index against a brute-force search: lookups by time over
//! out-of-order timestamps give the first record at or after the time,
//! through rolls, reopening, rebuilt index files, checkpoint resumes and
//! truncation.

use std::fs;

use super::*;
use crate::log::reader::{list_segments, SegmentFiles};
use crate::log::time_index::{decode_entries as decode_time_entries, TimeIndexEntry};

/// Timestamps that mostly rise but often step back, from a fixed seed.
fn timestamps(count: usize, seed: u64) -> Vec<i64> {
    let mut state = seed;
    let mut clock = 1_000;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            clock += 10;
            clock + (state >> 33) as i64 % 200 - 100
        })
        .collect()
}

fn append_timed(log: &PartitionLog, times: &[i64]) {
    for chunk in times.chunks(3) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|&timestamp_ms| Record {
                timestamp_ms,
                value: Some(Bytes::from(vec![b'v'; 30])),
                ..Record::default()
            })
            .collect();
        log.append(&records, 0, ProducerInfo::default()).unwrap();
    }
}

/// Checks every lookup from before the first time to after the last
/// against a linear search of `times`, which contains the time of each
/// offset from `start`.
fn check_lookups(log: &PartitionLog, start: u64, times: &[i64]) {
    let end = start + times.len() as u64;
    let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    for t in (min - 5..=max + 5).step_by(7) {
        let expected = times
            .iter()
            .position(|&time| time >= t)
            .map(|i| (start + i as u64, times[i]));
        let found = log
            .offset_for_timestamp(t, end)
            .unwrap()
            .map(|found| (found.offset, found.timestamp_ms));
        assert_eq!(found, expected, "t = {t}");
    }
}

fn time_entries(files: &SegmentFiles) -> Vec<TimeIndexEntry> {
    decode_time_entries(&fs::read(&files.time_index_path).unwrap()).unwrap()
}

#[test]
fn lookups_by_time_match_a_linear_search() {
    let dir = tempfile::tempdir().unwrap();
    // Every batch gets an offset index entry, so the time index has many.
    let log = PartitionLog::open(dir.path(), config(2048, 0)).unwrap();
    let times = timestamps(600, 7);
    append_timed(&log, &times);
    assert!(log.segments().len() > 5, "{:?}", log.segments());
    check_lookups(&log, 0, &times);

    // Each sealed segment's last entry contains its newest timestamp, and
    // no entry breaks its promise.
    let segments = log.segments();
    for segment in &segments[..segments.len() - 1] {
        let files = SegmentFiles::in_dir(dir.path(), segment.base_offset);
        let entries = time_entries(&files);
        assert!(entries.len() > 1, "{entries:?}");
        let own = &times[segment.base_offset as usize..segment.next_offset as usize];
        let last = entries.last().unwrap();
        assert_eq!(last.timestamp_ms, *own.iter().max().unwrap());
        assert!(u64::from(last.relative_offset) <= own.len() as u64);
        for entry in &entries {
            let below = &own[..entry.relative_offset as usize];
            assert!(below.iter().all(|&t| t <= entry.timestamp_ms), "{entry:?}");
        }
    }

    log.close().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), config(2048, 0)).unwrap();
    assert!(log.resumed_at_checkpoint());
    check_lookups(&log, 0, &times);
    drop(log);

    // Without their time index files, sealed segments rebuild them.
    for files in list_segments(dir.path()).unwrap() {
        fs::remove_file(&files.time_index_path).unwrap();
    }
    fs::remove_file(dir.path().join(CHECKPOINT_FILE_NAME)).unwrap();
    let log = PartitionLog::open(dir.path(), config(2048, 0)).unwrap();
    check_lookups(&log, 0, &times);
    for files in list_segments(dir.path()).unwrap() {
        assert!(files.time_index_path.exists(), "{files:?}");
    }
}

#[test]
fn lookups_after_resume_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(1 << 20, 0)).unwrap();
    let mut times = timestamps(300, 11);
    append_timed(&log, &times);
    assert!(log.write_checkpoint().unwrap());
    // The tail after the checkpoint contains the newest timestamps. Recovery
    // must keep them, or a lookup would skip the segment.
    let tail: Vec<i64> = timestamps(30, 12).iter().map(|t| t + 10_000).collect();
    append_timed(&log, &tail);
    log.flush().unwrap();
    times.extend(&tail);
    // Dropped without close: the next open resumes at the checkpoint and
    // scans the tail.
    drop(log);
    let log = PartitionLog::open(dir.path(), config(1 << 20, 0)).unwrap();
    assert!(log.resumed_at_checkpoint());
    check_lookups(&log, 0, &times);

    // Truncation below the newest records lowers the newest timestamp.
    log.truncate_to(200).unwrap();
    times.truncate(200);
    check_lookups(&log, 0, &times);
    assert_eq!(
        log.offset_for_timestamp(times.iter().max().unwrap() + 1, 200)
            .unwrap(),
        None
    );

    let more = timestamps(100, 13);
    append_timed(&log, &more);
    times.extend(&more);
    check_lookups(&log, 0, &times);
}

/// A batch whose header was damaged (its `max_timestamp`, which the walk
/// reads) is reported, not used to move the result.
#[test]
fn lookup_reports_a_damaged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(2048, 0)).unwrap();
    let times: Vec<i64> = (0..120).map(|i| 1_000 + 10 * i).collect();
    append_timed(&log, &times);
    log.close().unwrap();
    drop(log);

    // Batch 5 of the first segment holds offsets 15 to 17 (3 records per
    // batch); move its max_timestamp back so that a header-only walk would
    // skip it.
    let files = SegmentFiles::in_dir(dir.path(), 0);
    let mut bytes = fs::read(&files.log_path).unwrap();
    let mut position = 0;
    for _ in 0..5 {
        let length = u32::from_be_bytes(bytes[position + 8..position + 12].try_into().unwrap());
        position += 12 + length as usize;
    }
    assert_eq!(
        u64::from_be_bytes(bytes[position..position + 8].try_into().unwrap()),
        15
    );
    bytes[position + 35..position + 43].copy_from_slice(&0i64.to_be_bytes());
    fs::write(&files.log_path, &bytes).unwrap();

    let log = PartitionLog::open(dir.path(), config(2048, 0)).unwrap();
    let result = log.offset_for_timestamp(times[15], 120);
    assert!(
        matches!(
            result,
            Err(LogError::Corrupt {
                offset: Some(15),
                ..
            })
        ),
        "{result:?}"
    );
    // Lookups that do not reach the batch still work.
    let found = log.offset_for_timestamp(times[3], 120).unwrap().unwrap();
    assert_eq!(found.offset, 3);
}
