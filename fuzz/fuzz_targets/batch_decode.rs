//! Fuzz target: `ferry::log::decode_batch` on arbitrary bytes. The
//! properties checked are listed in `ferry_fuzz::batch_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry_fuzz::batch_decode::check(data);
});
