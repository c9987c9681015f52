//! One segment: a memory-mapped `.log` file of record batches and its sparse
//! `.index`.
//!
//! Files are named by the segment's base offset, zero-padded to 20 digits
//! (`00000000000000000000.log`). Batches follow each other from byte 0 with
//! no padding between them.
//!
//! The active segment is written through a shared writable mapping that
//! spans its whole capacity (`segment_bytes`, or a larger batch's size). The
//! file behind the mapping is shorter: `posix_fallocate` extends it in steps
//! ahead of the writes, starting at [`INITIAL_ALLOCATION_BYTES`] and at least
//! doubling each time, so an empty segment takes little disk. A write never
//! touches a byte past the allocated length, because a mapped page past the
//! file's end raises SIGBUS when touched. The file is extended first, so a
//! full disk fails the allocation with `LogError::DiskFull` before any byte
//! is copied.
//!
//! The published `size` is the end of the last complete batch. One writer at
//! a time copies a batch past `size` and then moves `size` forward with a
//! Release store. A reader that loads `size` with Acquire therefore reads
//! whole batches, never bytes that are still being written. Bytes below
//! `size` never change for the life of a `Segment` value: truncation builds a
//! new value after the old one is dropped. Between `size` and the end of the
//! file the allocated tail reads as zeros, and a `batch_length` of 0 ends the
//! data (see `reader.rs`).
//!
//! Sealing trims the file to `size`, rewrites and syncs its index, and maps
//! it read-only. A sealed segment keeps no file descriptor open, because its
//! map stays valid after the file is closed. Only the active segment keeps
//! its files open. Sealed segments are trusted on open. The active one is
//! scanned by [`Segment::recover`]. See `docs/storage-format.md`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use tracing::{info, warn};

use super::batch::BatchHeader;
use super::files::{
    io_error, load_index, load_time_index, preallocate, sync_dir, write_index_file,
    write_time_index_file,
};
use super::index::{
    decode_entries, encode_entry, validate_entries, IndexEntry, OffsetIndex, INDEX_ENTRY_LEN,
};
use super::mmap::SegmentMap;
use super::partition::Checkpoint;
use super::reader::SegmentFiles;
use super::scan::{
    batch_ends_at, build_time_index, header_at, last_header_from, scan_batches, scan_batches_from,
    Scan,
};
use super::time_index::{self, TimeIndex, TIME_INDEX_ENTRY_LEN};
use super::{LogError, SegmentInfo};

/// Length in bytes that a new segment file is allocated to, unless its
/// capacity is smaller. Later allocations at least double the length.
pub(crate) const INITIAL_ALLOCATION_BYTES: usize = 64 * 1024;

/// A segment file and its in-memory state.
pub(crate) struct Segment {
    base_offset: u64,
    files: SegmentFiles,
    /// Open files of the active segment. `None` for a sealed segment.
    open_files: Option<OpenFiles>,
    map: SegmentMap,
    /// End of the last complete batch, in bytes. Published with Release.
    size: AtomicUsize,
    /// Offset after the last complete batch. Stored after `size`.
    next_offset: AtomicU64,
    /// Length of the prefix that is known to be on disk.
    synced_size: AtomicUsize,
    /// Length of the prefix of the `.log` file that is allocated on disk.
    /// The file is at least this long. Only the writer raises it, under
    /// `write_lock`, and always before it publishes a `size` up to the new
    /// length. Equal to `size` in a sealed segment.
    allocated_len: AtomicUsize,
    /// The `allocated_len` that the last completed sync made durable.
    synced_allocated_len: AtomicUsize,
    /// Set once a geometric allocation step failed for lack of space, so
    /// that the warning is logged once per segment and not per append.
    low_space_warned: AtomicBool,
    index: RwLock<OffsetIndex>,
    /// Locked after `index` when both are held.
    times: RwLock<TimeIndex>,
    index_interval_bytes: u32,
    /// Serializes writers, so that `append` alone keeps the rule that
    /// only one thread writes past `size` or grows the file.
    write_lock: Mutex<()>,
}

/// Open files of the active segment.
struct OpenFiles {
    /// The `.log` file, kept open to extend it with `posix_fallocate`.
    log: File,
    /// The `.index` file, where entries are appended.
    index: File,
    /// The `.timeindex` file, where entries are appended.
    time_index: File,
}

