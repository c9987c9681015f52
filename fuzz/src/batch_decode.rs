//! Properties of `decode_batch` on arbitrary bytes.
//!
//! Any input may be rejected, but none may panic. A batch that decodes must
//! agree with the header functions, give every record an offset inside the
//! batch's offset range, and survive a round trip through `encode_batch`.

use ferry::log::{
    decode_batch, decode_header, encode_batch, encoded_batch_len, validate_batch, BatchError,
    ProducerInfo, Record, RecordBatch,
};

use crate::crc::repair_crc;

/// Decodes `data` and checks the properties of the result. When the only
/// fault is the CRC, decodes a copy with the CRC repaired as well, so that
/// mutations of the records reach the record decoder.
///
/// # Panics
///
/// Panics when a property fails, with the values that broke it.
pub fn check(data: &[u8]) {
    match decode_batch(data) {
        Ok(batch) => check_decoded(data, &batch),
        Err(BatchError::CrcMismatch { .. }) => {
            let mut repaired = data.to_vec();
            repair_crc(&mut repaired);
            if let Ok(batch) = decode_batch(&repaired) {
                check_decoded(&repaired, &batch);
            }
        }
        Err(_) => {}
    }
}

/// Checks a batch that `decode_batch` returned for `bytes`.
pub fn check_decoded(bytes: &[u8], batch: &RecordBatch) {
    let header = batch.header;
    assert_eq!(
        validate_batch(bytes),
        Ok(header),
        "validate_batch disagrees"
    );
    assert_eq!(decode_header(bytes), Ok(header), "decode_header disagrees");
    assert_eq!(
        header.total_len(),
        bytes.len(),
        "total_len is not the input length"
    );
    assert_eq!(
        batch.records.len(),
        header.record_count as usize,
        "record count differs from the header's record_count"
    );

    check_record_offsets(batch);
    check_reencoding(batch);
}

/// Checks that record offsets rise strictly and lie in
/// `base_offset..=base_offset + last_offset_delta`.
pub fn check_record_offsets(batch: &RecordBatch) {
    let header = batch.header;
    let Some(last_offset) = header
        .base_offset
        .checked_add(u64::from(header.last_offset_delta))
    else {
        panic!(
            "decoded a batch whose last offset overflows u64: base_offset {}, last_offset_delta {}",
            header.base_offset, header.last_offset_delta
        );
    };

    let mut previous: Option<u64> = None;
    for (index, record) in batch.records.iter().enumerate() {
        assert!(
            (header.base_offset..=last_offset).contains(&record.offset),
            "record {index} has offset {}, outside the batch range {}..={last_offset}",
            record.offset,
            header.base_offset
        );
        if let Some(previous) = previous {
            assert!(
                record.offset > previous,
                "record {index} has offset {}, not above the previous record's {previous}",
                record.offset
            );
        }
        previous = Some(record.offset);
    }
}

/// Encodes the decoded records again with the same base offset, leader
/// epoch and producer fields, and checks that the result decodes to the
/// same records. `encode_batch` numbers records consecutively, so each
/// record's expected offset is `base_offset` plus its position. Encoding
/// the result once more must give the same bytes, because the encoder
/// writes every varint in its shortest form.
pub fn check_reencoding(batch: &RecordBatch) {
    let header = batch.header;
    let producer = ProducerInfo {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
    };
    let encoded = encode_batch(
        header.base_offset,
        header.leader_epoch,
        producer,
        &batch.records,
    );
    assert_eq!(
        encoded.len(),
        encoded_batch_len(&batch.records),
        "encoded_batch_len differs from the encoded length"
    );

    let decoded = decode_batch(&encoded)
        .unwrap_or_else(|error| panic!("re-encoded batch does not decode: {error}"));
    let redecoded_header = decoded.header;
    assert_eq!(redecoded_header.base_offset, header.base_offset);
    assert_eq!(redecoded_header.leader_epoch, header.leader_epoch);
    assert_eq!(redecoded_header.producer_id, header.producer_id);
    assert_eq!(redecoded_header.producer_epoch, header.producer_epoch);
    assert_eq!(redecoded_header.base_sequence, header.base_sequence);
    assert_eq!(redecoded_header.record_count, header.record_count);
    assert_eq!(decoded.records.len(), batch.records.len());

    for (index, (after, before)) in decoded.records.iter().zip(&batch.records).enumerate() {
        let expected = Record {
            offset: header.base_offset + index as u64,
            ..before.clone()
        };
        assert_eq!(after, &expected, "record {index} changed in the round trip");
    }

    let encoded_again = encode_batch(
        header.base_offset,
        header.leader_epoch,
        producer,
        &decoded.records,
    );
    assert_eq!(
        encoded_again, encoded,
        "encoding is not stable across a round trip"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn seed_batches_pass_checks() {
        for (name, batch) in seeds::batch_seeds() {
            let decoded = decode_batch(&batch)
                .unwrap_or_else(|error| panic!("seed {name} does not decode: {error}"));
            check_decoded(&batch, &decoded);
        }
    }

    #[test]
    fn check_repairs_crc_of_changed_batch() {
        let mut batch = encode_batch(3, 1, ProducerInfo::default(), &seeds::records());
        seeds::change_value_byte(&mut batch);
        check(&batch);
    }
}
