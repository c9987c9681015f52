//! Properties of `PartitionLog::open` on a damaged active segment.
//!
//! Each input becomes the only segment file of a fresh partition directory.
//! Opening must recover any bytes: it cuts the segment at the first invalid
//! batch and keeps what precedes it. The checks then require every offset
//! below the log end offset to read back, an append after recovery to work,
//! and a second open to keep everything the first one left.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry::log::reader::{segment_file_name, LOG_FILE_SUFFIX};
use ferry::log::{decode_batch, LogConfig, PartitionLog, ProducerInfo, Record, RecordBatch};
use tempfile::TempDir;

use crate::batch_decode::check_record_offsets;
use crate::crc::repair_segment_crcs;

/// Log settings small enough that fuzz inputs cross index entries, and that
/// the append after recovery rolls a new segment when the input is larger
/// than one segment.
pub const CONFIG: LogConfig = LogConfig {
    segment_bytes: 1024,
    index_interval_bytes: 128,
};

/// A temporary directory reused for every input of one process.
///
/// libFuzzer exits the process without running destructors, so the
/// directory outlives a fuzzing run. `tools/fuzz` points `TMPDIR` at a
/// directory of its own and removes that directory when it finishes.
pub struct RecoveryHarness {
    root: TempDir,
}

impl RecoveryHarness {
    /// Creates the temporary directory under `std::env::temp_dir()`.
    ///
    /// # Panics
    ///
    /// Panics when the directory cannot be created.
    pub fn new() -> RecoveryHarness {
        let root = tempfile::Builder::new()
            .prefix("ferry-fuzz-recovery-")
            .tempdir()
            .unwrap_or_else(|error| panic!("failed to create a temporary directory: {error}"));
        RecoveryHarness { root }
    }

    /// Checks recovery of `data` as a segment file. When `data` contains
    /// batches with a wrong CRC, checks a copy with repaired CRCs as well, so
    /// that mutations reach the checks after the CRC.
    ///
    /// # Panics
    ///
    /// Panics when a property fails or a file operation on the temporary
    /// directory fails.
    pub fn check(&self, data: &[u8]) {
        self.check_segment(data);
        if let Some(repaired) = repair_segment_crcs(data) {
            self.check_segment(&repaired);
        }
    }

    fn check_segment(&self, segment: &[u8]) {
        let dir = self.fresh_partition_dir();
        let log_path = dir.join(segment_file_name(0, LOG_FILE_SUFFIX));
        fs::write(&log_path, segment)
            .unwrap_or_else(|error| panic!("failed to write {}: {error}", log_path.display()));

        let log = open(&dir);
        check_recovered(&log, segment.len());
        let appended = check_append(&log);
        log.close()
            .unwrap_or_else(|error| panic!("close after recovery failed: {error}"));
        let log_end_offset = log.log_end_offset();
        drop(log);

        // The log wrote every byte that is left, so a second recovery must
        // keep all of it.
        let reopened = open(&dir);
        assert_eq!(
            reopened.log_end_offset(),
            log_end_offset,
            "second open changed the log end offset"
        );
        check_recovered(&reopened, usize::MAX);
        let batch = read_one(&reopened, appended.offset);
        assert_eq!(
            batch.records.last(),
            Some(&appended),
            "appended record changed after a second open"
        );
    }

    /// Empties the partition directory of the previous input and returns it.
    fn fresh_partition_dir(&self) -> PathBuf {
        let dir = self.root.path().join("partition");
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => panic!("failed to remove {}: {error}", dir.display()),
        }
        fs::create_dir(&dir)
            .unwrap_or_else(|error| panic!("failed to create {}: {error}", dir.display()));
        dir
    }
}

impl Default for RecoveryHarness {
    fn default() -> Self {
        RecoveryHarness::new()
    }
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, CONFIG)
        .unwrap_or_else(|error| panic!("open of {} failed: {error}", dir.display()))
}

