//! Recovery of the active segment after torn writes and corruption.
//!
//! Each case builds a small log, damages a copy of it, opens the copy and
//! checks that every batch before the damage survives, the damaged batch is
//! gone, and appending afterwards works.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::log::reader::SegmentFiles;
use crate::log::segment::Segment;

const SEGMENT_BYTES: u64 = 64 * 1024;
const EARLIER_BATCHES: usize = 5;
/// Epoch of the earlier batches. The last batch has epoch 2.
const EARLIER_EPOCH: u32 = 1;
const LAST_EPOCH: u32 = 2;

/// A log whose last batch occupies bytes `last_start..last_end` of its
/// segment file.
struct Fixture {
    dir: TempDir,
    batches: Vec<RecordBatch>,
    last_start: u64,
    last_end: u64,
}

impl Fixture {
    /// Builds the log. With `close`, the segment is trimmed to its length.
    /// Without, it keeps its preallocated zero tail, as after a crash.
    fn build(close: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(SEGMENT_BYTES, 64)).unwrap();
        for i in 0..EARLIER_BATCHES {
            append_values(&log, &format!("early{i}"), 1 + i % 3, EARLIER_EPOCH);
        }
        append_values(&log, "last", 2, LAST_EPOCH);
        let raw = log.read_raw(0, usize::MAX, NO_LIMIT).unwrap();
        let batches = read_all(&log);
        if close {
            log.close().unwrap();
        }
        drop(log);

        let last_start: usize = raw[..EARLIER_BATCHES].iter().map(|b| b.len()).sum();
        let last_end = last_start + raw[EARLIER_BATCHES].len();
        Fixture {
            dir,
            batches,
            last_start: last_start as u64,
            last_end: last_end as u64,
        }
    }

    /// Copies the log to a new directory and applies `damage` to the copy's
    /// segment file.
    fn damaged_copy(&self, damage: impl FnOnce(&Path)) -> TempDir {
        let copy = tempfile::tempdir().unwrap();
        copy_segments(self.dir.path(), copy.path());
        damage(&log_file(copy.path()));
        copy
    }

    fn last_base_offset(&self) -> u64 {
        self.batches[EARLIER_BATCHES].header.base_offset
    }

    fn last_end_offset(&self) -> u64 {
        self.batches[EARLIER_BATCHES].header.next_offset()
    }
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("00000000000000000000.log")
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, config(SEGMENT_BYTES, 64)).unwrap()
}

/// Checks that only the last batch was lost, that the bytes it occupied are
/// zero now (those still in the file, which recovery does not extend), and
/// that a new batch can be appended and read back.
fn assert_last_batch_dropped(fixture: &Fixture, dir: &Path, case: &str) {
    let log = open(dir);
    assert_eq!(log.log_end_offset(), fixture.last_base_offset(), "{case}");
    assert_eq!(read_all(&log), fixture.batches[..EARLIER_BATCHES], "{case}");

    let file = fs::File::open(log_file(dir)).unwrap();
    let torn_end = fixture.last_end.min(file.metadata().unwrap().len());
    let mut torn = vec![0xaa; (torn_end - fixture.last_start) as usize];
    file.read_exact_at(&mut torn, fixture.last_start).unwrap();
    assert!(
        torn.iter().all(|&b| b == 0),
        "{case}: torn bytes not zeroed"
    );

    let info = append_values(&log, "after", 2, LAST_EPOCH);
    assert_eq!(info.base_offset, fixture.last_base_offset(), "{case}");
    let read = log.read(info.base_offset, 1, NO_LIMIT).unwrap();
    assert_eq!(values(&read[0]), ["after-0", "after-1"], "{case}");
}

#[test]
fn recovery_after_cut_at_every_byte() {
    let fixture = Fixture::build(true);
    for cut in fixture.last_start..fixture.last_end {
        let copy = fixture.damaged_copy(|path| {
            OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(cut)
                .unwrap();
        });
        assert_last_batch_dropped(&fixture, copy.path(), &format!("cut at {cut}"));
    }
}

