//! `ferry-log recover`: reports what opening a partition would cut from its
//! active segment, and with `--apply` opens it to make that cut.
//!
//! The report reads the files and changes none. `--apply` opens the
//! partition as the broker does (the same recovery, index rebuilds and
//! checkpoint) and closes it, which takes the partition's lock, so it fails
//! while a broker has the partition open.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ferry::log::{preview_recovery, LogConfig, LogError, PartitionLog, RecoveryPreview};

/// Reports on the partition in `dir`, and applies the recovery when `apply`
/// is set and it would drop data. Returns whether the partition needs no
/// recovery that drops data, after `apply` if it ran.
pub fn recover_partition(dir: &Path, apply: bool) -> Result<bool> {
    println!("partition {}", dir.display());
    let Some(preview) = preview_recovery(dir)
        .with_context(|| format!("failed to read the partition in {}", dir.display()))?
    else {
        println!("  no segment");
        return Ok(true);
    };
    print_preview(&preview);
    if !preview.drops_data() {
        return Ok(true);
    }
    if !apply {
        println!("  run with --apply, with the broker stopped, to make this change");
        return Ok(false);
    }
    let log = PartitionLog::open(dir, LogConfig::default()).map_err(|err| match err {
        LogError::Locked { .. } => anyhow!(
            "{}: a running broker has this partition open; stop it and run again",
            dir.display()
        ),
        err => anyhow!(err).context(format!("failed to recover {}", dir.display())),
    })?;
    let log_end_offset = log.log_end_offset();
    log.close()
        .with_context(|| format!("failed to close {} after recovery", dir.display()))?;
    println!("  applied: the log ends before offset {log_end_offset}");
    Ok(true)
}

fn print_preview(preview: &RecoveryPreview) {
    println!("segment {} (active)", preview.segment.display());
    if preview.resumed_at_checkpoint {
        println!(
            "  scan starts at byte {}, the end of the recovery checkpoint; the bytes \
             before it are trusted (`ferry-log verify` checks them)",
            preview.scanned_from
        );
    } else {
        println!("  scan starts at byte 0: no recovery checkpoint in this segment");
    }
    println!(
        "  keeps bytes 0 to {}: the log ends before offset {}",
        preview.valid_end, preview.log_end_offset
    );
    if preview.drops_data() {
        let reason = preview
            .reason
            .as_deref()
            .unwrap_or("bytes that are not zero follow the end of the data");
        println!(
            "{}:{}: recovery would cut here and turn {} bytes into zeros: {reason}",
            preview.segment.display(),
            preview.valid_end,
            preview.dropped_bytes
        );
    } else {
        println!(
            "  nothing to cut: {} zero bytes of allocated space follow",
            preview.file_len - preview.valid_end
        );
    }
}
