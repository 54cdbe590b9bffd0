//! A contact card from `/bonghwa/card/1`: decoding (with its signature check) never panics.
#![no_main]

use bonghwa_core::wire::decode_card;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_card(data);
});
