//! A `/bonghwa/dm/1` request frame body from any peer: decoding never panics, and
//! whatever decodes re-encodes to a frame that decodes to the same request.
#![no_main]

use bonghwa_core::wire::DmRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = DmRequest::decode(data) {
        let again = DmRequest::decode(&request.encode());
        assert!(again.is_ok_and(|r| r.envelopes == request.envelopes));
    }
});
