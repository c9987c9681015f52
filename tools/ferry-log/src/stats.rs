//! `ferry-log stats`: a summary per partition: segments, bytes, batches,
//! records, offsets and the time range of the records.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use ferry::log::decode_header;
use ferry::log::reader::{list_segments, SegmentReader};
use serde_json::json;

/// The summary of one partition.
#[derive(Debug, Default)]
pub struct Stats {
    segments: usize,
    bytes: u64,
    batches: u64,
    records: u64,
    first_offset: Option<u64>,
    next_offset: Option<u64>,
    oldest_ms: Option<i64>,
    newest_ms: Option<i64>,
    /// Batches whose header could not be read; counting stops there.
    unreadable: u64,
}

/// Reads the batch headers of the partition in `dir` (not the records, and
/// without checking CRCs: `verify` does that).
pub fn partition_stats(dir: &Path) -> Result<Stats> {
    let segments =
        list_segments(dir).with_context(|| format!("failed to list {}", dir.display()))?;
    let mut stats = Stats {
        segments: segments.len(),
        ..Stats::default()
    };
    for segment in &segments {
        let mut reader = SegmentReader::open(&segment.log_path)
            .with_context(|| format!("failed to open {}", segment.log_path.display()))?;
        loop {
            let raw = match reader.next_batch() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(_) => {
                    stats.unreadable += 1;
                    break;
                }
            };
            let Ok(header) = decode_header(&raw.bytes) else {
                stats.unreadable += 1;
                break;
            };
            stats.bytes += raw.bytes.len() as u64;
            stats.batches += 1;
            stats.records += u64::from(header.record_count);
            stats.first_offset.get_or_insert(header.base_offset);
            stats.next_offset = Some(header.last_offset() + 1);
            if header.record_count > 0 {
                // Timestamps may step back, so both ends are minimum and
                // maximum over the batches.
                let first = header.first_timestamp;
                stats.oldest_ms = Some(stats.oldest_ms.map_or(first, |old| old.min(first)));
                let max = header.max_timestamp;
                stats.newest_ms = Some(stats.newest_ms.map_or(max, |new| new.max(max)));
            }
        }
    }
    Ok(stats)
}

impl Stats {
    /// Returns whether every batch header could be read.
    pub fn is_clean(&self) -> bool {
        self.unreadable == 0
    }

    /// Returns the summary as one JSON object.
    pub fn to_json(&self, dir: &Path) -> serde_json::Value {
        json!({
            "partition": dir.display().to_string(),
            "segments": self.segments,
            "bytes": self.bytes,
            "batches": self.batches,
            "records": self.records,
            "start_offset": self.first_offset,
            "end_offset": self.next_offset,
            "oldest_timestamp": self.oldest_ms,
            "newest_timestamp": self.newest_ms,
            "unreadable_batches": self.unreadable,
        })
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offsets = match (self.first_offset, self.next_offset) {
            (Some(first), Some(next)) => format!("offsets {first} to {}", next - 1),
            _ => "no records".to_string(),
        };
        let times = match (self.oldest_ms, self.newest_ms) {
            (Some(oldest), Some(newest)) => format!(", times {oldest} to {newest} ms"),
            _ => String::new(),
        };
        write!(
            f,
            "{} segments, {} bytes, {} batches, {} records, {offsets}{times}",
            self.segments, self.bytes, self.batches, self.records
        )?;
        if self.unreadable > 0 {
            write!(
                f,
                "; stopped at an unreadable batch (run `ferry-log verify`)"
            )?;
        }
        Ok(())
    }
}
