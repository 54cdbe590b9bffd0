//! A group log item from gossip or sync (any mesh peer can publish anything): decoding,
//! which checks the author's signature, never panics, and whatever decodes round-trips to
//! an equal value.
#![no_main]

use bonghwa_core::wire::group::LogItem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = LogItem::decode(data) {
        assert_eq!(LogItem::decode(&item.encode()), Ok(item));
    }
});
