//! `ferry-log verify`: checks a partition directory and prints each problem
//! as `FILE:BYTE: message`, where BYTE is a byte position in FILE.
//!
//! Checks per segment:
//!
//! - every batch frames inside the file, passes its length, magic and CRC
//!   checks, and its records decode;
//! - the first batch starts at the segment's base offset, and each later one
//!   at the offset after the previous batch;
//! - leader epochs do not decrease, and no batch is empty;
//! - a segment other than the last has no bytes after its data;
//! - the segment starts where the previous segment ended.
//!
//! The offset and time indexes are checked as `indexes.rs` describes.

use std::fmt;
use std::path::Path;

use ferry::log::reader::{list_segments, SegmentFiles, SegmentReader};
use ferry::log::{decode_batch, decode_header, BatchHeader};

use crate::indexes::{self, BatchSpan, Problem, Spans};

/// Counts over everything verified.
#[derive(Debug, Default)]
pub struct Totals {
    pub partitions: u64,
    pub segments: u64,
    pub batches: u64,
    pub problems: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.partitions += other.partitions;
        self.segments += other.segments;
        self.batches += other.batches;
        self.problems += other.problems;
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verified {} partitions, {} segments, {} batches: {} problems",
            self.partitions, self.segments, self.batches, self.problems
        )
    }
}

/// Verifies the partition in `dir`, printing each problem to stdout.
pub fn verify_partition(dir: &Path) -> Totals {
    let mut totals = Totals {
        partitions: 1,
        ..Totals::default()
    };
    let segments = match list_segments(dir) {
        Ok(segments) => segments,
        Err(err) => {
            report(
                &mut totals,
                dir,
                0,
                &format!("failed to list directory: {err}"),
            );
            return totals;
        }
    };

    let mut expected_offset: Option<u64> = None;
    let mut leader_epoch = 0;
    for (i, segment) in segments.iter().enumerate() {
        totals.segments += 1;
        if let Some(expected) = expected_offset {
            if segment.base_offset != expected {
                let message = format!(
                    "segment base offset {} does not follow the previous segment, which ends \
                     before offset {expected}",
                    segment.base_offset
                );
                report(&mut totals, &segment.log_path, 0, &message);
            }
        }

        // The indexes are read before the batches, so that on a live
        // partition every entry in them refers to a batch that the scan
        // reaches.
        let offset_index = indexes::read_offset_index(segment);
        let time_index = indexes::read_time_index(segment);
        let is_last = i + 1 == segments.len();
        let (next_offset, spans) = verify_batches(segment, is_last, &mut leader_epoch, &mut totals);
        let problems = match offset_index {
            Ok(entries) => indexes::check_offset_index(segment, &entries, &spans),
            Err(problem) => vec![problem],
        };
        report_all(&mut totals, problems);
        let problems = match time_index {
            Ok(entries) => indexes::check_time_index(segment, &entries, &spans, !is_last),
            Err(problem) => vec![problem],
        };
        report_all(&mut totals, problems);
        expected_offset = Some(next_offset);
    }
    totals
}

/// Checks the batches of one segment. Returns the offset after the last
/// batch and the span of every batch by position.
fn verify_batches(
    segment: &SegmentFiles,
    is_last: bool,
    leader_epoch: &mut u32,
    totals: &mut Totals,
) -> (u64, Spans) {
    let path = &segment.log_path;
    let mut spans = Spans::new();
    let mut next_offset = segment.base_offset;
    let mut reader = match SegmentReader::open(path) {
        Ok(reader) => reader,
        Err(err) => {
            report(totals, path, 0, &format!("failed to open: {err}"));
            return (next_offset, spans);
        }
    };

    loop {
        let raw = match reader.next_batch() {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(err) => {
                report(totals, path, reader.position(), &err.to_string());
                return (next_offset, spans);
            }
        };
        totals.batches += 1;
        let position = raw.position;

        let header = match decode_batch(&raw.bytes) {
            Ok(batch) => batch.header,
            Err(err) => {
                report(totals, path, position, &err.to_string());
                // The frame was sound, so the scan goes on. The header's
                // offsets are used to check the batches after it.
                match decode_header(&raw.bytes) {
                    Ok(header) => header,
                    Err(_) => continue,
                }
            }
        };
        let follows = check_header(&header, next_offset, *leader_epoch, path, position, totals);

        spans.insert(
            position,
            BatchSpan {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                max_timestamp: header.max_timestamp,
            },
        );
        // After a base offset that does not follow, the batch is assumed to
        // hold the offsets it should: a damaged base offset (outside the CRC)
        // is then one problem and not one per later batch.
        next_offset = if follows {
            header.next_offset()
        } else {
            next_offset + (header.next_offset() - header.base_offset)
        };
        *leader_epoch = (*leader_epoch).max(header.leader_epoch);
    }

    let data_end = reader.position();
    if !is_last && data_end < reader.file_len() {
        let message = format!(
            "{} bytes follow the data of a segment that is not the last (untrimmed tail)",
            reader.file_len() - data_end
        );
        report(totals, path, data_end, &message);
    }
    (next_offset, spans)
}

fn check_header(
    header: &BatchHeader,
    expected_offset: u64,
    leader_epoch: u32,
    path: &Path,
    position: u64,
    totals: &mut Totals,
) -> bool {
    let follows = header.check_follows(expected_offset);
    if let Err(message) = &follows {
        report(totals, path, position, message);
    }
    if header.leader_epoch < leader_epoch {
        let message = format!(
            "leader epoch {} is below the previous epoch {leader_epoch}",
            header.leader_epoch
        );
        report(totals, path, position, &message);
    }
    follows.is_ok()
}

fn report_all(totals: &mut Totals, problems: Vec<Problem>) {
    for problem in problems {
        totals.problems += 1;
        println!("{problem}");
    }
}

fn report(totals: &mut Totals, path: &Path, position: u64, message: &str) {
    totals.problems += 1;
    println!("{}:{position}: {message}", path.display());
}
