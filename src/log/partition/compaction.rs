//! Compaction of keyed logs: each key keeps only its latest record, and a
//! tombstone (a record without a value) is removed once it is old enough.
//!
//! A pass works on the sealed segments that end at or below a given offset
//! (the caller's `clean_below`, at most the high watermark). It reads them
//! once to find the latest offset of every key, then rewrites them oldest
//! first. Offsets never change: a rewritten batch keeps its base offset and
//! `last_offset_delta`, carries [`ATTRIBUTE_COMPACTED`] and holds the records
//! that survived. A batch left with no record is dropped, except when it is
//! the first batch of a leader epoch, an idempotent producer's batch, or the
//! last batch of its segment (of the merged segment, when segments merge):
//! those stay as empty batches, so that the epoch history, the producer
//! table and the segment's end offset read the same after compaction. Records without a key are kept.
//!
//! Consecutive segments whose rewritten bytes fit in `segment_bytes` are
//! merged into one file, named after the first. The new file is written and
//! synced as `<name>.log.cleaned` before it replaces the first segment's
//! `.log`; the index of that segment is deleted before the rename and written
//! after it, and the other segments of the group are deleted last. A crash
//! in between leaves either the old files, or the merged segment plus old
//! segments that it covers, which `open` deletes (see
//! [`remove_covered_segment`]). The segment list is swapped under the
//! writer lock for the duration of a few renames; appends wait that long.
//!
//! Memory: the key map holds every distinct key of the compacted range, and
//! a group's rewritten bytes are held until the group is written, at most
//! `segment_bytes` plus one segment.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use tracing::{info, warn};

use super::truncate::remove_file;
use super::PartitionLog;
use crate::log::batch::{decode_batch, encode_compacted, RecordBatch};
use crate::log::files::{
    io_error, remove_segment_files, sync_dir, write_index_file, write_time_index_file,
};
use crate::log::reader::SegmentFiles;
use crate::log::scan::scan_batches;
use crate::log::segment::Segment;
use crate::log::LogError;

/// Suffix of a rewritten segment before it replaces the original.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// What one compaction pass may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Only sealed segments that end at or below this offset are rewritten,
    /// and only records below it decide which record of a key is the latest.
    pub clean_below: u64,
    /// A tombstone whose timestamp is more than this many ms before
    /// `now_ms` is removed. Younger tombstones stay, so that a reader that
    /// is behind still learns that the key was deleted.
    pub tombstone_retention_ms: u64,
    /// The current time, in ms since the Unix epoch.
    pub now_ms: i64,
}

/// The result of one compaction pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Segments that were rewritten (merged ones included).
    pub segments_rewritten: usize,
    /// Segments that replaced them.
    pub segments_written: usize,
    /// Records removed.
    pub records_removed: u64,
    /// Bytes of the rewritten segments before the pass.
    pub bytes_before: u64,
    /// Bytes of the segments that replaced them.
    pub bytes_after: u64,
}

impl PartitionLog {
    /// Compacts the sealed segments below `compaction.clean_below`, as the
    /// module documentation describes. Passes on one log run one at a time;
    /// appends, reads, flushes and retention go on during a pass.
    ///
    /// # Errors
    ///
    /// `Corrupt` when a batch of the range does not decode (nothing is
    /// rewritten then), and `Io`. A group that was not installed leaves the
    /// log as it was.
    pub fn compact(&self, compaction: Compaction) -> Result<CompactionOutcome, LogError> {
        let _pass = self
            .compacting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let candidates: Vec<Arc<Segment>> = {
            let segments = self.read_segments();
            let sealed = &segments[..segments.len().saturating_sub(1)];
            sealed
                .iter()
                .take_while(|s| s.next_offset() <= compaction.clean_below)
                .cloned()
                .collect()
        };
        let mut outcome = CompactionOutcome::default();
        if candidates.is_empty() {
            return Ok(outcome);
        }
        let latest = latest_offsets(&candidates)?;

        let mut rewriter = Rewriter {
            latest: &latest,
            compaction,
            previous_epoch: None,
        };
        let limit = self.config.segment_bytes as usize;
        let mut group = Group::default();
        for segment in candidates {
            let rewritten = rewriter.rewrite(&segment)?;
            if !group.segments.is_empty() && group.len() + rewritten.bytes.len() > limit {
                self.finish_group(std::mem::take(&mut group), &mut outcome)?;
            }
            group.push(segment, rewritten);
        }
        self.finish_group(group, &mut outcome)?;

        if outcome.segments_rewritten > 0 {
            info!(
                dir = %self.dir.display(),
                segments_rewritten = outcome.segments_rewritten,
                segments_written = outcome.segments_written,
                records_removed = outcome.records_removed,
                bytes_before = outcome.bytes_before,
                bytes_after = outcome.bytes_after,
                "compacted partition log"
            );
        }
        Ok(outcome)
    }

