//! A group envelope as gossip delivers it (anyone in the mesh can publish anything):
//! decoding never panics, checking the signature of whatever decodes never panics, and it
//! re-encodes to bytes that decode to the same value (postcard accepts overlong varints,
//! so the bytes themselves may differ).
#![no_main]

use bonghwa_core::wire::group::GroupEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = GroupEnvelope::decode(data) {
        let _ = envelope.verify();
        assert_eq!(GroupEnvelope::decode(&envelope.encode()), Ok(envelope));
    }
});
