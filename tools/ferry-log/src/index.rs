//! `ferry-log index`: prints the offset and time index entries of each
//! segment, and checks them against the segment's batches as `indexes.rs`
//! describes.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use ferry::log::reader::list_segments;

use crate::indexes::{self, Problem};

/// Prints the indexes of the partition in `dir` to `out` and returns the
/// problems found, which it prints after the segment they belong to.
pub fn index_partition(dir: &Path, out: &mut impl Write) -> Result<u64> {
    let segments =
        list_segments(dir).with_context(|| format!("failed to list {}", dir.display()))?;
    writeln!(out, "partition {}", dir.display())?;
    let mut count = 0;
    for (i, segment) in segments.iter().enumerate() {
        let sealed = i + 1 < segments.len();
        // Indexes first, so that on a live partition their entries refer to
        // batches that the read of the headers reaches.
        let offset_index = indexes::read_offset_index(segment);
        let time_index = indexes::read_time_index(segment);
        let (spans, unreadable) = indexes::read_spans(segment);
        let mut problems: Vec<Problem> = unreadable.into_iter().collect();

        let offsets = match (spans.values().next(), spans.values().last()) {
            (Some(first), Some(last)) => {
                format!("offsets {} to {}", first.base_offset, last.last_offset)
            }
            _ => "no batch".to_owned(),
        };
        writeln!(
            out,
            "segment {} ({}): {} batches, {offsets}",
            segment.log_path.display(),
            if sealed { "sealed" } else { "active" },
            spans.len(),
        )?;

        match offset_index {
            Ok(entries) => {
                writeln!(out, "  offset index: {} entries", entries.len())?;
                for entry in &entries {
                    let offset = segment.base_offset + u64::from(entry.relative_offset);
                    writeln!(out, "    offset={offset} position={}", entry.position)?;
                }
                problems.extend(indexes::check_offset_index(segment, &entries, &spans));
            }
            Err(problem) => problems.push(problem),
        }
        match time_index {
            Ok(entries) => {
                writeln!(out, "  time index: {} entries", entries.len())?;
                for entry in &entries {
                    let offset = segment.base_offset + u64::from(entry.relative_offset);
                    writeln!(out, "    timestamp={} offset={offset}", entry.timestamp_ms)?;
                }
                problems.extend(indexes::check_time_index(segment, &entries, &spans, sealed));
            }
            Err(problem) => problems.push(problem),
        }
        for problem in &problems {
            writeln!(out, "{problem}")?;
        }
        count += problems.len() as u64;
    }
    Ok(count)
}
