//! A session message from any peer: the sealed-sender layer (`open_v2`) over raw bytes, and
//! a ratchet message decoded from the input and read in a live session — never a panic, and
//! a failed read leaves the session able to read the next genuine message. So the fuzzer
//! gets past the authentication, a genuine message with one input-chosen byte flipped in its
//! header or ciphertext must be refused.
#![no_main]

use bonghwa_core::crypto::open_v2;
use bonghwa_core::crypto::ratchet::{KeyPair, Message, Session};
use libfuzzer_sys::fuzz_target;

fn session_pair() -> (Session, Session) {
    let (alice_id, bob_id) = ([11u8; 32], [22u8; 32]);
    let prekey = KeyPair::from_random([33u8; 32]);
    let mut alice = Session::initiate(
        &alice_id,
        &KeyPair::from_secret(&bob_id).public,
        &prekey.public,
        1,
        [[44u8; 32], [55u8; 32]],
    )
    .expect("valid keys");
    let (first, _) = alice.encrypt(b"first", [66u8; 32]).expect("can send");
    let init = first.init.clone().expect("init");
    let mut bob = Session::accept(&bob_id, &prekey, &KeyPair::from_secret(&alice_id).public, &init)
        .expect("valid keys");
    bob.decrypt(&first).expect("first opens");
    (alice, bob)
}

fuzz_target!(|data: &[u8]| {
    let _ = open_v2(&[77u8; 32], data);
    let (mut alice, mut bob) = session_pair();
    if let Ok(message) = postcard::from_bytes::<Message>(data) {
        let _ = bob.decrypt(&message);
    }
    let (genuine, _) = alice.encrypt(data, [88u8; 32]).expect("can send");
    if let Some(&at) = data.first() {
        let mut bytes = postcard::to_stdvec(&genuine).expect("encodes");
        let i = usize::from(at) * bytes.len() / 256;
        bytes[i] ^= 0x01;
        // `init` is not authenticated by the ratchet (as in Signal's pre-key message): it
        // only names the session a start would create, and the node checks it against the
        // signed start and the session id. Header and ciphertext must be.
        if let Ok(flipped) = postcard::from_bytes::<Message>(&bytes)
            && (flipped.header != genuine.header || flipped.ciphertext != genuine.ciphertext)
        {
            assert!(bob.decrypt(&flipped).is_err(), "a flipped byte went unnoticed");
        }
    }
    assert_eq!(bob.decrypt(&genuine).expect("genuine opens").plaintext, data);
});
