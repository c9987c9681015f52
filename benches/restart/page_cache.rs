//! Page cache control for the cold-cache figures: eviction of the
//! benchmark's own files and a `mincore` count of what stays resident.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::ensure;

use crate::READ_CHUNK_BYTES;

/// Returns the regular files of `dir`, sorted by path.
pub fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Syncs every file of `dir` and advises the kernel to drop its pages from
/// the page cache. Pages mapped by a live process stay, so no log may be open.
pub fn evict_from_page_cache(dir: &Path) -> anyhow::Result<()> {
    for path in files_in(dir)? {
        let file = File::open(&path)?;
        file.sync_all()?;
        // SAFETY: `posix_fadvise` only reads the descriptor, which `file`
        // keeps open.
        let code =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        ensure!(
            code == 0,
            "posix_fadvise failed on {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(code)
        );
    }
    Ok(())
}

/// Returns the share of the pages of `dir`'s files that are in the page
/// cache, from `mincore`.
pub fn resident_share(dir: &Path) -> anyhow::Result<f64> {
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let (mut resident, mut total) = (0usize, 0usize);
    for path in files_in(dir)? {
        let file = File::open(&path)?;
        let len = file.metadata()?.len() as usize;
        if len == 0 {
            continue;
        }
        let pages = len.div_ceil(page);
        let mut flags = vec![0u8; pages];
        // SAFETY: a fresh read-only shared map of `len` bytes of an open
        // file. `mincore` writes one byte per page into `flags`, which has
        // room for every page, and the map is unmapped before `file` closes.
        unsafe {
            let address = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            ensure!(
                address != libc::MAP_FAILED,
                "mmap of {} failed: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            let code = libc::mincore(address, len, flags.as_mut_ptr());
            let error = std::io::Error::last_os_error();
            libc::munmap(address, len);
            ensure!(code == 0, "mincore of {} failed: {error}", path.display());
        }
        resident += flags.iter().filter(|&&flag| flag & 1 == 1).count();
        total += pages;
    }
    Ok(if total == 0 {
        0.0
    } else {
        resident as f64 / total as f64
    })
}

/// Reads `paths` in order with `read(2)` into one 1 MiB buffer and returns
/// the bytes read.
pub fn read_files(paths: &[PathBuf]) -> anyhow::Result<u64> {
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let mut bytes = 0u64;
    for path in paths {
        let mut file = File::open(path)?;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            black_box(&buffer[..n]);
        }
    }
    Ok(bytes)
}
