//! `ferry-log dump`: prints batch headers and records.
//!
//! Text output has one `batch` line per batch and one indented `record` line
//! per record. JSON output has one object per batch and line. Byte fields
//! print as UTF-8 text when they are valid UTF-8 and as base64 otherwise.
//! Values, and the values of record headers, print only with
//! `--print-values`; otherwise a record shows the size of its value.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use ferry::log::reader::{list_segments, SegmentReader};
use ferry::log::{decode_batch, BatchHeader, Record, RecordBatch};
use serde_json::{json, Value};

/// The selection of records a dump prints.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Start at the batch that contains this offset.
    pub from_offset: u64,
    /// Start at the first record stored at or after this time, in ms; later
    /// records are printed whatever their time.
    pub from_time: Option<i64>,
    /// Print only records with this key.
    pub key: Option<String>,
    /// Print values and header values, not only their sizes.
    pub print_values: bool,
}

/// Prints the partition in `dir` as `filter` selects. Problems go to
/// stderr. Returns whether every batch could be read.
pub fn dump_partition(dir: &Path, filter: &Filter, json: bool) -> Result<bool> {
    let from_offset = filter.from_offset;
    // Set once the first record at or after `from_time` was found.
    let mut reached_time = filter.from_time.is_none();
    let segments =
        list_segments(dir).with_context(|| format!("failed to list {}", dir.display()))?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if !json {
        writeln!(out, "partition {}", dir.display())?;
    }

    let mut clean = true;
    for (i, segment) in segments.iter().enumerate() {
        // Skip segments that end before `from_offset`.
        if segments
            .get(i + 1)
            .is_some_and(|next| next.base_offset <= from_offset)
        {
            continue;
        }
        let segment_name = file_name(&segment.log_path);
        let mut reader = SegmentReader::open(&segment.log_path)
            .with_context(|| format!("failed to open {}", segment.log_path.display()))?;
        if !json {
            writeln!(out, "segment {segment_name}")?;
        }

        loop {
            let raw = match reader.next_batch() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(err) => {
                    out.flush()?;
                    eprintln!("{err}");
                    clean = false;
                    break;
                }
            };
            let batch = match decode_batch(&raw.bytes) {
                Ok(batch) => batch,
                Err(err) => {
                    out.flush()?;
                    eprintln!("{}:{}: {err}", segment.log_path.display(), raw.position);
                    clean = false;
                    continue;
                }
            };
            if batch.header.last_offset() < from_offset {
                continue;
            }
            let mut batch = batch;
            if !reached_time {
                let from_time = filter.from_time.unwrap_or(i64::MIN);
                // Records before the batch whose newest time reaches the
                // time are all older, as timestamps may step back.
                if batch.header.max_timestamp < from_time {
                    continue;
                }
                let first = batch
                    .records
                    .iter()
                    .position(|record| record.timestamp_ms >= from_time)
                    .unwrap_or(batch.records.len());
                batch.records.drain(..first);
                reached_time = true;
            }
            if let Some(key) = &filter.key {
                batch
                    .records
                    .retain(|record| record.key.as_deref() == Some(key.as_bytes()));
                if batch.records.is_empty() {
                    continue;
                }
            }
            if json {
                let object = batch_json(
                    dir,
                    &segment_name,
                    raw.position,
                    &batch,
                    filter.print_values,
                );
                writeln!(out, "{object}")?;
            } else {
                write_batch_text(&mut out, raw.position, &batch, filter.print_values)?;
            }
        }
    }
    out.flush()?;
    Ok(clean)
}

