//! A contact card and signed prekey from `/bonghwa/card/2`: decoding (with both signature
//! checks) never panics.
#![no_main]

use bonghwa_core::wire::decode_card_and_prekey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_card_and_prekey(data);
});
