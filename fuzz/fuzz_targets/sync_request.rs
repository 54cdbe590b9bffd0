//! A `/bonghwa/sync/1` request from any peer: decoding never panics, whatever decodes
//! round-trips to an equal value, and a `Reconcile` that decodes is answered by the
//! (stateless) responder over a fixed set without panicking, within the frame limit.
#![no_main]

use std::sync::OnceLock;

use bonghwa_core::model::{Hlc, MessageId};
use bonghwa_core::proto::sync::{Item, Limits, SyncSet, respond};
use bonghwa_core::wire::group::{MAX_RECONCILE_FRAME_BYTES, SyncRequest, SyncResponse};
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
    if let Ok(request) = SyncRequest::decode(data) {
        if let SyncRequest::Reconcile { message, .. } = &request {
            let reply =
                respond(set(), message, &Limits::default()).expect("a decoded message is valid");
            let frame = SyncResponse::Reconcile(reply).encode();
            assert!(frame.len() <= MAX_RECONCILE_FRAME_BYTES);
        }
        assert_eq!(SyncRequest::decode(&request.encode()), Ok(request));
    }
});
