//! Checks of the `.index` and `.timeindex` files of one segment against its
//! batches, shared by `verify` and `index`.
//!
//! Offset index: both columns rise strictly, and each entry's position is
//! the start of a batch that contains the entry's offset. Time index: both
//! columns rise strictly, each entry's offset is the start of a batch or the
//! segment's end, no batch below that offset has a record newer than the
//! entry's time, and in a sealed segment the last entry contains the newest
//! record time of the segment.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use ferry::log::decode_header;
use ferry::log::index::{self, IndexEntry, INDEX_ENTRY_LEN};
use ferry::log::reader::{SegmentFiles, SegmentReader};
use ferry::log::time_index::{self, TimeIndexEntry, TIME_INDEX_ENTRY_LEN};

/// One problem, at a byte of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub position: u64,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.path.display(),
            self.position,
            self.message
        )
    }
}

/// The fields of a batch header that the index checks use.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpan {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
}

/// The batches of a segment by byte position.
pub type Spans = BTreeMap<u64, BatchSpan>;

/// Reads the batch headers of `segment`, without checking CRCs, up to the
/// end of its data or the first batch that cannot be read, which is
/// returned as a problem.
pub fn read_spans(segment: &SegmentFiles) -> (Spans, Option<Problem>) {
    let mut spans = Spans::new();
    let path = &segment.log_path;
    let mut reader = match SegmentReader::open(path) {
        Ok(reader) => reader,
        Err(err) => {
            return (
                spans,
                Some(problem(path, 0, format!("failed to open: {err}"))),
            )
        }
    };
    loop {
        match reader.next_batch() {
            Ok(None) => return (spans, None),
            Err(err) => {
                return (
                    spans,
                    Some(problem(path, reader.position(), err.to_string())),
                )
            }
            Ok(Some(raw)) => match decode_header(&raw.bytes) {
                Ok(header) => {
                    spans.insert(
                        raw.position,
                        BatchSpan {
                            base_offset: header.base_offset,
                            last_offset: header.last_offset(),
                            max_timestamp: header.max_timestamp,
                        },
                    );
                }
                Err(err) => return (spans, Some(problem(path, raw.position, err.to_string()))),
            },
        }
    }
}

pub fn read_offset_index(segment: &SegmentFiles) -> Result<Vec<IndexEntry>, Problem> {
    let path = &segment.index_path;
    let bytes = fs::read(path).map_err(|err| problem(path, 0, format!("failed to read: {err}")))?;
    index::decode_entries(&bytes).map_err(|err| problem(path, 0, err.to_string()))
}

pub fn read_time_index(segment: &SegmentFiles) -> Result<Vec<TimeIndexEntry>, Problem> {
    let path = &segment.time_index_path;
    let bytes = fs::read(path).map_err(|err| problem(path, 0, format!("failed to read: {err}")))?;
    time_index::decode_entries(&bytes).map_err(|err| problem(path, 0, err.to_string()))
}

pub fn check_offset_index(
    segment: &SegmentFiles,
    entries: &[IndexEntry],
    spans: &Spans,
) -> Vec<Problem> {
    let path = &segment.index_path;
    let mut problems = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        let at = (n * INDEX_ENTRY_LEN) as u64;
        if n > 0 {
            let previous = entries[n - 1];
            if entry.relative_offset <= previous.relative_offset
                || entry.position <= previous.position
            {
                let message = format!("index entry {n} is not above the previous entry");
                problems.push(problem(path, at, message));
            }
        }

        let offset = segment.base_offset + u64::from(entry.relative_offset);
        let message = match spans.get(&u64::from(entry.position)) {
            None => format!(
                "index entry {n} (offset {offset}) points at byte {} of the .log file, which is \
                 not the start of a batch",
                entry.position
            ),
            Some(span) if !(span.base_offset..=span.last_offset).contains(&offset) => format!(
                "index entry {n} (offset {offset}) points at the batch with offsets {} to {}",
                span.base_offset, span.last_offset
            ),
            Some(_) => continue,
        };
        problems.push(problem(path, at, message));
    }
    problems
}

/// Checks the time index of `segment`. `sealed` is whether the segment
/// is not the partition's last, so its last entry must hold its newest
/// record time.
pub fn check_time_index(
    segment: &SegmentFiles,
    entries: &[TimeIndexEntry],
    spans: &Spans,
    sealed: bool,
) -> Vec<Problem> {
    let path = &segment.time_index_path;
    let mut problems = Vec::new();
    let end = spans
        .values()
        .last()
        .map_or(segment.base_offset, |span| span.last_offset + 1);
    // Newest record time of the batches below each batch start, in offset
    // order, to check each entry's promise.
    let mut newest_below = BTreeMap::new();
    let mut newest = i64::MIN;
    for (position, span) in spans {
        newest_below.insert(span.base_offset, (newest, *position));
        newest = newest.max(span.max_timestamp);
    }
    for (n, entry) in entries.iter().enumerate() {
        let at = (n * TIME_INDEX_ENTRY_LEN) as u64;
        if n > 0 {
            let previous = entries[n - 1];
            if entry.timestamp_ms <= previous.timestamp_ms
                || entry.relative_offset <= previous.relative_offset
            {
                let message = format!("time index entry {n} is not above the previous entry");
                problems.push(problem(path, at, message));
            }
        }
        let offset = segment.base_offset + u64::from(entry.relative_offset);
        let below = if offset == end {
            Some(newest)
        } else {
            newest_below.get(&offset).map(|(newest, _)| *newest)
        };
        match below {
            None => problems.push(problem(
                path,
                at,
                format!(
                    "time index entry {n} names offset {offset}, which is neither the start of a \
                     batch nor the segment's end {end}"
                ),
            )),
            Some(below) if below > entry.timestamp_ms => problems.push(problem(
                path,
                at,
                format!(
                    "time index entry {n} says the records below offset {offset} are at or \
                     before {} ms, but one is at {below} ms",
                    entry.timestamp_ms
                ),
            )),
            Some(_) => {}
        }
    }
    if sealed && !spans.is_empty() {
        let message = match entries.last() {
            None => Some(format!(
                "the time index has no entry, but the sealed segment holds records up to \
                 {newest} ms"
            )),
            Some(last) if last.timestamp_ms != newest => Some(format!(
                "the last time index entry holds {} ms, but the newest record of the sealed \
                 segment is at {newest} ms",
                last.timestamp_ms
            )),
            Some(_) => None,
        };
        if let Some(message) = message {
            let at = (entries.len().saturating_sub(1) * TIME_INDEX_ENTRY_LEN) as u64;
            problems.push(problem(path, at, message));
        }
    }
    problems
}

fn problem(path: &std::path::Path, position: u64, message: String) -> Problem {
    Problem {
        path: path.to_path_buf(),
        position,
        message,
    }
}
