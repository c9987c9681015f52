//! Fuzz target: recovery of an active segment whose bytes are the input.
//! The properties checked are listed in `ferry_fuzz::recovery_scan`.
#![no_main]

use std::sync::OnceLock;

use ferry_fuzz::recovery_scan::RecoveryHarness;
use libfuzzer_sys::fuzz_target;

/// One temporary directory per process, emptied before each input.
static HARNESS: OnceLock<RecoveryHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS.get_or_init(RecoveryHarness::new).check(data);
});
