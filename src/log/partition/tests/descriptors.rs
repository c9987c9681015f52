//! File descriptors and memory maps that an open partition holds: sealed
//! segments keep no descriptor, only the lock file and the active segment
//! do, and an empty sealed segment is not mapped.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::log::reader::{segment_file_name, INDEX_FILE_SUFFIX, LOG_FILE_SUFFIX};

/// Descriptors a partition keeps open: `.lock`, and the active segment's
/// `.log`, `.index` and `.timeindex`.
const PARTITION_DESCRIPTORS: usize = 4;

/// Returns the targets of this process's open file descriptors.
fn open_descriptors() -> Vec<PathBuf> {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .collect()
}

/// Returns the open file descriptors whose file lies in `dir`.
fn open_descriptors_in(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap();
    open_descriptors()
        .into_iter()
        .filter(|target| target.starts_with(&dir))
        .collect()
}

/// Returns the lines of `/proc/self/maps` that map a file in `dir`.
fn maps_in(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_str().unwrap();
    fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(dir))
        .map(str::to_owned)
        .collect()
}

/// Writes `count` segments of one single-record batch each, with empty
/// index files, and returns the values in offset order.
fn write_segments(dir: &Path, count: u64) -> Vec<String> {
    let mut written = Vec::new();
    for offset in 0..count {
        let value = format!("segment-{offset}");
        let batch = encode_batch(offset, 0, ProducerInfo::default(), &[record(&value)]);
        fs::write(dir.join(segment_file_name(offset, LOG_FILE_SUFFIX)), batch).unwrap();
        fs::write(dir.join(segment_file_name(offset, INDEX_FILE_SUFFIX)), b"").unwrap();
        written.push(value);
    }
    written
}

#[test]
fn open_sealed_segments_hold_no_descriptors() {
    const SEGMENTS: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let written = write_segments(dir.path(), SEGMENTS);

    let before = open_descriptors().len();
    let log = PartitionLog::open(dir.path(), config(4096, 64)).unwrap();
    let after = open_descriptors().len();

    assert_eq!(log.segments().len(), SEGMENTS as usize);
    let in_dir = open_descriptors_in(dir.path());
    assert_eq!(in_dir.len(), PARTITION_DESCRIPTORS, "{in_dir:?}");
    // Other tests open files at the same time, so the process-wide count
    // gets a margin, which is still far below one descriptor per segment.
    let opened = after.saturating_sub(before);
    assert!(
        opened < 32,
        "opening {SEGMENTS} segments opened {opened} descriptors"
    );
    let values: Vec<String> = read_all(&log).iter().flat_map(values).collect();
    assert_eq!(values, written);
}

#[test]
fn rolled_segments_hold_no_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(512, 64)).unwrap();
    for i in 0..40 {
        append_values(&log, &format!("value-{i:03}"), 4, 0);
    }

    let segments = log.segments().len();
    assert!(segments > 10, "only {segments} segments");
    let in_dir = open_descriptors_in(dir.path());
    assert_eq!(in_dir.len(), PARTITION_DESCRIPTORS, "{in_dir:?}");
    let maps = maps_in(dir.path());
    assert_eq!(
        maps.len(),
        segments,
        "one map per segment expected: {maps:?}"
    );

    log.close().unwrap();
    let in_dir = open_descriptors_in(dir.path());
    assert_eq!(
        in_dir.len(),
        1,
        "close should keep only the lock: {in_dir:?}"
    );
    drop(log);
    assert!(open_descriptors_in(dir.path()).is_empty());
    assert!(maps_in(dir.path()).is_empty());
}

#[test]
fn empty_sealed_segment_is_not_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(4096, 64)).unwrap();
    log.close().unwrap();

    let segments = log.segments();
    assert_eq!(segments.len(), 1);
    assert_eq!(fs::metadata(&segments[0].path).unwrap().len(), 0);
    let maps = maps_in(dir.path());
    assert!(maps.is_empty(), "empty segment is mapped: {maps:?}");
    assert!(log.read(0, 1024, NO_LIMIT).unwrap().is_empty());
}