/// Where the recovery of the active segment may resume: the end of the
/// prefix that a recovery checkpoint covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    /// End of the last batch the checkpoint covers.
    pub(crate) position: usize,
    /// Offset after that batch.
    pub(crate) next_offset: u64,
    /// Leader epoch of that batch, if the log has one.
    pub(crate) last_leader_epoch: Option<u32>,
    /// Newest record timestamp of the segment's batches up to there.
    pub(crate) newest_timestamp: i64,
}

/// Returns the scan state at the end of the prefix that `resume` covers,
/// or `None` when the segment or its index files do not match it. Index
/// entries below the checkpoint come from the files, which the checkpoint
/// synced; entries past it may be torn by the crash and are dropped.
fn resume_scan(files: &SegmentFiles, bytes: &[u8], resume: Resume) -> Option<Scan> {
    let mismatch = |reason: String| {
        warn!(
            segment = %files.log_path.display(),
            position = resume.position,
            next_offset = resume.next_offset,
            %reason,
            "the recovery checkpoint does not match the segment; scanning it from the start"
        );
    };
    let entries = match index_entries_below(files, bytes.len(), resume.position) {
        Ok(entries) => entries,
        Err(reason) => {
            mismatch(reason);
            return None;
        }
    };
    let index = OffsetIndex::from_entries(entries);
    if !batch_ends_at(
        bytes,
        files.base_offset,
        &index,
        resume.position,
        resume.next_offset,
    ) {
        mismatch("no batch ends at the checkpoint".into());
        return None;
    }
    let time_entries = match time_entries_below(files, resume.next_offset) {
        Ok(entries) => entries,
        Err(reason) => {
            mismatch(reason);
            return None;
        }
    };
    let times = TimeIndex::from_parts(time_entries, resume.newest_timestamp);
    Some(Scan {
        valid_size: resume.position,
        next_offset: resume.next_offset,
        last_leader_epoch: resume.last_leader_epoch,
        index,
        times,
        invalid_reason: None,
    })
}

/// Returns the entries of the `.index` file for batches below byte
/// `position`, checked like a sealed segment's, or why they cannot be used.
fn index_entries_below(
    files: &SegmentFiles,
    segment_len: usize,
    position: usize,
) -> Result<Vec<IndexEntry>, String> {
    let bytes = std::fs::read(&files.index_path)
        .map_err(|err| format!("{}: {err}", files.index_path.display()))?;
    let whole = bytes.len() - bytes.len() % INDEX_ENTRY_LEN;
    let mut entries = decode_entries(&bytes[..whole]).map_err(|err| err.to_string())?;
    entries.retain(|entry| (entry.position as usize) < position);
    validate_entries(&entries, segment_len.min(position))
        .map_err(|err| format!("{}: {err}", files.index_path.display()))?;
    Ok(entries)
}

