//! A sealed envelope from any peer. Raw bytes are opened with a fixed key; and, so the
//! fuzzer gets past the authentication, a real envelope sealed over the input with one
//! byte flipped at an input-chosen position must be refused.
#![no_main]

use std::sync::OnceLock;

use bonghwa_core::crypto::{generate_msg_keypair, open, seal};
use libfuzzer_sys::fuzz_target;

struct Keys {
    sender: ([u8; 32], [u8; 32]),
    recipient: ([u8; 32], [u8; 32]),
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        sender: generate_msg_keypair().expect("OS randomness"),
        recipient: generate_msg_keypair().expect("OS randomness"),
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let _ = open(&keys.recipient.0, data);
    let Some((&at, plaintext)) = data.split_first() else {
        return;
    };
    let Ok(mut envelope) = seal(&keys.sender.0, &keys.recipient.1, plaintext) else {
        return;
    };
    let opened = open(&keys.recipient.0, &envelope).expect("a fresh envelope opens");
    assert_eq!(opened.plaintext, plaintext);
    let i = usize::from(at) * envelope.len() / 256;
    envelope[i] ^= 0x01;
    assert!(open(&keys.recipient.0, &envelope).is_err());
});
