//! Seed inputs: valid batches and segment files built with `encode_batch`,
//! plus segments damaged the ways a crash or a bad disk damages them.
//!
//! Records vary in every field that changes the encoding: null and empty
//! keys and values, tombstones, headers with multi-byte UTF-8 names, values
//! long enough to need two-byte varint lengths, and negative timestamp
//! deltas.

use bytes::Bytes;
use ferry::log::{encode_batch, ProducerInfo, Record};

use crate::crc::repair_crc;

/// Byte position of `last_offset_delta` in the batch header, as specified
/// in `docs/storage-format.md`.
const LAST_OFFSET_DELTA_AT: usize = 23;

/// Timestamp of the first seed record, in ms since the Unix epoch.
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// Returns the seed records, one for each shape of record.
pub fn records() -> Vec<Record> {
    let record = |timestamp_delta: i64| Record {
        timestamp_ms: BASE_TIMESTAMP_MS + timestamp_delta,
        ..Record::default()
    };
    vec![
        Record {
            key: Some(Bytes::from_static(b"user-17")),
            value: Some(Bytes::from_static(b"{\"event\":\"login\"}")),
            attributes: 1,
            headers: vec![
                ("trace-id".to_owned(), Bytes::from_static(b"4bf92f35")),
                ("empty".to_owned(), Bytes::new()),
            ],
            ..record(0)
        },
        // A tombstone: a key with a null value.
        Record {
            key: Some(Bytes::from_static(b"user-17")),
            value: None,
            ..record(5)
        },
        Record {
            key: Some(Bytes::new()),
            routing_key: Some(Bytes::from_static(b"orders.eu.created")),
            producer: Some(Bytes::from_static(b"alice")),
            value: Some(Bytes::new()),
            ttl_ms: 60_000,
            ..record(-250)
        },
        // A 300-byte value needs a two-byte varint length.
        Record {
            value: Some(Bytes::from(vec![b'x'; 300])),
            headers: vec![("größe".to_owned(), Bytes::from_static(b"\x00\xff"))],
            ..record(1_000)
        },
        // Every field null.
        record(i64::from(i32::MIN)),
    ]
}

/// Returns named seed inputs for `batch_decode`: single batches.
pub fn batch_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let records = records();
    let producer = ProducerInfo {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: 100,
    };
    let one_record = &records[..1];

    let mut offset_gap = encode_batch(10, 2, ProducerInfo::default(), &records[..2]);
    set_last_offset_delta(&mut offset_gap, 9);

    vec![
        (
            "batch-all-records",
            encode_batch(0, 0, ProducerInfo::default(), &records),
        ),
        (
            "batch-one-record",
            encode_batch(7, 1, ProducerInfo::default(), one_record),
        ),
        (
            "batch-tombstone",
            encode_batch(0, 0, ProducerInfo::default(), &records[1..2]),
        ),
        (
            "batch-idempotent-producer",
            encode_batch(500, 4, producer, &records[2..]),
        ),
        (
            "batch-empty",
            encode_batch(0, 0, ProducerInfo::default(), &[]),
        ),
        (
            "batch-high-base-offset",
            encode_batch(1 << 40, 9, producer, one_record),
        ),
        ("batch-offset-gap", offset_gap),
    ]
}

/// Returns named seed inputs for `recovery_scan`: whole segment files that
/// start at offset 0.
pub fn segment_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let clean = segment(&[0, 0, 1, 3]);

    let mut zero_tail = clean.clone();
    zero_tail.resize(clean.len() + 512, 0);

    let next_batch = encode_batch(
        next_offset_after(&[0, 0, 1, 3]),
        3,
        ProducerInfo::default(),
        &records(),
    );
    let mut torn_tail = clean.clone();
    torn_tail.extend_from_slice(&next_batch[..next_batch.len() / 2]);

    let mut bad_crc_in_middle = clean.clone();
    let second_batch = segment(&[0]).len();
    change_value_byte(&mut bad_crc_in_middle[second_batch..]);

    let mut stray_bytes_after_tail = zero_tail.clone();
    stray_bytes_after_tail.extend_from_slice(b"stray");

    let mut offset_gap = encode_batch(0, 0, ProducerInfo::default(), &records()[..2]);
    set_last_offset_delta(&mut offset_gap, 6);
    offset_gap.extend(encode_batch(7, 1, ProducerInfo::default(), &records()[2..]));

    vec![
        ("segment-clean", clean),
        ("segment-zero-tail", zero_tail),
        ("segment-torn-tail", torn_tail),
        ("segment-bad-crc-in-middle", bad_crc_in_middle),
        ("segment-stray-bytes-after-tail", stray_bytes_after_tail),
        ("segment-epoch-decrease", segment(&[2, 1])),
        ("segment-offset-gap", offset_gap),
        // Crosses several index entries and more than one segment size.
        ("segment-many-batches", segment(&[0; 12])),
    ]
}

/// Encodes one batch of all seed records per leader epoch in
/// `leader_epochs`, with consecutive offsets from 0, and returns the
/// batches back to back.
pub fn segment(leader_epochs: &[u32]) -> Vec<u8> {
    let records = records();
    let mut bytes = Vec::new();
    let mut next_offset = 0;
    for (index, &leader_epoch) in leader_epochs.iter().enumerate() {
        // Odd batches carry an idempotent producer, so recovery rebuilds a
        // producer table from them.
        let producer = if index % 2 == 1 {
            ProducerInfo {
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: index as i32 * records.len() as i32,
            }
        } else {
            ProducerInfo::default()
        };
        bytes.extend(encode_batch(next_offset, leader_epoch, producer, &records));
        next_offset += records.len() as u64;
    }
    bytes
}

/// Returns the offset after the batches that `segment(leader_epochs)`
/// builds.
fn next_offset_after(leader_epochs: &[u32]) -> u64 {
    (leader_epochs.len() * records().len()) as u64
}

/// Sets `last_offset_delta` of an encoded batch, leaving offsets unused
/// after its records as compaction would, and repairs the CRC.
fn set_last_offset_delta(batch: &mut [u8], last_offset_delta: u32) {
    batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&last_offset_delta.to_be_bytes());
    repair_crc(batch);
}

/// Changes one byte of the 300-byte value in the first batch of `bytes`, so
/// that the CRC no longer matches but the records still decode.
pub fn change_value_byte(bytes: &mut [u8]) {
    let value = [b'x'; 300];
    let at = bytes
        .windows(value.len())
        .position(|window| window == value)
        .expect("bytes contain the 300-byte seed value");
    bytes[at] = b'y';
}