/// Returns the entries of the `.timeindex` file below `next_offset`,
/// checked for order and range, or why they cannot be used.
fn time_entries_below(
    files: &SegmentFiles,
    next_offset: u64,
) -> Result<Vec<time_index::TimeIndexEntry>, String> {
    let path = &files.time_index_path;
    let relative_end = next_offset - files.base_offset;
    let bytes = std::fs::read(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let whole = bytes.len() - bytes.len() % TIME_INDEX_ENTRY_LEN;
    let mut entries = time_index::decode_entries(&bytes[..whole]).map_err(|err| err.to_string())?;
    entries.retain(|e| u64::from(e.relative_offset) < relative_end);
    time_index::validate_entries(&entries, relative_end)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(entries)
}

/// Scans `bytes`, the contents of the active segment `files`, as
/// [`Segment::recover`] does, and returns the scan and what recovery keeps
/// and drops. Changes no file.
pub(crate) fn scan_for_recovery(
    files: &SegmentFiles,
    bytes: &[u8],
    file: Option<&File>,
    min_leader_epoch: u32,
    index_interval_bytes: u32,
    resume: Option<Resume>,
) -> (Scan, Recovery) {
    let start = resume.and_then(|resume| resume_scan(files, bytes, resume));
    let resumed = start.is_some();
    let scanned_from = start.as_ref().map_or(0, |start| start.valid_size);
    let mut scan = match start {
        Some(start) => scan_batches_from(
            bytes,
            files.base_offset,
            min_leader_epoch,
            index_interval_bytes,
            start,
        ),
        None => scan_batches(
            bytes,
            files.base_offset,
            min_leader_epoch,
            index_interval_bytes,
        ),
    };
    let dropped_bytes = match file {
        Some(file) => stray_bytes_in_data(file, bytes, scan.valid_size),
        None => stray_bytes(bytes, scan.valid_size, bytes.len()),
    };
    let recovery = Recovery {
        resumed,
        scanned_from,
        valid_size: scan.valid_size,
        file_len: bytes.len(),
        dropped_bytes,
        invalid_reason: scan.invalid_reason.take(),
        last_leader_epoch: scan.last_leader_epoch,
        next_offset: scan.next_offset,
    };
    (scan, recovery)
}

/// Returns the bytes from `valid_size` to the last byte in
/// `valid_size..end` that is not zero, or 0 when they are all zeros.
fn stray_bytes(bytes: &[u8], valid_size: usize, end: usize) -> usize {
    bytes[valid_size..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1)
}

/// Like [`stray_bytes`] over the whole file, but reads only the ranges the
/// file system reports as data (`SEEK_DATA`, `SEEK_HOLE`). The allocated
/// tail of an active segment is unwritten space, which ext4 and XFS report
/// as a hole when no page of it is cached, so recovery does not read
/// (and fault in) tens of MiB of zeros. Falls back to reading everything
/// when the file system does not support the seek.
fn stray_bytes_in_data(file: &File, bytes: &[u8], valid_size: usize) -> usize {
    use std::os::fd::AsRawFd;

    let seek = |offset: usize, whence: libc::c_int| -> Option<usize> {
        let offset = libc::off_t::try_from(offset).ok()?;
        // SAFETY: lseek only moves the descriptor's position; the
        // descriptor stays open while `file` is borrowed.
        let found = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
        usize::try_from(found).ok()
    };
    let len = bytes.len();
    let mut last_end = valid_size;
    let mut position = valid_size;
    while position < len {
        let Some(data) = seek(position, libc::SEEK_DATA) else {
            // ENXIO: no data after `position`. Any other error: the
            // ranges are unknown, so everything is read.
            let no_more_data = io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
            return if no_more_data {
                last_end - valid_size
            } else {
                stray_bytes(bytes, valid_size, len)
            };
        };
        let hole = seek(data, libc::SEEK_HOLE).unwrap_or(len).min(len);
        if data >= len || hole <= data {
            break;
        }
        let in_range = stray_bytes(bytes, data, hole);
        if in_range > 0 {
            last_end = data + in_range;
        }
        position = hole;
    }
    last_end - valid_size
}

/// Outcome of recovering the active segment.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// Whether the scan resumed at the end of a recovery checkpoint.
    pub(crate) resumed: bool,
    /// Where the scan started: 0, or the end of a recovery checkpoint.
    pub(crate) scanned_from: usize,
    /// End of the last valid batch.
    pub(crate) valid_size: usize,
    /// Length of the file before recovery.
    pub(crate) file_len: usize,
    /// Offset after the last valid batch.
    pub(crate) next_offset: u64,
    /// Bytes from `valid_size` to the last non-zero byte of the file, which
    /// recovery turns into zeros. Besides a torn or invalid batch, these can
    /// be stray bytes after the zero `batch_length` that ended the scan.
    pub(crate) dropped_bytes: usize,
    /// Reason the scan stopped before the zero tail, if it did.
    pub(crate) invalid_reason: Option<String>,
    /// Leader epoch of the last valid batch, if there is one.
    pub(crate) last_leader_epoch: Option<u32>,
}

impl Recovery {
    /// Returns whether recovery turned bytes that were not zero into zeros.
    pub(crate) fn dropped_data(&self) -> bool {
        self.dropped_bytes > 0 || self.invalid_reason.is_some()
    }
}

