//! Record batch codec: the unit that the log appends, stores and returns.
//!
//! A batch is a fixed 61-byte big-endian header followed by its records (see
//! `record.rs`). Field positions are the `*_AT` constants below:
//!
//! ```text
//!  0 base_offset u64        27 first_timestamp i64
//!  8 batch_length u32       35 max_timestamp i64
//! 12 leader_epoch u32       43 producer_id i64
//! 16 magic u8 (= 1)         51 producer_epoch i16
//! 17 crc u32                53 base_sequence i32
//! 21 attributes u16         57 record_count u32
//! 23 last_offset_delta u32  61 records
//! ```
//!
//! `batch_length` counts the bytes after itself, so a batch occupies
//! `12 + batch_length` bytes. The CRC-32 (IEEE) covers every byte from
//! `attributes` to the end of the batch. It leaves out `base_offset` and
//! `leader_epoch` so that the log can stamp both after the batch is encoded,
//! which also means a corrupted `base_offset` or `leader_epoch` is not caught
//! by the CRC. Recovery checks those two against the neighbouring batches.
//! `docs/storage-format.md` is the full specification.

use bytes::Bytes;
use thiserror::Error;

use super::record::{decode_record, Record};

/// Current batch format version, stored in the `magic` byte.
pub const MAGIC: u8 = 1;
/// Size of the fixed batch header in bytes.
pub const HEADER_LEN: usize = 61;
/// Bytes before the part counted by `batch_length`: `base_offset` and
/// `batch_length` itself.
pub const LENGTH_PREFIX_LEN: usize = 12;
/// Smallest valid `batch_length`: a header without records.
pub const MIN_BATCH_LENGTH: u32 = (HEADER_LEN - LENGTH_PREFIX_LEN) as u32;

pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const BATCH_LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
/// First byte covered by the CRC.
pub(crate) const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const FIRST_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

/// Attribute bit of a batch that compaction rewrote: records may be missing
/// between its offset deltas, and it may hold no record at all.
pub const ATTRIBUTE_COMPACTED: u16 = 1;

/// Timestamp stored when a batch has no records.
const NO_TIMESTAMP: i64 = -1;

/// Decoded fixed header of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes of the batch after this field.
    pub batch_length: u32,
    /// Epoch of the leader that appended the batch.
    pub leader_epoch: u32,
    /// Format version, currently [`MAGIC`].
    pub magic: u8,
    /// CRC-32 (IEEE) of the bytes from `attributes` to the end of the batch.
    pub crc: u32,
    /// Batch flags: [`ATTRIBUTE_COMPACTED`], or 0.
    pub attributes: u16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record, in ms since the Unix epoch.
    pub first_timestamp: i64,
    /// Largest record timestamp, in ms since the Unix epoch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Producer sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: u32,
}

/// A decoded batch. Each record carries its absolute offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// Fixed header.
    pub header: BatchHeader,
    /// Records in offset order.
    pub records: Vec<Record>,
}

/// Idempotent producer fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Producer id, or -1 for none.
    pub producer_id: i64,
    /// Producer epoch, or -1 for none.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record, or -1 for none.
    pub base_sequence: i32,
}

/// Error from decoding or validating a record batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The buffer is shorter than the header or than `batch_length` requires.
    #[error("batch is truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The buffer is longer than the batch that `batch_length` describes.
    #[error("{extra} bytes follow the end of the batch")]
    TrailingBytes {
        /// Bytes after the batch.
        extra: usize,
    },
    /// `batch_length` is smaller than a header without records.
    #[error("invalid batch length {batch_length}: must be at least {MIN_BATCH_LENGTH}")]
    InvalidLength {
        /// Stored `batch_length`.
        batch_length: u32,
    },
    /// The batch's offsets run past the largest offset: `base_offset +
    /// last_offset_delta + 1` does not fit in 64 bits.
    #[error("base offset {base_offset} plus last offset delta {last_offset_delta} overflows the offset range")]
    OffsetOverflow {
        /// Stored `base_offset`.
        base_offset: u64,
        /// Stored `last_offset_delta`.
        last_offset_delta: u32,
    },
    /// The magic byte is not a known format version.
    #[error("unsupported batch format version (magic) {magic}: expected {MAGIC}")]
    UnsupportedMagic {
        /// Stored magic byte.
        magic: u8,
    },
    /// The stored CRC does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A record could not be decoded even though the CRC matched, which means
    /// the writer produced an invalid batch.
    #[error("invalid record {index}: {reason}")]
    InvalidRecord {
        /// Position of the record in the batch, from 0.
        index: u32,
        /// Description of the problem.
        reason: &'static str,
    },
}