fn write_batch_text(
    out: &mut impl Write,
    position: u64,
    batch: &RecordBatch,
    print_values: bool,
) -> io::Result<()> {
    let h = &batch.header;
    writeln!(
        out,
        "batch position={position} base_offset={} last_offset={} batch_length={} \
         leader_epoch={} magic={} crc={:#010x} attributes={} first_timestamp={} \
         max_timestamp={} producer_id={} producer_epoch={} base_sequence={} record_count={}",
        h.base_offset,
        h.last_offset(),
        h.batch_length,
        h.leader_epoch,
        h.magic,
        h.crc,
        h.attributes,
        h.first_timestamp,
        h.max_timestamp,
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        h.record_count,
    )?;
    for record in &batch.records {
        write!(
            out,
            "  record offset={} timestamp={} attributes={} ttl_ms={} key={} routing_key={} \
             producer={}",
            record.offset,
            record.timestamp_ms,
            record.attributes,
            record.ttl_ms,
            bytes_text(record.key.as_ref()),
            bytes_text(record.routing_key.as_ref()),
            bytes_text(record.producer.as_ref()),
        )?;
        if print_values {
            let headers: Vec<String> = record
                .headers
                .iter()
                .map(|(name, value)| format!("{name:?}: {}", bytes_text(Some(value))))
                .collect();
            let value = bytes_text(record.value.as_ref());
            writeln!(out, " value={value} headers={{{}}}", headers.join(", "))?;
        } else {
            let names: Vec<String> = record
                .headers
                .iter()
                .map(|(name, _)| format!("{name:?}"))
                .collect();
            let size = value_size(record);
            writeln!(out, " value_size={size} headers=[{}]", names.join(", "))?;
        }
    }
    Ok(())
}

/// Formats a byte field as `null`, a quoted string, or `base64:...`.
fn bytes_text(bytes: Option<&Bytes>) -> String {
    match bytes {
        None => "null".to_owned(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => format!("{text:?}"),
            Err(_) => format!("base64:{}", BASE64.encode(bytes)),
        },
    }
}

/// Returns the value's size as text: `null` for no value (a tombstone).
fn value_size(record: &Record) -> String {
    record
        .value
        .as_ref()
        .map_or_else(|| "null".to_owned(), |v| v.len().to_string())
}

fn batch_json(
    dir: &Path,
    segment: &str,
    position: u64,
    batch: &RecordBatch,
    print_values: bool,
) -> Value {
    let records: Vec<Value> = batch
        .records
        .iter()
        .map(|record| record_json(record, print_values))
        .collect();
    json!({
        "partition": dir.display().to_string(),
        "segment": segment,
        "position": position,
        "header": header_json(&batch.header),
        "records": records,
    })
}

fn header_json(h: &BatchHeader) -> Value {
    json!({
        "base_offset": h.base_offset,
        "last_offset": h.last_offset(),
        "batch_length": h.batch_length,
        "leader_epoch": h.leader_epoch,
        "magic": h.magic,
        "crc": h.crc,
        "attributes": h.attributes,
        "last_offset_delta": h.last_offset_delta,
        "first_timestamp": h.first_timestamp,
        "max_timestamp": h.max_timestamp,
        "producer_id": h.producer_id,
        "producer_epoch": h.producer_epoch,
        "base_sequence": h.base_sequence,
        "record_count": h.record_count,
    })
}

/// A record as JSON. Without `print_values`, `value` is replaced by
/// `value_size` (null for no value) and headers keep only their names.
fn record_json(record: &Record, print_values: bool) -> Value {
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|(name, value)| {
            if print_values {
                json!({ "key": name, "value": bytes_json(Some(value)) })
            } else {
                json!({ "key": name, "value_size": value.len() })
            }
        })
        .collect();
    let mut object = json!({
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "attributes": record.attributes,
        "ttl_ms": record.ttl_ms,
        "key": bytes_json(record.key.as_ref()),
        "routing_key": bytes_json(record.routing_key.as_ref()),
        "producer": bytes_json(record.producer.as_ref()),
        "headers": headers,
    });
    if print_values {
        object["value"] = bytes_json(record.value.as_ref());
    } else {
        object["value_size"] = json!(record.value.as_ref().map(|v| v.len()));
    }
    object
}

/// Formats a byte field as `null`, `{"utf8": ...}` or `{"base64": ...}`.
fn bytes_json(bytes: Option<&Bytes>) -> Value {
    match bytes {
        None => Value::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => json!({ "utf8": text }),
            Err(_) => json!({ "base64": BASE64.encode(bytes) }),
        },
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