impl Segment {
    /// Creates an empty active segment, replacing any file of that name.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        capacity: u64,
        index_interval_bytes: u32,
    ) -> Result<Segment, LogError> {
        let files = SegmentFiles::in_dir(dir, base_offset);
        File::create(&files.log_path).map_err(io_error(&files.log_path))?;
        let segment = Segment::activate(
            files,
            0,
            base_offset,
            (OffsetIndex::default(), TimeIndex::default()),
            capacity,
            INITIAL_ALLOCATION_BYTES as u64,
            index_interval_bytes,
        )?;
        sync_dir(dir)?;
        Ok(segment)
    }

    /// Scans the last segment of a partition from byte 0, truncates it at
    /// the first invalid batch and reopens it as the active segment.
    ///
    /// A batch is valid when all of these hold:
    /// - its length frames it inside the file, and magic byte and CRC match;
    /// - its base offset follows the previous batch (for the first batch, it
    ///   is the segment's base offset);
    /// - it contains at least one record;
    /// - its leader epoch is not below the previous batch's, or below
    ///   `min_leader_epoch` for the first batch.
    ///
    /// With `resume`, the prefix up to a recovery checkpoint is trusted when
    /// a batch ends there with the checkpoint's next offset, and the scan
    /// starts at its end, with the index entries below it taken from the
    /// `.index` file. Otherwise the scan starts at byte 0.
    pub(crate) fn recover(
        files: SegmentFiles,
        min_leader_epoch: u32,
        min_capacity: u64,
        index_interval_bytes: u32,
        resume: Option<Resume>,
    ) -> Result<(Segment, Recovery), LogError> {
        let file = File::open(&files.log_path).map_err(io_error(&files.log_path))?;
        // SAFETY: the caller holds the partition directory lock, and no other
        // value maps this file until `activate` below, after this map is
        // dropped. See `SegmentMap::read_only`.
        let map = unsafe { SegmentMap::read_only(&file) }.map_err(io_error(&files.log_path))?;
        let (scan, recovery) = scan_for_recovery(
            &files,
            map.whole(),
            Some(&file),
            min_leader_epoch,
            index_interval_bytes,
            resume,
        );
        drop(map);
        drop(file);
        let capacity = min_capacity.max(recovery.valid_size as u64);
        let segment = Segment::activate(
            files,
            recovery.valid_size,
            scan.next_offset,
            (scan.index, scan.times),
            capacity,
            0,
            index_interval_bytes,
        )?;
        Ok((segment, recovery))
    }

    /// Opens a sealed segment read-only. Its batches are trusted. Its index
    /// is loaded from the `.index` file, or rebuilt when that file is missing
    /// or fails validation. The segment keeps no file open.
    pub(crate) fn open_sealed(
        files: SegmentFiles,
        index_interval_bytes: u32,
    ) -> Result<Segment, LogError> {
        let file = File::open(&files.log_path).map_err(io_error(&files.log_path))?;
        // SAFETY: the caller holds the partition directory lock, and Ferry
        // never writes to a sealed segment. See `SegmentMap::read_only`.
        let map = unsafe { SegmentMap::read_only(&file) }.map_err(io_error(&files.log_path))?;
        // The map stays valid after the descriptor is closed.
        drop(file);
        let bytes = map.whole();
        let size = bytes.len();

        let index = match load_index(&files.index_path, size) {
            Ok(entries) => OffsetIndex::from_entries(entries),
            Err(reason) => {
                warn!(
                    index = %files.index_path.display(),
                    %reason,
                    "rebuilding offset index of sealed segment"
                );
                let scan = scan_batches(bytes, files.base_offset, 0, index_interval_bytes);
                write_index_file(&files.index_path, scan.index.entries())?;
                scan.index
            }
        };

        let last_position = index.lookup(u32::MAX) as usize;
        let next_offset = match last_header_from(bytes, last_position) {
            Some(header) => header.next_offset(),
            None => files.base_offset,
        };

        let relative_end = next_offset - files.base_offset;
        let times = match load_time_index(&files.time_index_path, relative_end) {
            Ok(entries) => TimeIndex::from_parts(entries, i64::MIN),
            Err(reason) => {
                warn!(
                    index = %files.time_index_path.display(),
                    %reason,
                    "rebuilding time index of sealed segment"
                );
                let mut times = build_time_index(bytes, files.base_offset, &index);
                times.seal(relative_end);
                write_time_index_file(&files.time_index_path, times.entries())?;
                times
            }
        };

        Ok(Segment::sealed(
            files,
            map,
            size,
            next_offset,
            (index, times),
            index_interval_bytes,
        ))
    }

    /// Returns whether a batch of this segment ends at the position of `checkpoint`,
    /// followed by its next offset.
    pub(crate) fn covers(&self, checkpoint: &Checkpoint) -> bool {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        batch_ends_at(
            self.bytes(),
            self.base_offset,
            &index,
            checkpoint.position as usize,
            checkpoint.next_offset,
        )
    }

    /// Syncs the active segment's `.index` and `.timeindex` files, so that
    /// the entries written so far survive a crash. A sealed segment's files
    /// were synced when it was sealed.
    pub(crate) fn sync_index(&self) -> Result<(), LogError> {
        let Some(open_files) = &self.open_files else {
            return Ok(());
        };
        open_files
            .index
            .sync_data()
            .map_err(io_error(&self.files.index_path))?;
        open_files
            .time_index
            .sync_data()
            .map_err(io_error(&self.files.time_index_path))
    }

    /// Reopens this segment's files as the active segment, truncated to
    /// `size` bytes, which must be a batch boundary with `next_offset` after
    /// it. The caller drops every other value of this segment first.
    pub(crate) fn reopen_truncated(
        files: SegmentFiles,
        size: usize,
        next_offset: u64,
        entries: Vec<IndexEntry>,
        capacity: u64,
        index_interval_bytes: u32,
    ) -> Result<Segment, LogError> {
        let kept = entries
            .into_iter()
            .filter(|e| (e.position as usize) < size)
            .collect();
        let segment = Segment::activate(
            files,
            size,
            next_offset,
            (OffsetIndex::from_entries(kept), TimeIndex::default()),
            capacity.max(size as u64),
            0,
            index_interval_bytes,
        )?;
        // The newest timestamp below the cut is not known without a walk of
        // the headers that are left.
        let index = segment.index.read().unwrap_or_else(PoisonError::into_inner);
        let times = build_time_index(segment.bytes(), segment.base_offset, &index);
        drop(index);
        write_time_index_file(&segment.files.time_index_path, times.entries())?;
        *segment
            .times
            .write()
            .unwrap_or_else(PoisonError::into_inner) = times;
        Ok(segment)
    }

    /// Opens the segment file for writing, cuts it to `valid_size`, allocates
    /// it again, writes the index files and syncs them all. Cutting and then
    /// allocating turns any bytes past `valid_size` into zeros.
    ///
    /// The allocated length is the file's length before the cut, raised to
    /// `min_allocated_len` and `valid_size` and capped at `capacity`, so a
    /// reopened segment keeps the disk space it had. The map spans
    /// `capacity` bytes, which must be at least `valid_size`.
    fn activate(
        files: SegmentFiles,
        valid_size: usize,
        next_offset: u64,
        (index, times): (OffsetIndex, TimeIndex),
        capacity: u64,
        min_allocated_len: u64,
        index_interval_bytes: u32,
    ) -> Result<Segment, LogError> {
        let log_error = io_error(&files.log_path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&files.log_path)
            .map_err(&log_error)?;
        let file_len = file.metadata().map_err(&log_error)?.len();
        if file_len > valid_size as u64 {
            file.set_len(valid_size as u64).map_err(&log_error)?;
        }
        let allocated_len = file_len
            .max(min_allocated_len)
            .min(capacity)
            .max(valid_size as u64);
        preallocate(&file, &files.log_path, allocated_len)?;
        file.sync_data().map_err(&log_error)?;

        write_index_file(&files.index_path, index.entries())?;
        let index_file = OpenOptions::new()
            .write(true)
            .open(&files.index_path)
            .map_err(io_error(&files.index_path))?;
        write_time_index_file(&files.time_index_path, times.entries())?;
        let time_index_file = OpenOptions::new()
            .write(true)
            .open(&files.time_index_path)
            .map_err(io_error(&files.time_index_path))?;

        // SAFETY: the caller holds the partition directory lock, and this
        // value is the only writer of the file from here on. The map spans
        // `capacity` bytes, past the file's end, but nothing touches a byte
        // at or past `allocated_len` (the file's length): readers stay below
        // `size`, and `append` extends the file before it writes further.
        // See `SegmentMap::writable`.
        let map = unsafe { SegmentMap::writable(&file, capacity as usize) }.map_err(&log_error)?;
        drop(log_error);

        let allocated_len = allocated_len as usize;
        Ok(Segment {
            base_offset: files.base_offset,
            files,
            open_files: Some(OpenFiles {
                log: file,
                index: index_file,
                time_index: time_index_file,
            }),
            map,
            size: AtomicUsize::new(valid_size),
            next_offset: AtomicU64::new(next_offset),
            synced_size: AtomicUsize::new(valid_size),
            allocated_len: AtomicUsize::new(allocated_len),
            synced_allocated_len: AtomicUsize::new(allocated_len),
            low_space_warned: AtomicBool::new(false),
            index: RwLock::new(index),
            times: RwLock::new(times),
            index_interval_bytes,
            write_lock: Mutex::new(()),
        })
    }

    /// Builds the value of a sealed segment whose file is `size` bytes long
    /// and mapped read-only by `map`.
    fn sealed(
        files: SegmentFiles,
        map: SegmentMap,
        size: usize,
        next_offset: u64,
        (index, times): (OffsetIndex, TimeIndex),
        index_interval_bytes: u32,
    ) -> Segment {
        Segment {
            base_offset: files.base_offset,
            files,
            open_files: None,
            map,
            size: AtomicUsize::new(size),
            next_offset: AtomicU64::new(next_offset),
            synced_size: AtomicUsize::new(size),
            allocated_len: AtomicUsize::new(size),
            synced_allocated_len: AtomicUsize::new(size),
            low_space_warned: AtomicBool::new(false),
            index: RwLock::new(index),
            times: RwLock::new(times),
            index_interval_bytes,
            write_lock: Mutex::new(()),
        }
    }

    /// Syncs the data, trims the file to its size, rewrites and syncs the
    /// index, and returns a read-only value for the same segment. The new
    /// value has no open file descriptor. This value keeps its own until it
    /// is dropped.
    ///
    /// Trimming comes before the caller creates the next segment, so a crash
    /// never leaves an allocated zero tail in a segment that is not the last.
    pub(crate) fn seal(&self) -> Result<Segment, LogError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(open_files) = &self.open_files else {
            return Err(self.internal_error("sealing a segment that is already sealed"));
        };
        let log_error = io_error(&self.files.log_path);

        self.sync()?;
        let size = self.size.load(Ordering::Acquire);
        open_files.log.set_len(size as u64).map_err(&log_error)?;
        open_files.log.sync_data().map_err(&log_error)?;
        let index = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        write_index_file(&self.files.index_path, index.entries())?;
        let mut times = self
            .times
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        times.seal(self.next_offset() - self.base_offset);
        write_time_index_file(&self.files.time_index_path, times.entries())?;

        // SAFETY: the file is trimmed to `size` and no one writes to a sealed
        // segment. This value's writable map never touches bytes past `size`
        // again, because `write_lock` is held and the caller replaces this
        // value. See `SegmentMap::read_only`.
        let map = unsafe { SegmentMap::read_only(&open_files.log) }.map_err(&log_error)?;

        Ok(Segment::sealed(
            self.files.clone(),
            map,
            size,
            self.next_offset(),
            (index, times),
            self.index_interval_bytes,
        ))
    }

    /// Copies one encoded batch to the end of the segment and publishes it,
    /// extending the file first when the batch does not fit in it.
    ///
    /// The caller has checked the batch and that it fits in `capacity`.
    ///
    /// # Errors
    ///
    /// `DiskFull` when the file cannot be extended to hold the batch, and
    /// `Io`. Nothing is written on error.
    pub(crate) fn append(&self, batch: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let position = self.size.load(Ordering::Acquire);
        let end = position + batch.len();
        if !self.map.is_writable() || end > self.map.len() {
            return Err(self.internal_error("batch appended past segment capacity"));
        }

        // The file must cover [position, end) before the copy, because a
        // page of the map past the file's end raises SIGBUS when touched. A
        // full disk fails here, before anything is written.
        self.ensure_allocated(end)?;

        // SAFETY: [position, end) lies inside the map. `ensure_allocated` has
        // made the file at least `end` bytes long, with the blocks reserved
        // on disk. The file shrinks only after a sealed or truncated value
        // replaces this one, so every page the copy touches is backed by the
        // file. The range is at or past the published size, which no reader
        // reads, and `write_lock` makes this the only writer.
        unsafe { self.map.write_at(position, batch) };
        self.size.store(end, Ordering::Release);
        self.next_offset
            .store(header.next_offset(), Ordering::Release);

        // The entry is added after the batch is published, so a lookup never
        // returns a position that readers cannot read yet.
        // The caller rolls before the relative offset would overflow.
        let Ok(relative_offset) = u32::try_from(header.base_offset - self.base_offset) else {
            return Ok(());
        };
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let added = index
            .maybe_append(relative_offset, position as u32, self.index_interval_bytes)
            .map(|entry| (entry, index.entries().len() - 1));
        drop(index);
        let mut times = self.times.write().unwrap_or_else(PoisonError::into_inner);
        let time_added = times
            .add_batch(relative_offset, added.is_some(), header.max_timestamp)
            .map(|entry| (entry, times.entries().len() - 1));
        drop(times);

        // The in-memory indexes are complete and `seal` rewrites the files,
        // so a failed write of an entry does not fail the append.
        let Some(open_files) = &self.open_files else {
            return Ok(());
        };
        if let Some((entry, entry_number)) = added {
            let at = (entry_number * INDEX_ENTRY_LEN) as u64;
            if let Err(error) = open_files.index.write_all_at(&encode_entry(&entry), at) {
                warn!(
                    index = %self.files.index_path.display(),
                    %error,
                    "failed to write offset index entry"
                );
            }
        }
        if let Some((entry, entry_number)) = time_added {
            let at = (entry_number * TIME_INDEX_ENTRY_LEN) as u64;
            let bytes = time_index::encode_entry(&entry);
            if let Err(error) = open_files.time_index.write_all_at(&bytes, at) {
                warn!(
                    index = %self.files.time_index_path.display(),
                    %error,
                    "failed to write time index entry"
                );
            }
        }
        Ok(())
    }

    /// Extends the file so that its first `end` bytes are allocated on disk,
    /// by the next geometric step (see [`next_allocation_len`]). When that
    /// step does not fit on the disk, it allocates exactly `end` bytes. The
    /// caller holds `write_lock`.
    fn ensure_allocated(&self, end: usize) -> Result<(), LogError> {
        let allocated = self.allocated_len.load(Ordering::Acquire);
        if end <= allocated {
            return Ok(());
        }
        let Some(open_files) = &self.open_files else {
            return Err(self.internal_error("allocating space in a sealed segment"));
        };
        let path = &self.files.log_path;
        let target = next_allocation_len(allocated, end, self.map.len());
        let reserved = match preallocate(&open_files.log, path, target as u64) {
            Ok(()) => target,
            Err(LogError::DiskFull { .. }) if target > end => {
                preallocate(&open_files.log, path, end as u64)?;
                if !self.low_space_warned.swap(true, Ordering::Relaxed) {
                    warn!(
                        path = %path.display(),
                        requested_bytes = target,
                        allocated_bytes = end,
                        "disk nearly full: segment file grows one batch at a time"
                    );
                }
                end
            }
            Err(error) => return Err(error),
        };
        self.allocated_len.store(reserved, Ordering::Release);
        Ok(())
    }

    /// Writes the published bytes that are not yet on disk with `msync`, and
    /// returns the offset up to which the segment is durable.
    ///
    /// After the file has grown, it also syncs the file with `fdatasync`, so
    /// that the new length is durable. Linux's `msync(MS_SYNC)` has
    /// `fdatasync` semantics and should cover the length already, but this
    /// does not depend on how each file system tracks it.
    pub(crate) fn sync(&self) -> Result<u64, LogError> {
        // `next_offset` is loaded first: its Acquire load makes the `size`
        // stored before it visible, so the synced range covers it. The
        // allocation that covers `size` was stored before `size`, so it is
        // visible too.
        let next_offset = self.next_offset.load(Ordering::Acquire);
        let size = self.size.load(Ordering::Acquire);
        let synced = self.synced_size.load(Ordering::Acquire);
        let allocated = self.allocated_len.load(Ordering::Acquire);
        let log_error = io_error(&self.files.log_path);
        if size > synced && self.map.is_writable() {
            self.map
                .flush_range(synced, size - synced)
                .map_err(&log_error)?;
        }
        if allocated > self.synced_allocated_len.load(Ordering::Acquire) {
            if let Some(open_files) = &self.open_files {
                open_files.log.sync_data().map_err(&log_error)?;
            }
            self.synced_allocated_len
                .fetch_max(allocated, Ordering::AcqRel);
        }
        self.synced_size.fetch_max(size, Ordering::AcqRel);
        Ok(next_offset)
    }

    /// Returns the published bytes: whole batches from byte 0.
    pub(crate) fn bytes(&self) -> &[u8] {
        let size = self.size.load(Ordering::Acquire);
        // SAFETY: `size` is inside the map and at most `allocated_len`, the
        // file's length, so no page past the file's end is touched. Bytes
        // below a published size are never written again while this value
        // lives. The Acquire load
        // pairs with the Release store in `append`, so the writes are visible.
        unsafe { self.map.prefix(size) }
    }

    /// Returns the position of the first batch whose last offset is at or
    /// above `offset`, or `None` when no such batch is published.
    pub(crate) fn find_batch(&self, offset: u64) -> Result<Option<usize>, LogError> {
        let relative = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        let mut position = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .lookup(relative) as usize;
        let bytes = self.bytes();
        while let Some(header) = self.header_at(bytes, position)? {
            if header.next_offset() > offset {
                return Ok(Some(position));
            }
            position += header.total_len();
        }
        Ok(None)
    }

    /// Decodes the header of the batch at `position` of `bytes`, or returns
    /// `None` at the end of data.
    pub(crate) fn header_at(
        &self,
        bytes: &[u8],
        position: usize,
    ) -> Result<Option<BatchHeader>, LogError> {
        match header_at(bytes, position) {
            Ok(header) => Ok(header),
            Err(reason) => Err(LogError::Corrupt {
                path: self.files.log_path.clone(),
                position: position as u64,
                offset: None,
                reason,
            }),
        }
    }

    /// Returns the header of the last batch, or `None` when the segment is
    /// empty.
    pub(crate) fn last_header(&self) -> Option<BatchHeader> {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let start = index.lookup(u32::MAX) as usize;
        drop(index);
        last_header_from(self.bytes(), start)
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub(crate) fn files(&self) -> &SegmentFiles {
        &self.files
    }

    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Returns the mapped length: the maximum size of an active segment,
    /// which its file reaches only as data arrives, or the file size of a
    /// sealed one.
    pub(crate) fn capacity(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_sealed(&self) -> bool {
        !self.map.is_writable()
    }

    pub(crate) fn index_entries(&self) -> Vec<IndexEntry> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries()
            .to_vec()
    }

    /// Returns the newest record timestamp of the published batches, or
    /// `i64::MIN` when there is none.
    pub(crate) fn newest_timestamp(&self) -> i64 {
        self.times
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .newest()
    }

    /// Returns the offset where a search for the first record at or after
    /// `timestamp_ms` starts: every record below it is older.
    pub(crate) fn time_search_start(&self, timestamp_ms: i64) -> u64 {
        let times = self.times.read().unwrap_or_else(PoisonError::into_inner);
        self.base_offset + u64::from(times.search_start(timestamp_ms))
    }

    pub(crate) fn info(&self) -> SegmentInfo {
        SegmentInfo {
            base_offset: self.base_offset,
            path: self.files.log_path.clone(),
            size_bytes: self.size() as u64,
            next_offset: self.next_offset(),
        }
    }
}

