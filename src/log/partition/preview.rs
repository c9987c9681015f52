//! A preview of the recovery that opening a partition runs on its active
//! segment, computed without changing a file, for `ferry-log recover`.

use std::fs;
use std::path::{Path, PathBuf};

use super::checkpoint;
use crate::log::files::io_error;
use crate::log::reader::list_segments;
use crate::log::scan::last_header_from;
use crate::log::segment::scan_for_recovery;
use crate::log::{LogError, DEFAULT_INDEX_INTERVAL_BYTES};

/// The part of the active (last) segment of a partition that
/// [`PartitionLog::open`](super::PartitionLog::open) would keep and the part it would cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPreview {
    /// The active segment's `.log` file.
    pub segment: PathBuf,
    /// Whether the scan would start at the recovery checkpoint.
    pub resumed_at_checkpoint: bool,
    /// Byte where the scan would start: 0, or the checkpoint's end.
    pub scanned_from: u64,
    /// End of the last valid batch: the segment is cut here.
    pub valid_end: u64,
    /// Length of the file now, including an allocated zero tail.
    pub file_len: u64,
    /// Bytes after `valid_end` up to the last one that is not zero, which
    /// recovery would turn into zeros. 0 when only the zero tail follows.
    pub dropped_bytes: u64,
    /// Reason the scan stopped before the zero tail, if it did.
    pub reason: Option<String>,
    /// The log end offset after recovery.
    pub log_end_offset: u64,
}

impl RecoveryPreview {
    /// Returns whether recovery would drop bytes that are not zeros.
    pub fn drops_data(&self) -> bool {
        self.dropped_bytes > 0 || self.reason.is_some()
    }
}

/// Returns what opening the partition in `dir` would do to its active
/// segment, or `None` when it has no segment. Reads the files with plain
/// reads and changes none, so it can run while a broker has the partition
/// open. The preview then describes the moment of the read.
///
/// # Errors
///
/// `Io` when a segment cannot be listed or read.
pub fn preview_recovery(dir: &Path) -> Result<Option<RecoveryPreview>, LogError> {
    let segments = list_segments(dir).map_err(io_error(dir))?;
    let Some((last, sealed)) = segments.split_last() else {
        return Ok(None);
    };
    let previous_epoch = match sealed.last() {
        Some(previous) => {
            let bytes = fs::read(&previous.log_path).map_err(io_error(&previous.log_path))?;
            last_header_from(&bytes, 0).map_or(0, |h| h.leader_epoch)
        }
        None => 0,
    };
    let resume = checkpoint::read(dir).and_then(|c| c.resume_in(last));
    let bytes = fs::read(&last.log_path).map_err(io_error(&last.log_path))?;
    let (_, recovery) = scan_for_recovery(
        last,
        &bytes,
        None,
        previous_epoch,
        DEFAULT_INDEX_INTERVAL_BYTES,
        resume,
    );
    Ok(Some(RecoveryPreview {
        segment: last.log_path.clone(),
        resumed_at_checkpoint: recovery.resumed,
        scanned_from: recovery.scanned_from as u64,
        valid_end: recovery.valid_size as u64,
        file_len: recovery.file_len as u64,
        dropped_bytes: recovery.dropped_bytes as u64,
        reason: recovery.invalid_reason,
        log_end_offset: recovery.next_offset,
    }))
}
