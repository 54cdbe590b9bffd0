//! `/bonghwa/mailbox/1` frames from any peer, both directions: decoding never panics, and
//! whatever decodes re-encodes to a frame that decodes to the same value (postcard accepts
//! overlong varints, so the bytes themselves may differ).
#![no_main]

use bonghwa_core::wire::{MailboxRequest, MailboxResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = MailboxRequest::decode(data) {
        assert_eq!(MailboxRequest::decode(&request.encode()), Ok(request));
    }
    if let Ok(response) = MailboxResponse::decode(data) {
        assert_eq!(MailboxResponse::decode(&response.encode()), Ok(response));
    }
});
