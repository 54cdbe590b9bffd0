//! A `/bonghwa/sync/1` response from any peer: decoding never panics, whatever decodes
//! round-trips to an equal value, and a `Reconcile` answer that decodes is taken by the
//! initiator (over a fixed set, right after its opening message) without panicking.
#![no_main]

use std::sync::OnceLock;

use bonghwa_core::model::{Hlc, MessageId};
use bonghwa_core::proto::sync::{Initiator, Item, Limits, SyncSet};
use bonghwa_core::wire::group::SyncResponse;
use libfuzzer_sys::fuzz_target;

/// 300 items, several per millisecond, so bounds need id prefixes.
fn set() -> &'static SyncSet {
    static SET: OnceLock<SyncSet> = OnceLock::new();
    SET.get_or_init(|| {
        SyncSet::new((0u32..300).map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_be_bytes());
            id[31] = i as u8;
            Item {
                hlc: Hlc {
                    ms: 1_000 + u64::from(i / 4),
                    counter: i % 2,
                },
                id: MessageId(id),
            }
        }))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = SyncResponse::decode(data) {
        if let SyncResponse::Reconcile(reply) = &response {
            let mut initiator = Initiator::new(Limits::default());
            let _ = initiator.initiate(set());
            let round = initiator
                .reconcile(set(), reply)
                .expect("a decoded message is valid and the first round is within limits");
            if let Some(next) = round.next {
                next.validate()
                    .expect("the initiator writes valid messages");
            }
        }
        assert_eq!(SyncResponse::decode(&response.encode()), Ok(response));
    }
});