#[test]
fn recovery_after_zeroed_suffix_of_last_batch() {
    // A crash with a preallocated tail leaves zeros where the write stopped.
    let fixture = Fixture::build(false);
    let original = fs::read(log_file(fixture.dir.path())).unwrap();
    for cut in fixture.last_start..fixture.last_end {
        // The batch ends with the zero header count of its last record, so
        // zeroing only bytes that are zero already leaves it intact.
        if original[cut as usize..fixture.last_end as usize]
            .iter()
            .all(|&b| b == 0)
        {
            continue;
        }
        let copy = fixture.damaged_copy(|path| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            let zeros = vec![0; (fixture.last_end - cut) as usize];
            file.write_all_at(&zeros, cut).unwrap();
        });
        assert_last_batch_dropped(&fixture, copy.path(), &format!("zeros from {cut}"));
    }
}

#[test]
fn recovery_after_flipped_byte_in_last_batch() {
    let fixture = Fixture::build(false);
    let epoch_bytes = fixture.last_start + 12..fixture.last_start + 16;
    for position in fixture.last_start..fixture.last_end {
        let copy = fixture.damaged_copy(|path| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut byte = [0];
            file.read_exact_at(&mut byte, position).unwrap();
            file.write_all_at(&[byte[0] ^ 0xff], position).unwrap();
        });
        let case = format!("flip at {position}");

        if epoch_bytes.contains(&position) {
            // The CRC leaves the leader epoch out, and a flip that raises it
            // passes the non-decreasing check, so the batch survives with the
            // wrong epoch. This pins that known limit of the format.
            let log = open(copy.path());
            assert_eq!(log.log_end_offset(), fixture.last_end_offset(), "{case}");
            let batches = read_all(&log);
            assert!(
                batches[EARLIER_BATCHES].header.leader_epoch > LAST_EPOCH,
                "{case}"
            );
        } else {
            assert_last_batch_dropped(&fixture, copy.path(), &case);
        }
    }
}

#[test]
fn recovery_zeroes_garbage_after_zero_length_header() {
    // Pages can reach the disk out of order, leaving data past a batch
    // whose header never made it.
    let fixture = Fixture::build(false);
    let copy = fixture.damaged_copy(|path| {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&[0x5a; 300], fixture.last_end + 100)
            .unwrap();
    });

    let log = open(copy.path());
    assert_eq!(log.log_end_offset(), fixture.last_end_offset());
    let file = fs::File::open(log_file(copy.path())).unwrap();
    let mut tail = vec![0xaa; 400];
    file.read_exact_at(&mut tail, fixture.last_end).unwrap();
    assert!(
        tail.iter().all(|&b| b == 0),
        "garbage past the data not zeroed"
    );
    assert_eq!(
        append_values(&log, "next", 1, LAST_EPOCH).base_offset,
        fixture.last_end_offset()
    );
}

#[test]
fn recovery_reports_dropped_bytes() {
    let fixture = Fixture::build(false);
    let recover = |dir: &Path| {
        let files = SegmentFiles::in_dir(dir, 0);
        let (_, recovery) = Segment::recover(files, 0, SEGMENT_BYTES, 64, None).unwrap();
        recovery
    };

    let clean = fixture.damaged_copy(|_| {});
    let recovery = recover(clean.path());
    assert_eq!(recovery.valid_size as u64, fixture.last_end);
    assert_eq!(recovery.dropped_bytes, 0);
    assert_eq!(recovery.invalid_reason, None);
    assert!(!recovery.dropped_data());

    // A flipped byte of `first_timestamp` fails the CRC. The batch's last
    // byte is zero, so the dropped bytes end one byte before the batch does.
    let torn = fixture.damaged_copy(|path| {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&[0], fixture.last_end - 1).unwrap();
        file.write_all_at(&[0xff], fixture.last_start + 30).unwrap();
    });
    let recovery = recover(torn.path());
    assert_eq!(recovery.valid_size as u64, fixture.last_start);
    let dropped = fixture.last_end - 1 - fixture.last_start;
    assert_eq!(recovery.dropped_bytes as u64, dropped);
    assert!(recovery.invalid_reason.is_some());
    assert!(recovery.dropped_data());

    let stray = fixture.damaged_copy(|path| {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&[0x5a; 300], fixture.last_end + 100)
            .unwrap();
    });
    let recovery = recover(stray.path());
    assert_eq!(recovery.valid_size as u64, fixture.last_end);
    assert_eq!(recovery.dropped_bytes, 400);
    assert_eq!(recovery.invalid_reason, None);
    assert!(recovery.dropped_data());
}