    /// Installs `group` unless a lone segment would stay the same.
    fn finish_group(&self, group: Group, outcome: &mut CompactionOutcome) -> Result<(), LogError> {
        if group.segments.is_empty() || (group.segments.len() == 1 && !group.changed) {
            return Ok(());
        }
        let bytes_before: u64 = group.segments.iter().map(|s| s.size() as u64).sum();
        let bytes: Vec<u8> = group.parts.concat();
        if self.install(&group.segments, &bytes)? {
            outcome.segments_rewritten += group.segments.len();
            outcome.segments_written += 1;
            outcome.records_removed += group.records_removed;
            outcome.bytes_before += bytes_before;
            outcome.bytes_after += bytes.len() as u64;
        }
        Ok(())
    }

    /// Replaces the consecutive segments `group` with one segment holding
    /// `bytes`. Returns false, and changes nothing, when the segment list no
    /// longer holds the group (retention or truncation came first).
    fn install(&self, group: &[Arc<Segment>], bytes: &[u8]) -> Result<bool, LogError> {
        let files = group[0].files().clone();
        let interval = self.config.index_interval_bytes;
        let scan = scan_batches(bytes, files.base_offset, 0, interval);
        if scan.valid_size != bytes.len() {
            let reason = scan.invalid_reason.unwrap_or_default();
            return Err(LogError::Io {
                path: files.log_path,
                source: std::io::Error::other(format!(
                    "internal error: compaction produced an invalid segment: {reason}"
                )),
            });
        }
        let cleaned = cleaned_path(&files.log_path);
        write_synced(&cleaned, bytes)?;

        let mut checkpoint = self.lock_checkpoint();
        let _writer = self.lock_writer();
        let Some(at) = self.find_group(group) else {
            remove_file(&cleaned)?;
            return Ok(false);
        };
        // A checkpoint inside the group names byte positions that change.
        if let Some((segment_base, _)) = *checkpoint {
            if group.iter().any(|s| s.base_offset() == segment_base) {
                self.forget_checkpoint(&mut checkpoint)?;
            }
        }
        remove_file(&files.index_path)?;
        remove_file(&files.time_index_path)?;
        fs::rename(&cleaned, &files.log_path).map_err(io_error(&files.log_path))?;
        write_index_file(&files.index_path, scan.index.entries())?;
        let mut times = scan.times;
        times.seal(scan.next_offset - files.base_offset);
        write_time_index_file(&files.time_index_path, times.entries())?;
        for covered in &group[1..] {
            remove_segment_files(covered.files())?;
        }
        sync_dir(&self.dir)?;
        let merged = Arc::new(Segment::open_sealed(files, interval)?);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .splice(at..at + group.len(), [merged]);
        Ok(true)
    }

    /// Returns where `group` starts in the segment list, if the list still
    /// holds it as consecutive sealed segments.
    fn find_group(&self, group: &[Arc<Segment>]) -> Option<usize> {
        let segments = self.read_segments();
        let at = segments.iter().position(|s| Arc::ptr_eq(s, &group[0]))?;
        let held = segments.get(at..at + group.len())?;
        let same = held.iter().zip(group).all(|(a, b)| Arc::ptr_eq(a, b));
        // The active segment is never part of a group.
        (same && at + group.len() < segments.len()).then_some(at)
    }
}

/// Consecutive segments to be merged, with their rewritten bytes.
#[derive(Default)]
struct Group {
    segments: Vec<Arc<Segment>>,
    parts: Vec<Vec<u8>>,
    records_removed: u64,
    changed: bool,
    /// Length of the last part's final batch when it is an empty batch kept
    /// only to mark where that segment ends.
    trailing_len: Option<usize>,
}

impl Group {
    fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    fn push(&mut self, segment: Arc<Segment>, rewritten: Rewritten) {
        // The previous segment's end no longer needs marking once this one
        // follows it in the same file.
        if let (Some(previous), Some(len)) = (self.parts.last_mut(), self.trailing_len.take()) {
            previous.truncate(previous.len() - len);
            self.changed = true;
        }
        self.trailing_len = rewritten.trailing_len;
        self.segments.push(segment);
        self.parts.push(rewritten.bytes);
        self.records_removed += rewritten.records_removed;
        self.changed |= rewritten.changed;
    }
}

/// One segment after compaction.
struct Rewritten {
    bytes: Vec<u8>,
    records_removed: u64,
    /// Whether records or batches were removed.
    changed: bool,
    /// Length of the final batch when it is empty and kept only because it
    /// ends the segment.
    trailing_len: Option<usize>,
}

