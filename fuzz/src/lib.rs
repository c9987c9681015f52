//! Checks that the fuzz targets run on each input, and the seed inputs that
//! `tools/fuzz` starts them from.
//!
//! The checks live in this library rather than in `fuzz_targets/`, so that
//! `cargo test` can run them on the seeds without libFuzzer. Every check
//! panics on a failed property, and libFuzzer reports the panic as a crash.

pub mod batch_decode;
pub mod crc;
pub mod recovery_scan;
pub mod seeds;