#[test]
fn recovery_rejects_bad_offset_or_epoch() {
    let fixture = Fixture::build(false);
    let next = fixture.last_end_offset();
    let cases = [
        ("base offset gap", next + 1, LAST_EPOCH),
        ("base offset repeat", next - 1, LAST_EPOCH),
        ("epoch decrease", next, LAST_EPOCH - 1),
    ];
    for (case, base_offset, epoch) in cases {
        let batch = encode_batch(
            base_offset,
            epoch,
            ProducerInfo::default(),
            &[record("bad")],
        );
        let copy = fixture.damaged_copy(|path| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.write_all_at(&batch, fixture.last_end).unwrap();
        });
        let log = open(copy.path());
        assert_eq!(log.log_end_offset(), next, "{case}");
        assert_eq!(read_all(&log), fixture.batches, "{case}");
    }
}

/// A batch whose CRC matches but whose record does not decode (found by
/// the recovery fuzz target) is cut: it could never be read.
#[test]
fn recovery_cuts_batch_with_valid_crc_and_broken_record() {
    let fixture = Fixture::build(false);
    let next = fixture.last_end_offset();
    let mut batch = encode_batch(next, LAST_EPOCH, ProducerInfo::default(), &[record("bad")]);
    // The record's length varint follows the 61-byte header; claim more
    // bytes than the batch holds, then make the CRC match again.
    batch[61] = 0x7e;
    let crc = crc32fast::hash(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(crate::log::validate_batch(&batch).is_ok());
    assert!(crate::log::decode_batch(&batch).is_err());
    let copy = fixture.damaged_copy(|path| {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&batch, fixture.last_end).unwrap();
    });
    let log = open(copy.path());
    assert_eq!(log.log_end_offset(), next);
    assert_eq!(read_all(&log), fixture.batches);
}

#[test]
fn recovery_keeps_appended_batch_after_reopen() {
    let fixture = Fixture::build(true);
    let copy = fixture.damaged_copy(|path| {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(fixture.last_end - 3).unwrap();
    });
    {
        let log = open(copy.path());
        append_values(&log, "again", 3, LAST_EPOCH);
    }
    let log = open(copy.path());
    assert_eq!(log.log_end_offset(), fixture.last_base_offset() + 3);
    let read = log.read(fixture.last_base_offset(), 1, NO_LIMIT).unwrap();
    assert_eq!(values(&read[0]), ["again-0", "again-1", "again-2"]);
}

mod checkpoints {
    //! Recovery that resumes at a recovery checkpoint.

    use super::*;
    use crate::log::CHECKPOINT_FILE_NAME;

    fn records(count: usize, label: &str) -> Vec<Record> {
        (0..count)
            .map(|i| Record {
                timestamp_ms: 1_700_000_000_000,
                value: Some(format!("{label}-{i}").into()),
                ..Record::default()
            })
            .collect()
    }

