//! Memory maps of segment files, and the contract that makes them sound.
//!
//! The active segment is mapped writable (`MmapRaw`, written through raw
//! pointers) over its whole capacity, which may extend past the end of the
//! file. Sealed segments, and the recovery scan, map the whole file read-only
//! (`Mmap`). An empty file gets no mapping at all. A map stays valid after its
//! file descriptor is closed, so only the active segment keeps its file open.
//! The constructors state what must hold while a map lives. `segment.rs`
//! keeps the rule that bytes below a published size are never written while
//! readers can see them, and that no byte past the file's end is touched.
//! See `docs/storage-format.md` for what the files contain.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions, MmapRaw};

/// Memory map of a segment file.
///
/// This type exists so that the contract of mapping a file is stated once,
/// on its constructors. `segment.rs` relies on it.
pub(crate) struct SegmentMap {
    kind: MapKind,
}

enum MapKind {
    Writable(MmapRaw),
    ReadOnly(Mmap),
    /// A read-only view of an empty file, which needs no mapping.
    Empty,
}

impl SegmentMap {
    /// Maps `len` bytes of `file`, which must be open for reading and
    /// writing, as shared writable memory. `len` may exceed the file's
    /// length.
    ///
    /// # Safety
    ///
    /// While the map lives, no process may truncate the file below a length
    /// whose bytes are still read or written through the map, or write to
    /// the file other than through this map. Ferry makes this hold with the
    /// exclusive lock on the partition directory (`PartitionLog::open`) and
    /// by dropping a segment's maps before it truncates the file. Any other
    /// writer can make reads return torn data.
    ///
    /// On Linux a shared file mapping may extend past the end of the file,
    /// but touching a page that lies wholly past the end raises SIGBUS. So
    /// the caller reads and writes only bytes below the file's length, and
    /// extends the file (`posix_fallocate`) before it writes further.
    pub(crate) unsafe fn writable(file: &File, len: usize) -> io::Result<SegmentMap> {
        let map = MmapOptions::new().len(len).map_raw(file)?;
        Ok(SegmentMap {
            kind: MapKind::Writable(map),
        })
    }

    /// Maps the whole of `file` read-only. An empty file is not mapped.
    ///
    /// # Safety
    ///
    /// While the map lives, no one truncates or writes to the file. A
    /// truncation makes access to the lost pages raise SIGBUS.
    pub(crate) unsafe fn read_only(file: &File) -> io::Result<SegmentMap> {
        if file.metadata()?.len() == 0 {
            return Ok(SegmentMap {
                kind: MapKind::Empty,
            });
        }
        // SAFETY: the caller upholds the contract above, which is the one
        // `Mmap::map` requires.
        let map = unsafe { Mmap::map(file)? };
        Ok(SegmentMap {
            kind: MapKind::ReadOnly(map),
        })
    }

    pub(crate) fn len(&self) -> usize {
        match &self.kind {
            MapKind::Writable(map) => map.len(),
            MapKind::ReadOnly(map) => map.len(),
            MapKind::Empty => 0,
        }
    }

    pub(crate) fn is_writable(&self) -> bool {
        matches!(self.kind, MapKind::Writable(_))
    }

    /// Returns the whole read-only map. A writable map returns nothing,
    /// because parts of it may be written at any time.
    pub(crate) fn whole(&self) -> &[u8] {
        match &self.kind {
            MapKind::Writable(_) | MapKind::Empty => &[],
            MapKind::ReadOnly(map) => map,
        }
    }

    /// Returns the first `len` bytes.
    ///
    /// # Safety
    ///
    /// `len` is at most `self.len()` and, for a writable map, at most the
    /// file's length. No thread writes to the first `len` bytes while the
    /// returned slice lives.
    pub(crate) unsafe fn prefix(&self, len: usize) -> &[u8] {
        match &self.kind {
            // SAFETY: the pointer is valid for `map.len()` bytes, which is at
            // least `len`, for as long as `self` lives. The caller guarantees
            // that the file covers these bytes, so touching them raises no
            // SIGBUS, and that nothing writes to them meanwhile.
            MapKind::Writable(map) => unsafe { std::slice::from_raw_parts(map.as_ptr(), len) },
            MapKind::ReadOnly(map) => &map[..len],
            MapKind::Empty => &[0; 0][..len],
        }
    }

    /// Copies `bytes` into the map at `position`.
    ///
    /// # Safety
    ///
    /// The map is writable, `position + bytes.len()` is at most `self.len()`
    /// and at most the file's length, and no other thread reads or writes
    /// that range meanwhile.
    pub(crate) unsafe fn write_at(&self, position: usize, bytes: &[u8]) {
        if let MapKind::Writable(map) = &self.kind {
            // SAFETY: the range is inside the map and, as the caller
            // guarantees, inside the file, so no page past the file's end is
            // touched. The caller also guarantees that no other thread
            // accesses the range. `bytes` is ordinary memory,
            // which a shared file map cannot overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    map.as_mut_ptr().add(position),
                    bytes.len(),
                );
            }
        }
    }

    pub(crate) fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        match &self.kind {
            MapKind::Writable(map) => map.flush_range(offset, len),
            MapKind::ReadOnly(_) | MapKind::Empty => Ok(()),
        }
    }
}
