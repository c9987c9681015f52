//! Incremental disk allocation of the active segment: a new segment takes
//! little disk, its file grows by doubling as data arrives, and a full disk
//! fails an append with `DiskFull` instead of a SIGBUS.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;

use super::*;
use crate::log::segment::INITIAL_ALLOCATION_BYTES;
use crate::log::DEFAULT_SEGMENT_BYTES;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Appends one batch with a single record of about `len` bytes whose value
/// starts with `label`, and returns the value.
fn append_padded(log: &PartitionLog, label: &str, len: usize) -> Result<String, LogError> {
    let value = format!("{label}-{}", "x".repeat(len));
    log.append(&[record(&value)], 0, ProducerInfo::default())?;
    Ok(value)
}

fn all_values(log: &PartitionLog) -> Vec<String> {
    read_all(log).iter().flat_map(values).collect()
}

#[test]
fn new_partition_allocates_little_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(DEFAULT_SEGMENT_BYTES, 4096)).unwrap();
    let path = log.segments()[0].path.clone();

    let metadata = fs::metadata(&path).unwrap();
    assert!(
        metadata.len() < MIB,
        "new segment is {} bytes",
        metadata.len()
    );
    assert_eq!(metadata.len(), INITIAL_ALLOCATION_BYTES as u64);
    let allocated_bytes = metadata.blocks() * 512;
    assert!(
        allocated_bytes < MIB,
        "new segment reserves {allocated_bytes} bytes on disk"
    );
}

#[test]
fn small_segment_allocates_only_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(4096, 64)).unwrap();
    assert_eq!(file_len(&log.segments()[0].path), 4096);
}

#[test]
fn active_segment_grows_by_doubling() {
    const SEGMENT_BYTES: u64 = MIB;
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(SEGMENT_BYTES, 4096)).unwrap();
    let path = log.segments()[0].path.clone();

    let mut lengths = vec![file_len(&path)];
    let mut written = Vec::new();
    for i in 0.. {
        written.push(append_padded(&log, &format!("{i:05}"), 1000).unwrap());
        let segments = log.segments();
        if segments.len() > 1 {
            break;
        }
        let len = file_len(&path);
        assert!(
            len >= segments[0].size_bytes,
            "file of {len} bytes is shorter than its {} bytes of data",
            segments[0].size_bytes
        );
        if lengths.last() != Some(&len) {
            lengths.push(len);
        }
    }

    assert_eq!(lengths, [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB]);
    let segments = log.segments();
    assert_eq!(
        file_len(&segments[0].path),
        segments[0].size_bytes,
        "sealed segment not trimmed"
    );
    assert_eq!(file_len(&segments[1].path), INITIAL_ALLOCATION_BYTES as u64);
    assert_eq!(all_values(&log), written);
}

#[test]
fn reopen_keeps_grown_allocation() {
    const SEGMENT_BYTES: u64 = 4 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let config = config(SEGMENT_BYTES, 4096);
    let path = dir.path().join("00000000000000000000.log");

    let mut written = Vec::new();
    {
        let log = PartitionLog::open(dir.path(), config).unwrap();
        while file_len(&path) < 256 * KIB {
            let label = format!("first-{}", written.len());
            written.push(append_padded(&log, &label, 2000).unwrap());
        }
        // Dropped without `close`, as after a crash.
    }
    let grown_len = file_len(&path);

    {
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert_eq!(file_len(&path), grown_len, "reopen changed the allocation");
        assert_eq!(all_values(&log), written);

        while file_len(&path) == grown_len {
            let label = format!("second-{}", written.len());
            written.push(append_padded(&log, &label, 2000).unwrap());
        }
        assert_eq!(file_len(&path), 2 * grown_len);
        assert_eq!(all_values(&log), written);
        log.close().unwrap();
    }

    // `close` trimmed the file to its data, and growth starts from there.
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let trimmed_len = file_len(&path);
    assert_eq!(trimmed_len, log.segments()[0].size_bytes);
    written.push(append_padded(&log, "third", 2000).unwrap());
    assert_eq!(file_len(&path), 2 * trimmed_len);
    assert_eq!(all_values(&log), written);
}

#[test]
fn full_disk_fails_append_with_disk_full() {
    // The file system is a 1 MiB tmpfs, mounted in a mount namespace of
    // its own so that it is invisible to other threads and processes. The namespace
    // belongs to the spawned thread alone and goes away when it ends. The
    // directory is removed from this thread, where it is not a mount point.
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().to_path_buf();
    let outcome = thread::spawn(move || {
        if let Err(error) = mount_private_tmpfs(&mount_point, "size=1m") {
            eprintln!("skipped: cannot mount a tmpfs in a private namespace: {error}");
            return;
        }
        fill_disk_until_full(&mount_point);
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Appends 8 KiB batches to a log in `dir` until one fails, and checks that
/// it failed with `DiskFull` after nearly all of the space was used, and
/// that everything appended before can still be read.
fn fill_disk_until_full(dir: &Path) {
    let log = PartitionLog::open(dir, config(4 * MIB, 4096)).unwrap();
    let mut written = Vec::new();
    let error = loop {
        match append_padded(&log, &format!("{:05}", written.len()), 8000) {
            Ok(value) => written.push(value),
            Err(error) => break error,
        }
        assert!(written.len() < 1000, "1 MiB file system never filled up");
    };

    assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
    let size_bytes = log.segments()[0].size_bytes;
    // The 1 MiB step fails, and the batches after 512 KiB are allocated one
    // by one until the disk is full.
    assert!(
        size_bytes > 768 * KIB,
        "only {size_bytes} bytes appended before the disk was full"
    );
    assert_eq!(log.log_end_offset(), written.len() as u64);
    assert_eq!(all_values(&log), written);
}

/// Moves this thread into a new mount namespace whose mounts do not
/// propagate to the parent one, and mounts a tmpfs with `options` on `dir`.
fn mount_private_tmpfs(dir: &Path, options: &str) -> io::Result<()> {
    let root = CString::new("/").unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    let target = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let options = CString::new(options).unwrap();

    // SAFETY: unsharing the mount namespace (and with it the file system
    // attributes) of the calling thread touches no memory of this process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: every pointer is a valid C string or null, as `mount` allows,
    // and outlives the call.
    let code = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if code != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let code = unsafe {
        libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if code != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
