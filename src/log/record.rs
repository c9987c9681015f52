//! One record and its encoding inside a record batch.
//!
//! A record is stored as an unsigned varint length followed by that many
//! bytes, in this order:
//!
//! - attributes (`u8`);
//! - timestamp delta (zigzag varint, relative to the batch's first timestamp);
//! - offset delta (varint, relative to the batch's base offset);
//! - TTL in ms (varint);
//! - key, routing key, producer and value, each a zigzag varint length (`-1`
//!   for null) followed by the bytes;
//! - header count (varint), then each header as a varint-length UTF-8 key and
//!   a varint-length value.
//!
//! `docs/storage-format.md` has the byte-level table.

use bytes::Bytes;

use super::varint::{get_uvarint, get_varint, put_uvarint, put_varint, uvarint_len, varint_len};

/// One record, as passed to `append` and as returned by a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset. `append` ignores it because the log assigns offsets.
    pub offset: u64,
    /// Creation time in ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Flags owned by the broker. Bit 0 marks a value that is JSON text. The
    /// log stores the byte without interpreting it.
    pub attributes: u8,
    /// Time to live in ms, or 0 for none.
    pub ttl_ms: u64,
    /// Partitioning and compaction key.
    pub key: Option<Bytes>,
    /// Routing key matched against queue bindings.
    pub routing_key: Option<Bytes>,
    /// Authenticated user name of the client that produced the record.
    pub producer: Option<Bytes>,
    /// Payload. `None` is a tombstone for compaction.
    pub value: Option<Bytes>,
    /// Application headers, in the order the producer sent them.
    pub headers: Vec<(String, Bytes)>,
}

/// Reason a record inside a batch could not be decoded.
pub(crate) type RecordError = &'static str;

impl Record {
    /// Returns the encoded size of the record, length prefix included.
    pub(crate) fn encoded_len(&self, first_timestamp: i64, offset_delta: u32) -> usize {
        let body = self.body_len(first_timestamp, offset_delta);
        uvarint_len(body as u64) + body
    }

    /// Appends the record to `out`, with deltas taken against the batch's
    /// first timestamp and base offset.
    pub(crate) fn encode(&self, first_timestamp: i64, offset_delta: u32, out: &mut Vec<u8>) {
        let body = self.body_len(first_timestamp, offset_delta);
        put_uvarint(out, body as u64);

        out.push(self.attributes);
        put_varint(out, self.timestamp_ms.wrapping_sub(first_timestamp));
        put_uvarint(out, u64::from(offset_delta));
        put_uvarint(out, self.ttl_ms);
        for field in [&self.key, &self.routing_key, &self.producer, &self.value] {
            put_nullable(out, field.as_ref());
        }

        put_uvarint(out, self.headers.len() as u64);
        for (name, value) in &self.headers {
            put_uvarint(out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            put_uvarint(out, value.len() as u64);
            out.extend_from_slice(value);
        }
    }

    fn body_len(&self, first_timestamp: i64, offset_delta: u32) -> usize {
        let mut len = 1
            + varint_len(self.timestamp_ms.wrapping_sub(first_timestamp))
            + uvarint_len(u64::from(offset_delta))
            + uvarint_len(self.ttl_ms);
        for field in [&self.key, &self.routing_key, &self.producer, &self.value] {
            len += nullable_len(field.as_ref());
        }
        len += uvarint_len(self.headers.len() as u64);
        for (name, value) in &self.headers {
            len += uvarint_len(name.len() as u64) + name.len();
            len += uvarint_len(value.len() as u64) + value.len();
        }
        len
    }
}

/// Decodes the record that starts at `*position` in `records`, a buffer
/// holding the records section of one batch, and advances `*position` past
/// it.
///
/// The record's offset is returned as a delta; the caller adds the base
/// offset. Field values are slices of `records`, so no bytes are copied.
pub(crate) fn decode_record(
    records: &Bytes,
    position: &mut usize,
    first_timestamp: i64,
) -> Result<(Record, u32), RecordError> {
    let mut cursor = Cursor {
        buf: records,
        position: *position,
        end: records.len(),
    };
    let body_len = cursor.uvarint()?;
    let body_len = usize::try_from(body_len).map_err(|_| "record length is too large")?;
    if body_len > cursor.remaining() {
        return Err("record extends past the end of the batch");
    }
    cursor.end = cursor.position + body_len;

    let attributes = cursor.byte()?;
    let timestamp_delta = cursor.varint()?;
    let offset_delta = u32::try_from(cursor.uvarint()?).map_err(|_| "offset delta is too large")?;
    let ttl_ms = cursor.uvarint()?;
    let key = cursor.nullable()?;
    let routing_key = cursor.nullable()?;
    let producer = cursor.nullable()?;
    let value = cursor.nullable()?;

    let header_count = cursor.uvarint()?;
    // Each header takes at least two bytes, which bounds the allocation
    // below by the record size rather than by an untrusted count.
    if header_count > (cursor.remaining() / 2) as u64 {
        return Err("header count exceeds the record length");
    }
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let name_len = cursor.length()?;
        let name = cursor.take(name_len)?;
        let name = std::str::from_utf8(&name).map_err(|_| "header key is not valid UTF-8")?;
        let value_len = cursor.length()?;
        let value = cursor.take(value_len)?;
        headers.push((name.to_owned(), value));
    }

    if cursor.position != cursor.end {
        return Err("record length does not match the length of its fields");
    }
    *position = cursor.end;

    let record = Record {
        offset: 0,
        timestamp_ms: first_timestamp.wrapping_add(timestamp_delta),
        attributes,
        ttl_ms,
        key,
        routing_key,
        producer,
        value,
        headers,
    };
    Ok((record, offset_delta))
}

fn put_nullable(out: &mut Vec<u8>, field: Option<&Bytes>) {
    match field {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

fn nullable_len(field: Option<&Bytes>) -> usize {
    match field {
        None => varint_len(-1),
        Some(bytes) => varint_len(bytes.len() as i64) + bytes.len(),
    }
}

/// Bounds-checked reader over one record.
struct Cursor<'a> {
    buf: &'a Bytes,
    position: usize,
    end: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.end - self.position
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        if self.position >= self.end {
            return Err("record ends inside its attributes");
        }
        let byte = self.buf[self.position];
        self.position += 1;
        Ok(byte)
    }

    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let (value, used) = get_uvarint(&self.buf[self.position..self.end])
            .map_err(|_| "invalid varint in record")?;
        self.position += used;
        Ok(value)
    }

    fn varint(&mut self) -> Result<i64, RecordError> {
        let (value, used) = get_varint(&self.buf[self.position..self.end])
            .map_err(|_| "invalid varint in record")?;
        self.position += used;
        Ok(value)
    }

    /// Reads a non-negative length that must fit in the rest of the record.
    fn length(&mut self) -> Result<usize, RecordError> {
        let len = self.uvarint()?;
        if len > self.remaining() as u64 {
            return Err("field length exceeds the record length");
        }
        Ok(len as usize)
    }

    /// Reads a zigzag length, where -1 means null, and then the bytes.
    fn nullable(&mut self) -> Result<Option<Bytes>, RecordError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 || len > self.remaining() as i64 {
            return Err("field length is negative or exceeds the record length");
        }
        self.take(len as usize).map(Some)
    }

    fn take(&mut self, len: usize) -> Result<Bytes, RecordError> {
        if len > self.remaining() {
            return Err("field extends past the end of the record");
        }
        let bytes = self.buf.slice(self.position..self.position + len);
        self.position += len;
        Ok(bytes)
    }
}
