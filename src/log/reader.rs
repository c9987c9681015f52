//! Read-only access to a partition directory, for tools and tests.
//!
//! Nothing here writes, locks or maps a file, so it is safe to point at the
//! data directory of a running broker. [`PartitionLog`](super::PartitionLog)
//! uses the same file naming and end-of-data rules:
//!
//! - Segment files are named by their base offset, zero-padded to 20 digits:
//!   `00000000000000000000.log` and `00000000000000000000.index`.
//! - Batches follow each other from byte 0 of a `.log` file. Data ends at the
//!   end of the file, or at a batch whose `batch_length` field is 0: the zero
//!   tail of an active segment, whose file is allocated ahead of its data.
//!   Fewer than 12 bytes before the end of the file also end the data when
//!   they are all zero.
//!
//! See `docs/storage-format.md` for the byte layout.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::batch::{peek_batch_length, LENGTH_PREFIX_LEN, MIN_BATCH_LENGTH};

/// Extension of segment data files.
pub const LOG_FILE_SUFFIX: &str = ".log";
/// Extension of offset index files.
pub const INDEX_FILE_SUFFIX: &str = ".index";
/// Extension of time index files.
pub const TIME_INDEX_FILE_SUFFIX: &str = ".timeindex";
/// Number of digits in a segment file name.
const FILE_NAME_DIGITS: usize = 20;

/// Paths of one segment's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFiles {
    /// Offset of the segment's first record, taken from the file name.
    pub base_offset: u64,
    /// The `.log` file.
    pub log_path: PathBuf,
    /// The `.index` file, which may be missing.
    pub index_path: PathBuf,
    /// The `.timeindex` file, which may be missing.
    pub time_index_path: PathBuf,
}

impl SegmentFiles {
    /// Returns the paths of the segment with `base_offset` in `dir`.
    pub fn in_dir(dir: &Path, base_offset: u64) -> SegmentFiles {
        SegmentFiles {
            base_offset,
            log_path: dir.join(segment_file_name(base_offset, LOG_FILE_SUFFIX)),
            index_path: dir.join(segment_file_name(base_offset, INDEX_FILE_SUFFIX)),
            time_index_path: dir.join(segment_file_name(base_offset, TIME_INDEX_FILE_SUFFIX)),
        }
    }

    /// Deletes the segment's files. A file that is already gone is not an
    /// error.
    pub fn remove(&self) -> io::Result<()> {
        for path in [&self.log_path, &self.index_path, &self.time_index_path] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// One batch as stored, with its position in the segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBatch {
    /// Byte position of the batch in the `.log` file.
    pub position: u64,
    /// The whole batch, header included. Its CRC has not been checked.
    pub bytes: Vec<u8>,
}

/// Error from [`SegmentReader::next_batch`].
#[derive(Debug, Error)]
pub enum ReadError {
    /// Reading the file failed.
    #[error("failed to read {}: {source}", path.display())]
    Io {
        /// The `.log` file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The bytes at `position` are not the start of a batch, and they are not
    /// the zero tail either.
    #[error("invalid batch at byte {position} of {}: {reason}", path.display())]
    InvalidFrame {
        /// The `.log` file.
        path: PathBuf,
        /// Byte position of the invalid batch.
        position: u64,
        /// Framing error.
        reason: FrameError,
    },
}

/// Reason that the bytes at a position do not frame a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Fewer than 12 bytes remain and they are not all zero.
    #[error("{remaining} bytes at the end of the file are too few for a batch header")]
    PartialHeader {
        /// Bytes between the position and the end of the file.
        remaining: u64,
    },
    /// `batch_length` is below the size of a header without records.
    #[error("batch length {batch_length} is below the minimum {MIN_BATCH_LENGTH}")]
    LengthTooSmall {
        /// Stored `batch_length`.
        batch_length: u32,
    },
    /// The batch would end past the end of the file.
    #[error("batch of {len} bytes extends past the end of the file ({remaining} bytes remain)")]
    PastEnd {
        /// Total batch size from its `batch_length`.
        len: u64,
        /// Bytes between the position and the end of the file.
        remaining: u64,
    },
}

/// Result of looking at the first bytes of a possible batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// No more data: the end of the file or the zero tail.
    End,
    /// A batch of `len` bytes, header included, that fits in the file.
    Batch { len: u64 },
    /// Bytes that are neither a batch nor the end of data.
    Invalid(FrameError),
}

/// Classifies the bytes at one position of a segment file.
///
/// `prefix` contains the first `min(12, remaining)` bytes at the position, and
/// `remaining` is the number of bytes from the position to the end of the
/// file. The CRC is not checked here.
pub(crate) fn classify_frame(prefix: &[u8], remaining: u64) -> Frame {
    if remaining == 0 {
        return Frame::End;
    }
    if prefix.len() < LENGTH_PREFIX_LEN {
        if prefix.iter().all(|&b| b == 0) {
            return Frame::End;
        }
        return Frame::Invalid(FrameError::PartialHeader { remaining });
    }
    let batch_length = peek_batch_length(prefix);
    if batch_length == 0 {
        return Frame::End;
    }
    if batch_length < MIN_BATCH_LENGTH {
        return Frame::Invalid(FrameError::LengthTooSmall { batch_length });
    }
    let len = LENGTH_PREFIX_LEN as u64 + u64::from(batch_length);
    if len > remaining {
        return Frame::Invalid(FrameError::PastEnd { len, remaining });
    }
    Frame::Batch { len }
}

