//! Variable-length integers used inside records.
//!
//! An unsigned varint is the LEB128 encoding of a `u64`: seven bits per byte,
//! least significant group first, with the high bit set on every byte except
//! the last. A `u64` takes 1 to 10 bytes. A signed value is zigzag-mapped
//! first (0, -1, 1, -2, … become 0, 1, 2, 3, …), so small negative numbers
//! such as the `-1` of a null field stay one byte long. The same rules are
//! written out in `docs/storage-format.md`.

use thiserror::Error;

/// Maximum encoded length of a `u64`: ceil(64 / 7) bytes.
pub const MAX_VARINT_LEN: usize = 10;

/// Error from decoding a varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VarintError {
    /// The input ended before a byte without the continuation bit.
    #[error("varint is truncated")]
    Truncated,
    /// The encoding is longer than 10 bytes or its value does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    Overflow,
}

/// Appends the unsigned varint encoding of `value` to `out`.
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends the zigzag varint encoding of `value` to `out`.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, zigzag_encode(value));
}

/// Decodes an unsigned varint at the start of `input`.
///
/// Returns the value and the number of bytes it used.
pub fn get_uvarint(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(MAX_VARINT_LEN) {
        let group = u64::from(byte & 0x7f);
        // The tenth byte may carry only the single remaining bit of a u64.
        if i == MAX_VARINT_LEN - 1 && group > 1 {
            return Err(VarintError::Overflow);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if input.len() >= MAX_VARINT_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Decodes a zigzag varint at the start of `input`.
///
/// Returns the value and the number of bytes it used.
pub fn get_varint(input: &[u8]) -> Result<(i64, usize), VarintError> {
    let (raw, used) = get_uvarint(input)?;
    Ok((zigzag_decode(raw), used))
}

/// Returns the number of bytes `put_uvarint` writes for `value`.
pub fn uvarint_len(value: u64) -> usize {
    let significant_bits = 64 - (value | 1).leading_zeros() as usize;
    significant_bits.div_ceil(7)
}

/// Returns the number of bytes `put_varint` writes for `value`.
pub fn varint_len(value: i64) -> usize {
    uvarint_len(zigzag_encode(value))
}

fn zigzag_encode(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn zigzag_decode(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uvarint_known_encodings() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            put_uvarint(&mut out, value);
            assert_eq!(out, expected, "encoding of {value}");
        }
    }

    #[test]
    fn varint_zigzag_known_encodings() {
        let cases: [(i64, &[u8]); 5] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (63, &[0x7e]),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, expected, "encoding of {value}");
        }
    }

    #[test]
    fn uvarint_max_value_takes_ten_bytes() {
        let mut out = Vec::new();
        put_uvarint(&mut out, u64::MAX);
        assert_eq!(out.len(), MAX_VARINT_LEN);
        assert_eq!(get_uvarint(&out), Ok((u64::MAX, MAX_VARINT_LEN)));
    }

    #[test]
    fn uvarint_rejects_overflow_and_truncation() {
        let eleven_bytes = [0xff; 11];
        assert_eq!(get_uvarint(&eleven_bytes), Err(VarintError::Overflow));

        let mut tenth_byte_too_big = [0xff; 10];
        tenth_byte_too_big[9] = 0x02;
        assert_eq!(get_uvarint(&tenth_byte_too_big), Err(VarintError::Overflow));

        assert_eq!(get_uvarint(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(get_uvarint(&[]), Err(VarintError::Truncated));
    }

    proptest! {
        #[test]
        fn uvarint_round_trip(value: u64) {
            let mut out = Vec::new();
            put_uvarint(&mut out, value);
            prop_assert_eq!(out.len(), uvarint_len(value));
            prop_assert_eq!(get_uvarint(&out), Ok((value, out.len())));
        }

        #[test]
        fn varint_round_trip(value: i64) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            prop_assert_eq!(out.len(), varint_len(value));
            prop_assert_eq!(get_varint(&out), Ok((value, out.len())));
        }
    }
}