impl Segment {
    fn internal_error(&self, message: &str) -> LogError {
        LogError::Io {
            path: self.files.log_path.clone(),
            source: io::Error::other(format!("internal error: {message}")),
        }
    }
}

/// Returns the file length to allocate so that `needed` bytes fit: twice
/// `allocated`, at least [`INITIAL_ALLOCATION_BYTES`] and `needed`, and at
/// most `capacity`. The caller has checked that `needed <= capacity`.
fn next_allocation_len(allocated: usize, needed: usize, capacity: usize) -> usize {
    allocated
        .saturating_mul(2)
        .max(INITIAL_ALLOCATION_BYTES)
        .max(needed)
        .min(capacity)
}

/// Logs what recovery did to the active segment of `dir`: at `info` when it
/// kept every byte, at `warn` when it dropped bytes, because that loses data
/// an operator must know about.
pub(crate) fn log_recovery(dir: &Path, segment: &Segment, recovery: &Recovery) {
    if !recovery.dropped_data() {
        info!(
            dir = %dir.display(),
            segment = segment.base_offset(),
            scanned_from = recovery.scanned_from,
            valid_end = recovery.valid_size,
            next_offset = segment.next_offset(),
            "recovered active segment"
        );
        return;
    }
    let reason = recovery
        .invalid_reason
        .as_deref()
        .unwrap_or("non-zero bytes after the zero batch_length that ends the data");
    warn!(
        path = %segment.files().log_path.display(),
        scanned_from = recovery.scanned_from,
        valid_end = recovery.valid_size,
        next_offset = segment.next_offset(),
        dropped_bytes = recovery.dropped_bytes,
        reason,
        "recovery dropped the tail of the active segment"
    );
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::FileExt;

    use super::*;

    /// The data-range search finds the same stray bytes as a full read, in
    /// a file with a preallocated, unwritten tail.
    #[test]
    fn stray_bytes_in_data_matches_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        preallocate(&file, &path, 4 << 20).unwrap();
        let cases: [&[(u64, &[u8])]; 4] = [
            &[],
            &[(100, b"torn")],
            &[(100, b"torn"), (3 << 20, b"stray page")],
            &[(0, b"kept batch"), (200_000, b"x")],
        ];
        for writes in cases {
            file.set_len(0).unwrap();
            preallocate(&file, &path, 4 << 20).unwrap();
            for (at, bytes) in writes {
                file.write_all_at(bytes, *at).unwrap();
            }
            file.sync_all().unwrap();
            let bytes = fs::read(&path).unwrap();
            let valid_size = 50;
            assert_eq!(
                stray_bytes_in_data(&file, &bytes, valid_size),
                stray_bytes(&bytes, valid_size, bytes.len()),
                "{writes:?}"
            );
        }
    }
}