/// Walks the recovered log batch by batch through `read` and `read_raw`,
/// from the log start offset to the log end offset. `max_size` bounds the
/// bytes that recovery may keep: the input's length, before any append.
fn check_recovered(log: &PartitionLog, max_size: usize) {
    let log_end_offset = log.log_end_offset();
    assert_eq!(log.log_start_offset(), 0, "log start offset moved");
    let segments = log.segments();
    let kept_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    assert!(
        kept_bytes <= max_size as u64,
        "recovery kept {kept_bytes} bytes of a {max_size}-byte segment"
    );
    assert_eq!(
        segments.last().map(|s| s.next_offset),
        Some(log_end_offset),
        "last segment does not end at the log end offset"
    );

    let mut offset = 0;
    let mut read_bytes = 0;
    while offset < log_end_offset {
        let batch = read_one(log, offset);
        let header = batch.header;
        // Only a batch that compaction rewrote may start above the offset
        // where the batch before it ended.
        let compacted = header.is_compacted();
        assert!(
            header.base_offset == offset || (compacted && header.base_offset > offset),
            "read at offset {offset} returned a batch at {}, compacted: {compacted}",
            header.base_offset
        );
        check_record_offsets(&batch);
        let last_offset = header.last_offset();
        assert!(
            last_offset < log_end_offset,
            "batch at offset {offset} ends at {last_offset}, past the log end offset {log_end_offset}"
        );

        // A read inside the batch returns the batch that contains it.
        let base_offset = header.base_offset;
        for inside in [base_offset + (last_offset - base_offset) / 2, last_offset] {
            let containing = read_one(log, inside);
            assert_eq!(
                containing.header, header,
                "read at offset {inside} did not return the batch at {base_offset}"
            );
        }

        let raw = log
            .read_raw(offset, 1, u64::MAX)
            .unwrap_or_else(|error| panic!("read_raw at offset {offset} failed: {error}"));
        let first_raw = raw
            .first()
            .expect("read_raw below the log end offset was empty");
        assert_eq!(
            decode_batch(first_raw).as_ref(),
            Ok(&batch),
            "read_raw and read disagree at offset {offset}"
        );

        read_bytes += header.total_len() as u64;
        offset = header.next_offset();
    }

    assert_eq!(
        offset, log_end_offset,
        "batches end past the log end offset"
    );
    assert_eq!(read_bytes, kept_bytes, "batches do not fill the segments");
    let at_end = log
        .read(log_end_offset, usize::MAX, u64::MAX)
        .unwrap_or_else(|error| panic!("read at the log end offset failed: {error}"));
    assert!(
        at_end.is_empty(),
        "read at the log end offset returned batches"
    );
}

/// Appends one record at the recovered log end offset with the latest
/// leader epoch, reads it back, and returns it with its offset.
fn check_append(log: &PartitionLog) -> Record {
    let log_end_offset = log.log_end_offset();
    let leader_epoch = log.last_leader_epoch().unwrap_or(0);
    let record = Record {
        timestamp_ms: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"after-recovery")),
        value: Some(Bytes::from_static(b"appended after recovery")),
        ..Record::default()
    };

    let info = log
        .append(
            std::slice::from_ref(&record),
            leader_epoch,
            ProducerInfo::default(),
        )
        .unwrap_or_else(|error| {
            panic!("append at offset {log_end_offset} after recovery failed: {error}")
        });
    assert_eq!(info.base_offset, log_end_offset);
    assert_eq!(info.last_offset, log_end_offset);
    assert_eq!(log.log_end_offset(), log_end_offset + 1);

    let batch = read_one(log, log_end_offset);
    let expected = Record {
        offset: log_end_offset,
        ..record
    };
    assert_eq!(
        batch.records,
        [expected.clone()],
        "appended record reads back changed"
    );
    expected
}

/// Reads the batch that contains `offset`, which must be below the log end
/// offset.
fn read_one(log: &PartitionLog, offset: u64) -> RecordBatch {
    let batches = log
        .read(offset, 1, u64::MAX)
        .unwrap_or_else(|error| panic!("read at offset {offset} failed: {error}"));
    batches
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("read at offset {offset} below the log end offset was empty"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn seed_segments_pass_checks() {
        let harness = RecoveryHarness::new();
        for (name, segment) in seeds::segment_seeds() {
            eprintln!("checking seed {name}");
            harness.check(&segment);
        }
    }

    #[test]
    fn empty_and_garbage_segments_pass_checks() {
        let harness = RecoveryHarness::new();
        harness.check(&[]);
        harness.check(&[0; 100]);
        harness.check(&[0xff; 100]);
    }
}
