//! An opened envelope's plaintext (a sender can seal anything): decoding never panics.
#![no_main]

use bonghwa_core::wire::DmPayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = DmPayload::decode(data);
});
