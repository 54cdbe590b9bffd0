//! An opened group envelope's plaintext (a member can seal anything): decoding never
//! panics (membership ops inside are signature-checked), and whatever decodes round-trips
//! to an equal value.
#![no_main]

use bonghwa_core::wire::group::GroupPayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = GroupPayload::decode(data) {
        assert_eq!(GroupPayload::decode(&payload.encode()), Ok(payload));
    }
});
