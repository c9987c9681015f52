//! One segment: a memory-mapped `.log` file of record batches and its sparse
//! `.index`.
//!
//! Files are named by the segment's base offset, zero-padded to 20 digits
//! (`00000000000000000000.log`). Batches follow each other from byte 0 with
//! no padding between them.
//!
//! The active segment is preallocated with `posix_fallocate` and written
//! through a shared writable mapping. Its published `size` is the end of the
//! last complete batch. One writer at a time copies a batch past `size` and
//! then moves `size` forward with a Release store. A reader that loads
//! `size` with Acquire therefore reads whole batches, never bytes that are
//! still being written. Bytes below `size` never change for the life of a
//! `Segment` value: truncation builds a new value after the old one is
//! dropped. Past `size` the preallocated tail reads as zeros, and a
//! `batch_length` of 0 ends the data (see `reader.rs`).
//!
//! Sealing trims the file to `size`, rewrites and syncs its index, and maps
//! it read-only. Sealed segments are trusted on open. The active one is
//! scanned by [`Segment::recover`]. See `docs/storage-format.md`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use tracing::{info, warn};

use super::batch::BatchHeader;
use super::files::{io_error, load_index, preallocate, sync_dir, write_index_file};
use super::index::{encode_entry, IndexEntry, OffsetIndex, INDEX_ENTRY_LEN};
use super::mmap::SegmentMap;
use super::reader::SegmentFiles;
use super::scan::{header_at, last_header_from, scan_batches};
use super::{LogError, SegmentInfo};

/// A segment file and its in-memory state.
pub(crate) struct Segment {
    base_offset: u64,
    files: SegmentFiles,
    file: File,
    map: SegmentMap,
    /// End of the last complete batch, in bytes. Published with Release.
    size: AtomicUsize,
    /// Offset after the last complete batch. Stored after `size`.
    next_offset: AtomicU64,
    /// Length of the prefix that is known to be on disk.
    synced_size: AtomicUsize,
    index: RwLock<OffsetIndex>,
    /// Open `.index` file of the active segment, where entries are appended.
    index_file: Option<File>,
    index_interval_bytes: u32,
    /// Serializes writers, so that `append` alone keeps the rule that
    /// only one thread writes past `size`.
    write_lock: Mutex<()>,
}