impl Default for ProducerInfo {
    /// Returns the "no idempotent producer" value: -1 in every field.
    fn default() -> Self {
        ProducerInfo {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

impl BatchHeader {
    /// Returns the offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Returns the offset that follows this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Returns whether compaction rewrote the batch.
    pub fn is_compacted(&self) -> bool {
        self.attributes & ATTRIBUTE_COMPACTED != 0
    }

    /// Returns the number of records the batch held when it was appended:
    /// compaction removes records but keeps `last_offset_delta`.
    pub fn appended_record_count(&self) -> u32 {
        if self.is_compacted() {
            self.last_offset_delta.saturating_add(1)
        } else {
            self.record_count
        }
    }

    /// Checks the batch against the one before it in a segment, which ended
    /// at `expected_offset`: the base offset follows it (a compacted batch may
    /// start above it, after batches that compaction removed), and only a
    /// compacted batch may be empty.
    pub fn check_follows(&self, expected_offset: u64) -> Result<(), String> {
        let follows = self.base_offset == expected_offset
            || (self.is_compacted() && self.base_offset > expected_offset);
        if !follows {
            return Err(format!(
                "base offset {} does not follow the previous batch, expected {expected_offset}",
                self.base_offset
            ));
        }
        if self.record_count == 0 && !self.is_compacted() {
            return Err("batch contains no records".into());
        }
        Ok(())
    }

    /// Returns the size of the whole batch in bytes, header included.
    pub fn total_len(&self) -> usize {
        LENGTH_PREFIX_LEN + self.batch_length as usize
    }
}

/// Encodes `records` as one batch whose offsets start at `base_offset`.
///
/// Records get consecutive offsets. Their `offset` fields are ignored. The
/// first record's timestamp becomes the batch's `first_timestamp`. A batch
/// with no records stores -1 in both timestamps.
///
/// # Panics
///
/// Panics if the batch would exceed the 32-bit `batch_length` field. Callers
/// that take records from clients check [`encoded_batch_len`] first.
pub fn encode_batch(
    base_offset: u64,
    leader_epoch: u32,
    producer: ProducerInfo,
    records: &[Record],
) -> Vec<u8> {
    let first_timestamp = records.first().map_or(NO_TIMESTAMP, |r| r.timestamp_ms);
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(NO_TIMESTAMP);
    let record_count = u32::try_from(records.len()).expect("more than u32::MAX records in a batch");
    let header = BatchHeader {
        base_offset,
        batch_length: 0,
        leader_epoch,
        magic: MAGIC,
        crc: 0,
        attributes: 0,
        last_offset_delta: record_count.saturating_sub(1),
        first_timestamp,
        max_timestamp,
        producer_id: producer.producer_id,
        producer_epoch: producer.producer_epoch,
        base_sequence: producer.base_sequence,
        record_count,
    };
    let deltas = (0..record_count).zip(records);
    write_batch(&header, deltas, encoded_batch_len(records))
}

/// Encodes what compaction keeps of a batch: the records of `original` that
/// survived, with their offsets, timestamps and the header fields of the
/// original. The result carries [`ATTRIBUTE_COMPACTED`] and may have no
/// records at all.
///
/// # Panics
///
/// Panics if a record's offset lies outside the original batch.
pub(crate) fn encode_compacted(original: &BatchHeader, records: &[Record]) -> Vec<u8> {
    let deltas: Vec<(u32, &Record)> = records
        .iter()
        .map(|record| {
            let delta = record
                .offset
                .checked_sub(original.base_offset)
                .and_then(|delta| u32::try_from(delta).ok())
                .filter(|&delta| delta <= original.last_offset_delta)
                .expect("compacted record lies outside its batch");
            (delta, record)
        })
        .collect();
    let header = BatchHeader {
        attributes: original.attributes | ATTRIBUTE_COMPACTED,
        record_count: u32::try_from(records.len()).expect("more than u32::MAX records in a batch"),
        ..*original
    };
    write_batch(&header, deltas.into_iter(), original.total_len())
}

/// Writes `header` (computing length and CRC) and the records with their
/// offset deltas.
fn write_batch<'a>(
    header: &BatchHeader,
    records: impl Iterator<Item = (u32, &'a Record)>,
    capacity: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // batch_length, set below
    out.extend_from_slice(&header.leader_epoch.to_be_bytes());
    out.push(MAGIC);
    out.extend_from_slice(&[0; 4]); // crc, set below
    out.extend_from_slice(&header.attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.first_timestamp.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&header.record_count.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);

    for (offset_delta, record) in records {
        record.encode(header.first_timestamp, offset_delta, &mut out);
    }

    let batch_length = u32::try_from(out.len() - LENGTH_PREFIX_LEN)
        .expect("encoded batch exceeds the 4 GiB limit of batch_length");
    out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32fast::hash(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Returns the size in bytes of the batch that [`encode_batch`] would build
/// from `records`.
pub fn encoded_batch_len(records: &[Record]) -> usize {
    let first_timestamp = records.first().map_or(NO_TIMESTAMP, |r| r.timestamp_ms);
    let records_len: usize = records
        .iter()
        .enumerate()
        .map(|(i, r)| r.encoded_len(first_timestamp, i as u32))
        .sum();
    HEADER_LEN + records_len
}

/// Decodes the fixed header at the start of `bytes`.
///
/// Checks that the header is complete, that `batch_length` can hold it and
/// the magic byte. It does not check the CRC or that the records are present:
/// use [`validate_batch`] or [`decode_batch`] for that.
pub fn decode_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    }
    let header = BatchHeader {
        base_offset: read_u64(bytes, BASE_OFFSET_AT),
        batch_length: read_u32(bytes, BATCH_LENGTH_AT),
        leader_epoch: read_u32(bytes, LEADER_EPOCH_AT),
        magic: bytes[MAGIC_AT],
        crc: read_u32(bytes, CRC_AT),
        attributes: u16::from_be_bytes([bytes[ATTRIBUTES_AT], bytes[ATTRIBUTES_AT + 1]]),
        last_offset_delta: read_u32(bytes, LAST_OFFSET_DELTA_AT),
        first_timestamp: read_u64(bytes, FIRST_TIMESTAMP_AT) as i64,
        max_timestamp: read_u64(bytes, MAX_TIMESTAMP_AT) as i64,
        producer_id: read_u64(bytes, PRODUCER_ID_AT) as i64,
        producer_epoch: i16::from_be_bytes([
            bytes[PRODUCER_EPOCH_AT],
            bytes[PRODUCER_EPOCH_AT + 1],
        ]),
        base_sequence: read_u32(bytes, BASE_SEQUENCE_AT) as i32,
        record_count: read_u32(bytes, RECORD_COUNT_AT),
    };
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength {
            batch_length: header.batch_length,
        });
    }
    if header.magic != MAGIC {
        return Err(BatchError::UnsupportedMagic {
            magic: header.magic,
        });
    }
    // `next_offset` must fit: every reader computes it.
    let last = header
        .base_offset
        .checked_add(u64::from(header.last_offset_delta));
    if last.is_none_or(|last| last == u64::MAX) {
        return Err(BatchError::OffsetOverflow {
            base_offset: header.base_offset,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Checks that `bytes` is exactly one batch with a valid header and CRC, and
/// returns its header. Records are not decoded.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = decode_header(bytes)?;
    let total = header.total_len();
    if bytes.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    if bytes.len() > total {
        return Err(BatchError::TrailingBytes {
            extra: bytes.len() - total,
        });
    }
    let computed = crc32fast::hash(&bytes[ATTRIBUTES_AT..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Decodes `bytes`, which must be exactly one batch, after checking its
/// length, magic byte and CRC.
///
/// Records must fill the batch exactly, and their offset deltas must rise
/// strictly and stay within `last_offset_delta`.
pub fn decode_batch(bytes: &[u8]) -> Result<RecordBatch, BatchError> {
    let header = validate_batch(bytes)?;

    // One copy of the batch; every field of every record is a slice of it.
    let buf = Bytes::copy_from_slice(bytes);
    // Each record takes at least one byte, so this cap keeps a corrupt count
    // from reserving more memory than the batch size.
    let capacity = (header.record_count as usize).min(bytes.len() - HEADER_LEN);
    let mut records = Vec::with_capacity(capacity);
    let mut position = HEADER_LEN;
    let mut previous_delta: Option<u32> = None;

    for index in 0..header.record_count {
        let invalid = |reason| BatchError::InvalidRecord { index, reason };
        let (mut record, offset_delta) =
            decode_record(&buf, &mut position, header.first_timestamp).map_err(invalid)?;
        if previous_delta.is_some_and(|previous| offset_delta <= previous) {
            return Err(invalid("offset delta does not increase"));
        }
        if offset_delta > header.last_offset_delta {
            return Err(invalid("offset delta exceeds the last offset delta"));
        }
        previous_delta = Some(offset_delta);
        record.offset = header.base_offset + u64::from(offset_delta);
        records.push(record);
    }

    if position != bytes.len() {
        return Err(BatchError::InvalidRecord {
            index: header.record_count,
            reason: "bytes remain after the last record",
        });
    }
    Ok(RecordBatch { header, records })
}

/// Overwrites the `base_offset` and `leader_epoch` of an encoded batch. Both
/// fields lie outside the CRC, so the batch stays valid.
pub(crate) fn stamp_batch(bytes: &mut [u8], base_offset: u64, leader_epoch: u32) {
    bytes[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Reads the `batch_length` field of a batch that starts at `bytes[0]`.
/// `bytes` must hold at least [`LENGTH_PREFIX_LEN`] bytes.
pub(crate) fn peek_batch_length(bytes: &[u8]) -> u32 {
    read_u32(bytes, BATCH_LENGTH_AT)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(field)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(field)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn bytes_field() -> impl Strategy<Value = Option<Bytes>> {
        prop_oneof![
            3 => Just(None),
            3 => vec(any::<u8>(), 0..64).prop_map(|v| Some(Bytes::from(v))),
            1 => Just(Some(Bytes::new())),
            // Large values need multi-byte length varints.
            1 => (any::<u8>(), 20_000usize..70_000).prop_map(|(b, n)| Some(Bytes::from(vec![b; n]))),
        ]
    }

    /// Arbitrary record, with `offset` left at 0 because encoding ignores it.
    pub(crate) fn record_strategy() -> impl Strategy<Value = Record> {
        (
            any::<i64>(),
            any::<u8>(),
            any::<u64>(),
            bytes_field(),
            bytes_field(),
            bytes_field(),
            bytes_field(),
            vec(("\\PC{0,12}", vec(any::<u8>(), 0..16)), 0..4),
        )
            .prop_map(
                |(timestamp_ms, attributes, ttl_ms, key, routing_key, producer, value, headers)| {
                    Record {
                        offset: 0,
                        timestamp_ms,
                        attributes,
                        ttl_ms,
                        key,
                        routing_key,
                        producer,
                        value,
                        headers: headers
                            .into_iter()
                            .map(|(name, value)| (name, Bytes::from(value)))
                            .collect(),
                    }
                },
            )
    }

    fn producer_strategy() -> impl Strategy<Value = ProducerInfo> {
        (any::<i64>(), any::<i16>(), any::<i32>()).prop_map(
            |(producer_id, producer_epoch, base_sequence)| ProducerInfo {
                producer_id,
                producer_epoch,
                base_sequence,
            },
        )
    }

    fn sample_record(value: &str) -> Record {
        Record {
            timestamp_ms: 1_700_000_000_000,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            ..Record::default()
        }
    }

    #[test]
    fn header_rejects_offsets_past_the_offset_range() {
        let mut batch = encode_batch(0, 0, ProducerInfo::default(), &[Record::default()]);
        batch[..8].copy_from_slice(&(u64::MAX - 1).to_be_bytes());
        assert!(
            decode_header(&batch).is_ok(),
            "last offset u64::MAX - 1 fits"
        );
        batch[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode_header(&batch),
            Err(BatchError::OffsetOverflow {
                base_offset: u64::MAX,
                last_offset_delta: 0
            })
        );
    }

    #[test]
    fn header_fields_at_documented_positions() {
        let producer = ProducerInfo {
            producer_id: 7,
            producer_epoch: 3,
            base_sequence: 11,
        };
        let records = [sample_record("a"), sample_record("b")];
        let bytes = encode_batch(0x0102_0304_0506_0708, 9, producer, &records);

        assert_eq!(&bytes[0..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read_u32(&bytes, 8) as usize, bytes.len() - 12);
        assert_eq!(read_u32(&bytes, 12), 9);
        assert_eq!(bytes[16], MAGIC);
        assert_eq!(read_u32(&bytes, 17), crc32fast::hash(&bytes[21..]));
        assert_eq!(&bytes[21..23], &[0, 0]);
        assert_eq!(read_u32(&bytes, 23), 1);
        assert_eq!(read_u64(&bytes, 27) as i64, 1_700_000_000_000);
        assert_eq!(read_u64(&bytes, 35) as i64, 1_700_000_000_000);
        assert_eq!(read_u64(&bytes, 43) as i64, 7);
        assert_eq!(&bytes[51..53], &[0, 3]);
        assert_eq!(read_u32(&bytes, 53), 11);
        assert_eq!(read_u32(&bytes, 57), 2);
    }

    /// The example batch in docs/storage-format.md, byte for byte.
    #[test]
    fn documented_example_batch() {
        let record = Record {
            offset: 0,
            timestamp_ms: 1_700_000_000_000,
            attributes: 1,
            ttl_ms: 0,
            key: Some(Bytes::from_static(b"k")),
            routing_key: None,
            producer: Some(Bytes::from_static(b"al")),
            value: Some(Bytes::from_static(b"{}")),
            headers: vec![("h".to_owned(), Bytes::from_static(b"v"))],
        };
        let expected: [u8; 80] = [
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x44, 0x00, 0x00,
            0x00, 0x02, 0x01, 0x1b, 0xd9, 0x4f, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68,
            0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x00, 0x00, 0x00, 0x01, 0x12, 0x01, 0x00, 0x00, 0x00, 0x02, 0x6b, 0x01, 0x04,
            0x61, 0x6c, 0x04, 0x7b, 0x7d, 0x01, 0x01, 0x68, 0x01, 0x76,
        ];
        let bytes = encode_batch(5, 2, ProducerInfo::default(), &[record]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn encoded_batch_len_matches_encoding() {
        let records = [sample_record("hello"), Record::default()];
        let bytes = encode_batch(0, 0, ProducerInfo::default(), &records);
        assert_eq!(encoded_batch_len(&records), bytes.len());
    }

    #[test]
    fn empty_batch_round_trips() {
        let bytes = encode_batch(5, 1, ProducerInfo::default(), &[]);
        let batch = decode_batch(&bytes).unwrap();
        assert_eq!(batch.header.record_count, 0);
        assert_eq!(batch.header.first_timestamp, -1);
        assert!(batch.records.is_empty());
    }

    #[test]
    fn decode_rejects_trailing_and_missing_bytes() {
        let mut bytes = encode_batch(0, 0, ProducerInfo::default(), &[sample_record("x")]);
        let len = bytes.len();

        assert_eq!(
            decode_batch(&bytes[..len - 1]),
            Err(BatchError::Truncated {
                needed: len,
                available: len - 1
            })
        );
        bytes.push(0);
        assert_eq!(
            decode_batch(&bytes),
            Err(BatchError::TrailingBytes { extra: 1 })
        );
        assert!(matches!(
            decode_header(&bytes[..HEADER_LEN - 1]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn decode_rejects_invalid_record_with_valid_crc() {
        let mut bytes = encode_batch(0, 0, ProducerInfo::default(), &[sample_record("x")]);
        // Claim two records while only one is present, then fix the CRC so
        // that only the record check can catch it.
        bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&2u32.to_be_bytes());
        let crc = crc32fast::hash(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());

        assert!(matches!(
            decode_batch(&bytes),
            Err(BatchError::InvalidRecord { index: 1, .. })
        ));
    }

    #[test]
    fn decode_rejects_invalid_utf8_header_key() {
        let mut record = sample_record("x");
        record
            .headers
            .push(("\u{e9}".to_owned(), Bytes::from_static(b"v")));
        let mut bytes = encode_batch(0, 0, ProducerInfo::default(), &[record]);
        // U+00E9 is 0xC3 0xA9 in UTF-8, and 0xC3 alone is invalid.
        let at = bytes.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
        bytes[at + 1] = b'a';
        let crc = crc32fast::hash(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());

        assert_eq!(
            decode_batch(&bytes),
            Err(BatchError::InvalidRecord {
                index: 0,
                reason: "header key is not valid UTF-8"
            })
        );
    }

    #[test]
    fn stamp_batch_keeps_crc_valid() {
        let mut bytes = encode_batch(0, 0, ProducerInfo::default(), &[sample_record("x")]);
        stamp_batch(&mut bytes, 42, 3);
        let header = validate_batch(&bytes).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.leader_epoch, 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn batch_round_trip(
            base_offset in 0u64..u64::MAX / 2,
            leader_epoch: u32,
            producer in producer_strategy(),
            records in vec(record_strategy(), 1..6),
        ) {
            let bytes = encode_batch(base_offset, leader_epoch, producer, &records);
            prop_assert_eq!(bytes.len(), encoded_batch_len(&records));

            let batch = decode_batch(&bytes).unwrap();
            let header = batch.header;
            prop_assert_eq!(header.base_offset, base_offset);
            prop_assert_eq!(header.batch_length as usize, bytes.len() - 12);
            prop_assert_eq!(header.leader_epoch, leader_epoch);
            prop_assert_eq!(header.record_count as usize, records.len());
            prop_assert_eq!(header.last_offset_delta as usize, records.len() - 1);
            prop_assert_eq!(header.producer_id, producer.producer_id);
            prop_assert_eq!(header.producer_epoch, producer.producer_epoch);
            prop_assert_eq!(header.base_sequence, producer.base_sequence);
            prop_assert_eq!(header.first_timestamp, records[0].timestamp_ms);
            let max_timestamp = records.iter().map(|r| r.timestamp_ms).max().unwrap();
            prop_assert_eq!(header.max_timestamp, max_timestamp);
            prop_assert_eq!(decode_header(&bytes).unwrap(), header);

            for (i, (decoded, original)) in batch.records.iter().zip(&records).enumerate() {
                let expected = Record { offset: base_offset + i as u64, ..original.clone() };
                prop_assert_eq!(decoded, &expected);
            }
        }

        /// Every single-byte change is rejected, except in `base_offset` and
        /// `leader_epoch`, which the CRC leaves out: there the batch decodes
        /// with the changed field.
        #[test]
        fn decode_rejects_flipped_byte(
            records in vec(record_strategy().prop_filter("small", |r| {
                r.value.as_ref().is_none_or(|v| v.len() < 1000)
                    && r.key.as_ref().is_none_or(|v| v.len() < 1000)
                    && r.routing_key.as_ref().is_none_or(|v| v.len() < 1000)
                    && r.producer.as_ref().is_none_or(|v| v.len() < 1000)
            }), 1..3),
            position_seed: usize,
            mask in 1u8..=255,
        ) {
            let original = encode_batch(100, 2, ProducerInfo::default(), &records);
            let position = position_seed % original.len();
            let mut bytes = original.clone();
            bytes[position] ^= mask;

            let uncovered = (BASE_OFFSET_AT..BATCH_LENGTH_AT).contains(&position)
                || (LEADER_EPOCH_AT..MAGIC_AT).contains(&position);
            if uncovered {
                let batch = decode_batch(&bytes).unwrap();
                let expected = decode_batch(&original).unwrap();
                prop_assert!(batch.header != expected.header);
                prop_assert_eq!(batch.header.crc, expected.header.crc);
            } else {
                prop_assert!(decode_batch(&bytes).is_err(), "flip at {} accepted", position);
            }
        }
    }

    #[test]
    fn decode_rejects_every_flipped_byte_of_small_batch() {
        let records = [sample_record("first"), sample_record("second")];
        let original = encode_batch(100, 2, ProducerInfo::default(), &records);
        for position in (BATCH_LENGTH_AT..LEADER_EPOCH_AT).chain(MAGIC_AT..original.len()) {
            for mask in [0x01, 0x80, 0xff] {
                let mut bytes = original.clone();
                bytes[position] ^= mask;
                assert!(
                    decode_batch(&bytes).is_err(),
                    "flip {mask:#04x} at byte {position} accepted"
                );
            }
        }
    }
}
