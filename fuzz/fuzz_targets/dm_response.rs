//! A `/bonghwa/dm/1` response frame body from any peer: decoding never panics.
#![no_main]

use bonghwa_core::wire::DmResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = DmResponse::decode(data) {
        assert!(DmResponse::decode(&response.encode()).is_ok());
    }
});
