//! CRC repair, so that mutated inputs get past the CRC check.
//!
//! Almost every mutation of a stored batch breaks its CRC-32, and then the
//! decoder stops before it reaches the records. The targets therefore run a
//! second time on a copy whose CRCs are recomputed. The header layout is
//! specified in `docs/storage-format.md`: `batch_length` at byte 8, the CRC
//! at byte 17, and the CRC covers every byte from 21 to the end of the batch.

use ferry::log::batch::{LENGTH_PREFIX_LEN, MIN_BATCH_LENGTH};

const BATCH_LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
/// First byte covered by the CRC: the `attributes` field.
const CRC_START: usize = 21;

/// Writes the CRC of `batch[21..]` into the CRC field. Does nothing when
/// `batch` is too short to contain the field.
pub fn repair_crc(batch: &mut [u8]) {
    if batch.len() < CRC_START {
        return;
    }
    let crc = crc32fast::hash(&batch[CRC_START..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Returns a copy of a segment file whose batches all carry a correct CRC,
/// or `None` when no CRC had to change.
///
/// Batches are framed the way the log frames them: from byte 0, each one
/// `12 + batch_length` bytes long. The walk stops at the end of the bytes, at
/// a zero `batch_length`, or at a frame that is too short or runs past the
/// end, because the log stops reading there too.
pub fn repair_segment_crcs(segment: &[u8]) -> Option<Vec<u8>> {
    let mut repaired = segment.to_vec();
    let mut changed = false;
    let mut position = 0;

    while segment.len() - position >= LENGTH_PREFIX_LEN {
        let length_field = &segment[position + BATCH_LENGTH_AT..position + LENGTH_PREFIX_LEN];
        let batch_length = u32::from_be_bytes(length_field.try_into().expect("4-byte slice"));
        if batch_length < MIN_BATCH_LENGTH {
            break;
        }
        let end = position + LENGTH_PREFIX_LEN + batch_length as usize;
        if end > segment.len() {
            break;
        }

        let batch = &mut repaired[position..end];
        let stored = batch[CRC_AT..CRC_AT + 4].to_vec();
        repair_crc(batch);
        changed |= batch[CRC_AT..CRC_AT + 4] != stored[..];
        position = end;
    }

    changed.then_some(repaired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;
    use ferry::log::{decode_batch, ProducerInfo};

    #[test]
    fn repair_crc_makes_changed_batch_decode() {
        let mut batch = ferry::log::encode_batch(0, 0, ProducerInfo::default(), &seeds::records());
        seeds::change_value_byte(&mut batch);
        assert!(decode_batch(&batch).is_err());

        repair_crc(&mut batch);
        assert!(decode_batch(&batch).is_ok());
    }

    #[test]
    fn repair_segment_skips_valid_segment() {
        let segment = seeds::segment(&[0, 0, 1]);
        assert_eq!(repair_segment_crcs(&segment), None);
    }

    #[test]
    fn repair_segment_fixes_every_batch() {
        let mut segment = seeds::segment(&[0, 1]);
        seeds::change_value_byte(&mut segment);
        let second_batch = seeds::segment(&[0]).len();
        seeds::change_value_byte(&mut segment[second_batch..]);

        let repaired = repair_segment_crcs(&segment).expect("two CRCs to repair");
        assert_eq!(repaired.len(), segment.len());
        assert_eq!(repair_segment_crcs(&repaired), None);
    }
}
