//! A DHT address record (what a Kademlia server is asked to store, and what a lookup
//! returns): decoding and checking it never panics, and whatever passes round-trips.
#![no_main]

use bonghwa_core::identity::AddrRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into a key and a value.
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (key, value) = data.split_at(split);
    if let Ok(record) = AddrRecord::decode(key, value) {
        let again = AddrRecord::decode(key, &record.encode());
        assert_eq!(again.ok(), Some(record));
    }
});
