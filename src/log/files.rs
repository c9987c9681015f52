//! File system helpers of the log: disk space allocation, directory sync, index
//! files and error wrapping. `docs/storage-format.md` describes the files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::index::{decode_entries, encode_entries, validate_entries, IndexEntry};
use super::reader::SegmentFiles;
use super::time_index::{self, TimeIndexEntry};
use super::LogError;

/// Maximum number of times `posix_fallocate` is retried after EINTR.
const FALLOCATE_ATTEMPTS: usize = 8;

/// Reads and validates an `.index` file against a segment of `segment_len`
/// bytes, or returns why it cannot be used.
pub(crate) fn load_index(path: &Path, segment_len: usize) -> Result<Vec<IndexEntry>, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let entries = decode_entries(&bytes).map_err(|e| e.to_string())?;
    validate_entries(&entries, segment_len).map_err(|e| e.to_string())?;
    Ok(entries)
}

pub(crate) fn write_index_file(path: &Path, entries: &[IndexEntry]) -> Result<(), LogError> {
    let mut file = File::create(path).map_err(io_error(path))?;
    file.write_all(&encode_entries(entries))
        .map_err(io_error(path))?;
    file.sync_data().map_err(io_error(path))
}

/// Reads and validates a `.timeindex` file against a segment whose next
/// offset is `relative_end` above its base offset, or returns why it cannot
/// be used.
pub(crate) fn load_time_index(
    path: &Path,
    relative_end: u64,
) -> Result<Vec<TimeIndexEntry>, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let entries = time_index::decode_entries(&bytes).map_err(|e| e.to_string())?;
    time_index::validate_entries(&entries, relative_end).map_err(|e| e.to_string())?;
    Ok(entries)
}

pub(crate) fn write_time_index_file(
    path: &Path,
    entries: &[TimeIndexEntry],
) -> Result<(), LogError> {
    let mut file = File::create(path).map_err(io_error(path))?;
    file.write_all(&time_index::encode_entries(entries))
        .map_err(io_error(path))?;
    file.sync_data().map_err(io_error(path))
}

/// Deletes the files of one segment; a file already gone is no error.
pub(crate) fn remove_segment_files(files: &SegmentFiles) -> Result<(), LogError> {
    files.remove().map_err(io_error(&files.log_path))
}

/// Reserves disk blocks for the first `len` bytes of `file`. The file grows
/// to `len` if it is shorter, and new bytes read as zeros. A `len` of 0 does
/// nothing.
pub(crate) fn preallocate(file: &File, path: &Path, len: u64) -> Result<(), LogError> {
    if len == 0 {
        return Ok(());
    }
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(LogError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    };
    for _ in 0..FALLOCATE_ATTEMPTS {
        // SAFETY: the descriptor is open for writing and stays open for the
        // call, because `file` is borrowed. The call touches no memory of
        // this process.
        let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match code {
            0 => return Ok(()),
            libc::EINTR => continue,
            libc::ENOSPC | libc::EDQUOT => {
                return Err(LogError::DiskFull {
                    path: path.to_path_buf(),
                })
            }
            code => {
                return Err(LogError::Io {
                    path: path.to_path_buf(),
                    source: io::Error::from_raw_os_error(code),
                })
            }
        }
    }
    Err(LogError::Io {
        path: path.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EINTR),
    })
}

/// Syncs a directory, so that files created or removed in it survive a
/// crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Returns a closure that wraps an `io::Error` with `path`.
pub(crate) fn io_error(path: &Path) -> impl Fn(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}