/// Rewrites segments in offset order.
struct Rewriter<'a> {
    latest: &'a HashMap<Bytes, u64>,
    compaction: Compaction,
    /// Leader epoch of the previous batch read, to keep the first batch of
    /// each epoch.
    previous_epoch: Option<u32>,
}

impl Rewriter<'_> {
    fn rewrite(&mut self, segment: &Segment) -> Result<Rewritten, LogError> {
        let batches = decode_segment(segment)?;
        let mut out = Rewritten {
            bytes: Vec::with_capacity(segment.size()),
            records_removed: 0,
            changed: false,
            trailing_len: None,
        };
        let count = batches.len();
        for (index, batch) in batches.into_iter().enumerate() {
            let header = batch.header;
            let before = batch.records.len();
            let kept: Vec<_> = batch
                .records
                .into_iter()
                .filter(|record| self.keeps(record))
                .collect();
            out.records_removed += (before - kept.len()) as u64;
            let first_of_epoch = self.previous_epoch != Some(header.leader_epoch);
            self.previous_epoch = Some(header.leader_epoch);
            let needed = !kept.is_empty() || first_of_epoch || header.producer_id >= 0;
            let last = index + 1 == count;
            if needed || last {
                let encoded = encode_compacted(&header, &kept);
                if !needed {
                    out.trailing_len = Some(encoded.len());
                }
                out.bytes.extend_from_slice(&encoded);
            } else {
                out.changed = true;
            }
        }
        out.changed |= out.records_removed > 0;
        Ok(out)
    }

    fn keeps(&self, record: &crate::log::Record) -> bool {
        let Some(key) = &record.key else {
            return true;
        };
        if self.latest.get(key) != Some(&record.offset) {
            return false;
        }
        if record.value.is_some() {
            return true;
        }
        let age = self.compaction.now_ms.saturating_sub(record.timestamp_ms);
        age <= self.compaction.tombstone_retention_ms.min(i64::MAX as u64) as i64
    }
}

/// Returns the offset of the latest record of every key in `segments`.
fn latest_offsets(segments: &[Arc<Segment>]) -> Result<HashMap<Bytes, u64>, LogError> {
    let mut latest = HashMap::new();
    for segment in segments {
        for batch in decode_segment(segment)? {
            for record in batch.records {
                if let Some(key) = record.key {
                    latest.insert(key, record.offset);
                }
            }
        }
    }
    Ok(latest)
}

/// Decodes every batch of a sealed segment.
fn decode_segment(segment: &Segment) -> Result<Vec<RecordBatch>, LogError> {
    let bytes = segment.bytes();
    let mut batches = Vec::new();
    let mut position = 0;
    while let Some(header) = segment.header_at(bytes, position)? {
        let end = position + header.total_len();
        let batch = decode_batch(&bytes[position..end]).map_err(|reason| LogError::Corrupt {
            path: segment.files().log_path.clone(),
            position: position as u64,
            offset: Some(header.base_offset),
            reason: reason.to_string(),
        })?;
        batches.push(batch);
        position = end;
    }
    Ok(batches)
}

fn cleaned_path(log_path: &Path) -> PathBuf {
    let mut name = log_path.as_os_str().to_owned();
    name.push(CLEANED_SUFFIX);
    PathBuf::from(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let mut file = File::create(path).map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_data().map_err(io_error(path))
}

/// Deletes what an interrupted compaction left in `dir`: rewritten files
/// that were never renamed, and sealed segments that a merged segment
/// before them already covers. `sealed` is sorted by base offset, and
/// `next_offset` of each is known once it is opened, so this runs as the
/// segments are opened: it returns whether `files` is covered by `previous`
/// and deletes it if so.
pub(crate) fn remove_covered_segment(
    previous: Option<&Segment>,
    files: &SegmentFiles,
) -> Result<bool, LogError> {
    let Some(previous) = previous else {
        return Ok(false);
    };
    if files.base_offset >= previous.next_offset() {
        return Ok(false);
    }
    warn!(
        segment = %files.log_path.display(),
        covered_by = %previous.files().log_path.display(),
        "deleting a segment that an interrupted compaction merged into the one before it"
    );
    remove_segment_files(files)?;
    Ok(true)
}

/// Deletes rewritten segment files that a crash left before their rename.
pub(crate) fn remove_cleaned_files(dir: &Path) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        if path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(CLEANED_SUFFIX))
        {
            warn!(file = %path.display(), "deleting the output of an interrupted compaction");
            remove_file(&path)?;
        }
    }
    Ok(())
}
