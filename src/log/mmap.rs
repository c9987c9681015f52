//! Memory maps of segment files, and the contract that makes them sound.
//!
//! A segment file is mapped whole: writable (`MmapRaw`, written through raw
//! pointers) for the active segment, read-only (`Mmap`) for sealed ones and
//! for the recovery scan. The constructors state what must hold while a map
//! lives. `segment.rs` keeps the rule that bytes below a published size are
//! never written while readers can see them. See `docs/storage-format.md` for
//! what the files contain.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapRaw};

/// Memory map of a whole segment file.
///
/// This type exists so that the contract of mapping a file is stated once,
/// on its constructors. `segment.rs` relies on it.
pub(crate) struct SegmentMap {
    kind: MapKind,
}

enum MapKind {
    Writable(MmapRaw),
    ReadOnly(Mmap),
}

impl SegmentMap {
    /// Maps the whole of `file`, which must be open for reading and writing,
    /// as shared writable memory.
    ///
    /// # Safety
    ///
    /// While the map lives, no process may truncate the file below its
    /// current length or write to it other than through this map. Ferry
    /// makes this hold with the exclusive lock on the partition directory
    /// (`PartitionLog::open`) and by dropping a segment's maps before it
    /// truncates the file. Any other writer can make reads return torn data,
    /// and a truncation makes access to the lost pages raise SIGBUS.
    pub(crate) unsafe fn writable(file: &File) -> io::Result<SegmentMap> {
        let map = MmapRaw::map_raw(file)?;
        Ok(SegmentMap {
            kind: MapKind::Writable(map),
        })
    }

    /// Maps the whole of `file` read-only.
    ///
    /// # Safety
    ///
    /// The same contract as [`SegmentMap::writable`]: while the map lives, no
    /// one truncates or writes to the file.
    pub(crate) unsafe fn read_only(file: &File) -> io::Result<SegmentMap> {
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
        }
    }

    pub(crate) fn is_writable(&self) -> bool {
        matches!(self.kind, MapKind::Writable(_))
    }

    /// Returns the whole read-only map. A writable map returns nothing,
    /// because parts of it may be written at any time.
    pub(crate) fn whole(&self) -> &[u8] {
        match &self.kind {
            MapKind::Writable(_) => &[],
            MapKind::ReadOnly(map) => map,
        }
    }

    /// Returns the first `len` bytes.
    ///
    /// # Safety
    ///
    /// `len` is at most `self.len()`, and no thread writes to the first
    /// `len` bytes while the returned slice lives.
    pub(crate) unsafe fn prefix(&self, len: usize) -> &[u8] {
        match &self.kind {
            // SAFETY: the pointer is valid for `map.len()` bytes, which is at
            // least `len`, for as long as `self` lives, and the caller
            // guarantees that nothing writes to them meanwhile.
            MapKind::Writable(map) => unsafe { std::slice::from_raw_parts(map.as_ptr(), len) },
            MapKind::ReadOnly(map) => &map[..len],
        }
    }

    /// Copies `bytes` into the map at `position`.
    ///
    /// # Safety
    ///
    /// The map is writable, `position + bytes.len()` is at most `self.len()`,
    /// and no other thread reads or writes that range meanwhile.
    pub(crate) unsafe fn write_at(&self, position: usize, bytes: &[u8]) {
        if let MapKind::Writable(map) = &self.kind {
            // SAFETY: the range is inside the map, and the caller guarantees
            // that no other thread accesses it. `bytes` is ordinary memory,
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
            MapKind::ReadOnly(_) => Ok(()),
        }
    }
}