/// Returns the file name of a segment's `.log` or `.index` file.
pub fn segment_file_name(base_offset: u64, suffix: &str) -> String {
    format!("{base_offset:0width$}{suffix}", width = FILE_NAME_DIGITS)
}

/// Parses the base offset from a `.log` file name, or returns `None` for any
/// other name.
pub fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(LOG_FILE_SUFFIX)?;
    if digits.len() != FILE_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists the segments of a partition directory, sorted by base offset.
///
/// Only `.log` files with a 20-digit name count. Other files and
/// subdirectories are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFiles>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(base_offset) = name.to_str().and_then(parse_log_file_name) else {
            continue;
        };
        if !entry.file_type()?.is_file() {
            continue;
        }
        segments.push(SegmentFiles::in_dir(dir, base_offset));
    }
    segments.sort_by_key(|s| s.base_offset);
    Ok(segments)
}

/// Sequential reader of the batches in one `.log` file, using plain reads.
///
/// The file length is taken once at open. A batch that a live broker writes
/// while the reader runs may show up as an invalid frame or a CRC mismatch.
#[derive(Debug)]
pub struct SegmentReader {
    file: File,
    path: PathBuf,
    position: u64,
    file_len: u64,
}

impl SegmentReader {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> io::Result<SegmentReader> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        Ok(SegmentReader {
            file,
            path: path.to_path_buf(),
            position: 0,
            file_len,
        })
    }

    /// Returns the position of the next batch to read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Returns the file length seen at open.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Reads the next batch, or returns `None` at the end of data.
    ///
    /// After an error the position stays at the invalid batch, so the next
    /// call returns the same error.
    pub fn next_batch(&mut self) -> Result<Option<RawBatch>, ReadError> {
        let remaining = self.file_len - self.position;
        let mut prefix = [0; LENGTH_PREFIX_LEN];
        let prefix_len = remaining.min(LENGTH_PREFIX_LEN as u64) as usize;
        self.read_at(&mut prefix[..prefix_len], self.position)?;

        match classify_frame(&prefix[..prefix_len], remaining) {
            Frame::End => Ok(None),
            Frame::Invalid(reason) => Err(ReadError::InvalidFrame {
                path: self.path.clone(),
                position: self.position,
                reason,
            }),
            Frame::Batch { len } => {
                let mut bytes = vec![0; len as usize];
                self.read_at(&mut bytes, self.position)?;
                let batch = RawBatch {
                    position: self.position,
                    bytes,
                };
                self.position += len;
                Ok(Some(batch))
            }
        }
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> Result<(), ReadError> {
        self.file
            .read_exact_at(buf, position)
            .map_err(|source| ReadError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{encode_batch, ProducerInfo};
    use crate::log::record::Record;

    #[test]
    fn segment_file_name_is_zero_padded() {
        assert_eq!(segment_file_name(0, ".log"), "00000000000000000000.log");
        assert_eq!(
            segment_file_name(42, ".index"),
            "00000000000000000042.index"
        );
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
    }

    #[test]
    fn classify_frame_cases() {
        let batch = encode_batch(0, 0, ProducerInfo::default(), &[Record::default()]);
        let len = batch.len() as u64;
        let prefix = &batch[..LENGTH_PREFIX_LEN];

        assert_eq!(classify_frame(&[], 0), Frame::End);
        assert_eq!(classify_frame(&[0; 5], 5), Frame::End);
        assert_eq!(
            classify_frame(&[0, 1, 0], 3),
            Frame::Invalid(FrameError::PartialHeader { remaining: 3 })
        );
        assert_eq!(classify_frame(&[0; 12], 4096), Frame::End);
        assert_eq!(classify_frame(prefix, len), Frame::Batch { len });
        assert_eq!(
            classify_frame(prefix, len - 1),
            Frame::Invalid(FrameError::PastEnd {
                len,
                remaining: len - 1
            })
        );
        let mut short = [0; 12];
        short[11] = 3;
        assert_eq!(
            classify_frame(&short, 4096),
            Frame::Invalid(FrameError::LengthTooSmall { batch_length: 3 })
        );
    }

    #[test]
    fn reader_stops_at_zero_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(0, LOG_FILE_SUFFIX));
        let first = encode_batch(0, 0, ProducerInfo::default(), &[Record::default()]);
        let second = encode_batch(1, 0, ProducerInfo::default(), &[Record::default()]);
        let mut contents = [first.clone(), second.clone()].concat();
        contents.resize(contents.len() + 4096, 0);
        fs::write(&path, &contents).unwrap();

        let mut reader = SegmentReader::open(&path).unwrap();
        let batch = reader.next_batch().unwrap().unwrap();
        assert_eq!(batch.position, 0);
        assert_eq!(batch.bytes, first);
        let batch = reader.next_batch().unwrap().unwrap();
        assert_eq!(batch.position, first.len() as u64);
        assert_eq!(batch.bytes, second);
        assert!(reader.next_batch().unwrap().is_none());
        assert_eq!(reader.position(), (first.len() + second.len()) as u64);
    }

    #[test]
    fn list_segments_sorts_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "00000000000000000100.log",
            "00000000000000000000.log",
            "00000000000000000000.index",
            "notes.txt",
            "1.log",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let segments = list_segments(dir.path()).unwrap();
        let bases: Vec<u64> = segments.iter().map(|s| s.base_offset).collect();
        assert_eq!(bases, [0, 100]);
        assert_eq!(
            segments[1].index_path,
            dir.path().join("00000000000000000100.index")
        );
    }
}
