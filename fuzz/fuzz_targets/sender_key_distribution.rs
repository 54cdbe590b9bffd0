//! A sender-key distribution from another member (pairwise, so any contact can send
//! anything): decoding, which also checks every op's group and signature, never panics,
//! and whatever decodes round-trips to an equal value.
#![no_main]

use bonghwa_core::wire::group::SenderKeyDistribution;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(distribution) = SenderKeyDistribution::decode(data) {
        assert_eq!(
            SenderKeyDistribution::decode(&distribution.encode()),
            Ok(distribution)
        );
    }
});
