//! The inside of a version-2 envelope (`SessionEnvelope`) and of a session message
//! (`SessionPlaintext`), as a peer could send them once the sealed-sender layer opens:
//! decoding never panics, and what decodes encodes back to a value that decodes the same.
#![no_main]

use bonghwa_core::wire::session::{SessionEnvelope, SessionPlaintext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = SessionEnvelope::decode(data) {
        assert_eq!(SessionEnvelope::decode(&envelope.encode()).ok(), Some(envelope));
    }
    if let Ok(plain) = SessionPlaintext::decode(data) {
        assert_eq!(SessionPlaintext::decode(&plain.encode()).ok(), Some(plain));
    }
});