    fn all_values(log: &PartitionLog) -> Vec<String> {
        log.read(log.log_start_offset(), usize::MAX, u64::MAX)
            .unwrap()
            .into_iter()
            .flat_map(|b| b.records)
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn open_resumes_at_the_checkpoint_and_keeps_writer_state() {
        let dir = tempfile::tempdir().unwrap();
        let producer = ProducerInfo {
            producer_id: 9,
            producer_epoch: 0,
            base_sequence: 0,
        };
        let log = PartitionLog::open(
            dir.path(),
            LogConfig {
                segment_bytes: 4096,
                index_interval_bytes: 64,
            },
        )
        .unwrap();
        for i in 0..40 {
            log.append(
                &records(3, &format!("a{i}")),
                i / 10,
                ProducerInfo::default(),
            )
            .unwrap();
        }
        log.append(&records(2, "p"), 4, producer).unwrap();
        assert!(log.write_checkpoint().unwrap());
        assert!(!log.write_checkpoint().unwrap(), "nothing changed");
        for i in 0..5 {
            log.append(&records(2, &format!("b{i}")), 5, ProducerInfo::default())
                .unwrap();
        }
        log.flush().unwrap();
        let values = all_values(&log);
        let epochs: Vec<_> = (0..6).map(|e| log.epoch_end_offset(e)).collect();
        let producers = log.producer_batches(9);
        let end = log.log_end_offset();
        drop(log); // a crash: no close

        let log = PartitionLog::open(
            dir.path(),
            LogConfig {
                segment_bytes: 4096,
                index_interval_bytes: 64,
            },
        )
        .unwrap();
        assert!(log.resumed_at_checkpoint());
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(all_values(&log), values);
        assert_eq!(
            (0..6).map(|e| log.epoch_end_offset(e)).collect::<Vec<_>>(),
            epochs
        );
        assert_eq!(log.producer_batches(9), producers);
        assert_eq!(log.last_leader_epoch(), Some(5));
    }

    #[test]
    fn open_ignores_a_checkpoint_that_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            index_interval_bytes: 64,
        };
        let log = PartitionLog::open(dir.path(), config).unwrap();
        for i in 0..10 {
            log.append(&records(2, &format!("a{i}")), 0, ProducerInfo::default())
                .unwrap();
        }
        log.write_checkpoint().unwrap();
        let values = all_values(&log);
        drop(log);
        let path = dir.path().join(CHECKPOINT_FILE_NAME);
        let good = fs::read(&path).unwrap();

        // A damaged file, and a valid one whose position is not a batch end,
        // both fall back to a full scan with the same result.
        let mut damaged = good.clone();
        damaged[10] ^= 1;
        fs::write(&path, &damaged).unwrap();
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert!(!log.resumed_at_checkpoint());
        assert_eq!(all_values(&log), values);
        drop(log);

        let mut checkpoint = crate::log::partition::Checkpoint::decode(&good).unwrap();
        checkpoint.position -= 1;
        fs::write(&path, checkpoint.encode()).unwrap();
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert!(!log.resumed_at_checkpoint());
        assert_eq!(all_values(&log), values);
        assert_eq!(log.log_end_offset(), 20);
    }

    #[test]
    fn truncation_forgets_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            index_interval_bytes: 64,
        };
        let log = PartitionLog::open(dir.path(), config).unwrap();
        for i in 0..10 {
            log.append(&records(2, &format!("a{i}")), 0, ProducerInfo::default())
                .unwrap();
        }
        log.write_checkpoint().unwrap();
        log.truncate_to(6).unwrap();
        assert!(!dir.path().join(CHECKPOINT_FILE_NAME).exists());
        // Different batches of other sizes take the old place.
        log.append(
            &records(7, "long-values-after-truncation"),
            1,
            ProducerInfo::default(),
        )
        .unwrap();
        log.flush().unwrap();
        let values = all_values(&log);
        drop(log);
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert!(!log.resumed_at_checkpoint());
        assert_eq!(all_values(&log), values);
        assert_eq!(log.last_leader_epoch(), Some(1));
    }

    #[test]
    fn close_leaves_nothing_to_scan() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            index_interval_bytes: 64,
        };
        let log = PartitionLog::open(dir.path(), config).unwrap();
        for i in 0..10 {
            log.append(&records(2, &format!("a{i}")), 0, ProducerInfo::default())
                .unwrap();
        }
        let size = log.segments()[0].size_bytes;
        log.close().unwrap();
        drop(log);
        let bytes = fs::read(dir.path().join(CHECKPOINT_FILE_NAME)).unwrap();
        let checkpoint = crate::log::partition::Checkpoint::decode(&bytes).unwrap();
        assert_eq!(checkpoint.position, size);
        assert_eq!(checkpoint.next_offset, 20);
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert!(log.resumed_at_checkpoint());
        assert_eq!(log.log_end_offset(), 20);
    }
}