/// Outcome of recovering the active segment.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// End of the last valid batch.
    pub(crate) valid_size: usize,
    /// Non-zero bytes found after `valid_size` and discarded.
    pub(crate) dropped_bytes: usize,
    /// Reason the scan stopped before the zero tail, if it did.
    pub(crate) invalid_reason: Option<String>,
    /// Leader epoch of the last valid batch, if there is one.
    pub(crate) last_leader_epoch: Option<u32>,
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
            OffsetIndex::default(),
            capacity,
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
    pub(crate) fn recover(
        files: SegmentFiles,
        min_leader_epoch: u32,
        min_capacity: u64,
        index_interval_bytes: u32,
    ) -> Result<(Segment, Recovery), LogError> {
        let file = File::open(&files.log_path).map_err(io_error(&files.log_path))?;
        // SAFETY: the caller holds the partition directory lock, and no other
        // value maps this file until `activate` below, after this map is
        // dropped. See `SegmentMap::read_only`.
        let map = unsafe { SegmentMap::read_only(&file) }.map_err(io_error(&files.log_path))?;
        let bytes = map.whole();

        let scan = scan_batches(
            bytes,
            files.base_offset,
            min_leader_epoch,
            index_interval_bytes,
        );
        let dropped_bytes = match scan.invalid_reason {
            None => 0,
            Some(_) => bytes[scan.valid_size..]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1),
        };
        let recovery = Recovery {
            valid_size: scan.valid_size,
            dropped_bytes,
            invalid_reason: scan.invalid_reason,
            last_leader_epoch: scan.last_leader_epoch,
        };
        drop(map);
        drop(file);

        let capacity = min_capacity.max(recovery.valid_size as u64);
        let segment = Segment::activate(
            files,
            recovery.valid_size,
            scan.next_offset,
            scan.index,
            capacity,
            index_interval_bytes,
        )?;
        Ok((segment, recovery))
    }

    /// Opens a sealed segment read-only. Its batches are trusted. Its index
    /// is loaded from the `.index` file, or rebuilt when that file is missing
    /// or fails validation.
    pub(crate) fn open_sealed(
        files: SegmentFiles,
        index_interval_bytes: u32,
    ) -> Result<Segment, LogError> {
        let file = File::open(&files.log_path).map_err(io_error(&files.log_path))?;
        // SAFETY: the caller holds the partition directory lock, and Ferry
        // never writes to a sealed segment. See `SegmentMap::read_only`.
        let map = unsafe { SegmentMap::read_only(&file) }.map_err(io_error(&files.log_path))?;
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

        Ok(Segment {
            base_offset: files.base_offset,
            files,
            file,
            map,
            size: AtomicUsize::new(size),
            next_offset: AtomicU64::new(next_offset),
            synced_size: AtomicUsize::new(size),
            index: RwLock::new(index),
            index_file: None,
            index_interval_bytes,
            write_lock: Mutex::new(()),
        })
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
        Segment::activate(
            files,
            size,
            next_offset,
            OffsetIndex::from_entries(kept),
            capacity.max(size as u64),
            index_interval_bytes,
        )
    }

    /// Opens the segment file for writing, cuts it to `valid_size`,
    /// preallocates it to `capacity` bytes, writes the index file and syncs
    /// both. Cutting and then preallocating turns any bytes past
    /// `valid_size` into zeros.
    fn activate(
        files: SegmentFiles,
        valid_size: usize,
        next_offset: u64,
        index: OffsetIndex,
        capacity: u64,
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
        preallocate(&file, &files.log_path, capacity)?;
        file.sync_data().map_err(&log_error)?;

        write_index_file(&files.index_path, index.entries())?;
        let index_file = OpenOptions::new()
            .write(true)
            .open(&files.index_path)
            .map_err(io_error(&files.index_path))?;

        // SAFETY: the caller holds the partition directory lock, and this
        // value is the only writer of the file from here on. See
        // `SegmentMap::writable`.
        let map = unsafe { SegmentMap::writable(&file) }.map_err(&log_error)?;
        drop(log_error);

        Ok(Segment {
            base_offset: files.base_offset,
            files,
            file,
            map,
            size: AtomicUsize::new(valid_size),
            next_offset: AtomicU64::new(next_offset),
            synced_size: AtomicUsize::new(valid_size),
            index: RwLock::new(index),
            index_file: Some(index_file),
            index_interval_bytes,
            write_lock: Mutex::new(()),
        })
    }

    /// Syncs the data, trims the file to its size, rewrites and syncs the
    /// index, and returns a read-only value for the same segment.
    ///
    /// Trimming comes before the caller creates the next segment, so a crash
    /// never leaves a preallocated tail in a segment that is not the last.
    pub(crate) fn seal(&self) -> Result<Segment, LogError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let log_error = io_error(&self.files.log_path);

        self.sync()?;
        let size = self.size.load(Ordering::Acquire);
        self.file.set_len(size as u64).map_err(&log_error)?;
        self.file.sync_data().map_err(&log_error)?;
        let index = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        write_index_file(&self.files.index_path, index.entries())?;

        let file = self.file.try_clone().map_err(&log_error)?;
        // SAFETY: the file is trimmed to `size` and no one writes to a sealed
        // segment. See `SegmentMap::read_only`.
        let map = unsafe { SegmentMap::read_only(&file) }.map_err(&log_error)?;

        Ok(Segment {
            base_offset: self.base_offset,
            files: self.files.clone(),
            file,
            map,
            size: AtomicUsize::new(size),
            next_offset: AtomicU64::new(self.next_offset()),
            synced_size: AtomicUsize::new(size),
            index: RwLock::new(index),
            index_file: None,
            index_interval_bytes: self.index_interval_bytes,
            write_lock: Mutex::new(()),
        })
    }

    /// Copies one encoded batch to the end of the segment and publishes it.
    ///
    /// The caller has checked the batch and that it fits in `capacity`.
    pub(crate) fn append(&self, batch: &[u8], header: &BatchHeader) -> Result<(), LogError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let position = self.size.load(Ordering::Acquire);
        let end = position + batch.len();
        if !self.map.is_writable() || end > self.map.len() {
            return Err(LogError::Io {
                path: self.files.log_path.clone(),
                source: io::Error::other("internal error: batch appended past segment capacity"),
            });
        }

        // SAFETY: [position, end) lies inside the map and at or past the
        // published size, which no reader reads. `write_lock` makes this the
        // only writer.
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

        if let (Some((entry, entry_number)), Some(index_file)) = (added, &self.index_file) {
            let at = (entry_number * INDEX_ENTRY_LEN) as u64;
            if let Err(error) = index_file.write_all_at(&encode_entry(&entry), at) {
                // The in-memory index is complete and `seal` rewrites the
                // file, so the append itself has not failed.
                warn!(
                    index = %self.files.index_path.display(),
                    %error,
                    "failed to write offset index entry"
                );
            }
        }
        Ok(())
    }

    /// Writes the published bytes that are not yet on disk with `msync`, and
    /// returns the offset up to which the segment is durable.
    pub(crate) fn sync(&self) -> Result<u64, LogError> {
        // `next_offset` is loaded first: its Acquire load makes the `size`
        // stored before it visible, so the synced range covers it.
        let next_offset = self.next_offset.load(Ordering::Acquire);
        let size = self.size.load(Ordering::Acquire);
        let synced = self.synced_size.load(Ordering::Acquire);
        if size > synced && self.map.is_writable() {
            self.map
                .flush_range(synced, size - synced)
                .map_err(io_error(&self.files.log_path))?;
        }
        self.synced_size.fetch_max(size, Ordering::AcqRel);
        Ok(next_offset)
    }

    /// Returns the published bytes: whole batches from byte 0.
    pub(crate) fn bytes(&self) -> &[u8] {
        let size = self.size.load(Ordering::Acquire);
        // SAFETY: `size` is inside the map, and bytes below a published size
        // are never written again while this value lives. The Acquire load
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

    /// Returns the mapped length: the preallocated size of an active
    /// segment, the file size of a sealed one.
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

    pub(crate) fn info(&self) -> SegmentInfo {
        SegmentInfo {
            base_offset: self.base_offset,
            path: self.files.log_path.clone(),
            size_bytes: self.size() as u64,
            next_offset: self.next_offset(),
        }
    }
}

impl SegmentFiles {
    /// Returns the paths of the segment with `base_offset` in `dir`.
    pub(crate) fn in_dir(dir: &Path, base_offset: u64) -> SegmentFiles {
        use super::reader::{segment_file_name, INDEX_FILE_SUFFIX, LOG_FILE_SUFFIX};
        SegmentFiles {
            base_offset,
            log_path: dir.join(segment_file_name(base_offset, LOG_FILE_SUFFIX)),
            index_path: dir.join(segment_file_name(base_offset, INDEX_FILE_SUFFIX)),
        }
    }
}

/// Logs what recovery did to the active segment of `dir`.
pub(crate) fn log_recovery(dir: &Path, segment: &Segment, recovery: &Recovery) {
    info!(
        dir = %dir.display(),
        segment = segment.base_offset(),
        valid_end = recovery.valid_size,
        next_offset = segment.next_offset(),
        dropped_bytes = recovery.dropped_bytes,
        invalid_batch = recovery.invalid_reason.as_deref().unwrap_or("none"),
        "recovered active segment"
    );
}
