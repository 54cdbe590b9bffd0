use super::*;

/// Deterministic "randomness" for tests: byte patterns that differ per call.
struct Draw(u8);

impl Draw {
    fn next(&mut self) -> [u8; 32] {
        self.0 = self.0.wrapping_add(1);
        let mut out = [self.0; 32];
        out[31] = 0x5a;
        out
    }
}

struct Pair {
    alice: Session,
    bob: Session,
    draw: Draw,
}

fn pair() -> Pair {
    let mut draw = Draw(0);
    let alice_identity = draw.next();
    let bob_identity = draw.next();
    let bob_prekey = KeyPair::from_random(draw.next());
    let bob_identity_public = KeyPair::from_secret(&bob_identity).public;
    let alice_identity_public = KeyPair::from_secret(&alice_identity).public;
    let mut alice = Session::initiate(
        &alice_identity,
        &bob_identity_public,
        &bob_prekey.public,
        7,
        [draw.next(), draw.next()],
    )
    .unwrap();
    let (first, _) = alice.encrypt(b"hello", fresh()).unwrap();
    let init = first.init.clone().unwrap();
    assert_eq!(init.prekey_id, 7);
    let mut bob =
        Session::accept(&bob_identity, &bob_prekey, &alice_identity_public, &init).unwrap();
    assert_eq!(bob.id, alice.id);
    assert_eq!(bob.decrypt(&first).unwrap().plaintext, b"hello");
    Pair { alice, bob, draw }
}

/// Fresh-looking randomness for every ratchet key a test makes.
fn fresh() -> [u8; 32] {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Hashed: X25519 clamps the low bits of the first byte, so small counters would collide.
    Sha256::digest(n.to_le_bytes()).into()
}

fn send(from: &mut Session, text: &str) -> Message {
    from.encrypt(text.as_bytes(), fresh()).unwrap().0
}

fn read(to: &mut Session, _draw: &mut Draw, message: &Message) -> Result<Vec<u8>, RatchetError> {
    to.decrypt(message).map(|o| o.plaintext)
}

#[test]
fn a_conversation_reads_both_ways_across_many_turns() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    for round in 0..20 {
        for i in 0..3 {
            let m = send(&mut bob, &format!("bob {round}.{i}"));
            assert_eq!(
                read(&mut alice, &mut draw, &m).unwrap(),
                format!("bob {round}.{i}").as_bytes()
            );
        }
        let m = send(&mut alice, &format!("alice {round}"));
        assert!(m.init.is_none(), "init stops once Bob has written");
        assert_eq!(
            read(&mut bob, &mut draw, &m).unwrap(),
            format!("alice {round}").as_bytes()
        );
    }
    assert!(alice.confirmed && bob.confirmed);
}

#[test]
fn the_initiator_repeats_init_until_the_responder_writes() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    let second = send(&mut alice, "second");
    assert!(second.init.is_some());
    assert!(!alice.confirmed);
    read(&mut bob, &mut draw, &second).unwrap();
    let reply = send(&mut bob, "reply");
    read(&mut alice, &mut draw, &reply).unwrap();
    assert!(alice.confirmed);
    assert!(send(&mut alice, "third").init.is_none());
}

#[test]
fn messages_read_in_any_order_across_turns() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    let early: Vec<Message> = (0..50)
        .map(|i| send(&mut alice, &format!("a{i}")))
        .collect();
    // Bob reads only the last of them, answers, and Alice writes in a new chain.
    read(&mut bob, &mut draw, &early[49]).unwrap();
    assert_eq!(bob.missing(), 49);
    let reply = send(&mut bob, "b");
    read(&mut alice, &mut draw, &reply).unwrap();
    let later = send(&mut alice, "after the turn");
    assert_eq!(
        read(&mut bob, &mut draw, &later).unwrap(),
        b"after the turn"
    );
    for (i, m) in early[..49].iter().enumerate().rev() {
        assert_eq!(
            read(&mut bob, &mut draw, m).unwrap(),
            format!("a{i}").as_bytes()
        );
    }
    assert_eq!(bob.missing(), 0);
}

#[test]
fn a_replay_is_refused_and_changes_nothing() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    let m = send(&mut alice, "once");
    read(&mut bob, &mut draw, &m).unwrap();
    assert_eq!(read(&mut bob, &mut draw, &m), Err(RatchetError::KeyGone));
    let next = send(&mut alice, "next");
    assert_eq!(read(&mut bob, &mut draw, &next).unwrap(), b"next");
}

#[test]
fn a_tampered_message_is_refused_and_the_session_goes_on() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    let m = send(&mut alice, "pay 10,000 won");
    let mut bad = m.clone();
    bad.ciphertext[0] ^= 1;
    assert_eq!(
        read(&mut bob, &mut draw, &bad),
        Err(RatchetError::Unauthentic)
    );
    let mut bad_header = m.clone();
    bad_header.header.n += 3;
    assert_eq!(
        read(&mut bob, &mut draw, &bad_header),
        Err(RatchetError::Unauthentic)
    );
    let mut bad_key = m.clone();
    bad_key.header.dh = KeyPair::from_random([9; 32]).public;
    assert_eq!(
        read(&mut bob, &mut draw, &bad_key),
        Err(RatchetError::Unauthentic)
    );
    assert_eq!(bob.missing(), 0, "a failed read keeps no skipped keys");
    assert_eq!(read(&mut bob, &mut draw, &m).unwrap(), b"pay 10,000 won");
}

#[test]
fn a_jump_beyond_the_bound_is_refused() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    let mut m = send(&mut alice, "x");
    m.header.n = MAX_SKIP + 5;
    assert_eq!(
        read(&mut bob, &mut draw, &m),
        Err(RatchetError::TooFarAhead { jump: MAX_SKIP + 4 })
    );
}

#[test]
fn skipped_keys_are_bounded_and_the_oldest_go_first() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    let skipped = MAX_SKIPPED_KEYS + 10;
    let messages: Vec<Message> = (0..=skipped)
        .map(|i| send(&mut alice, &i.to_string()))
        .collect();
    read(&mut bob, &mut draw, &messages[skipped]).unwrap();
    assert_eq!(bob.missing(), MAX_SKIPPED_KEYS);
    assert_eq!(
        read(&mut bob, &mut draw, &messages[5]),
        Err(RatchetError::KeyGone)
    );
    assert_eq!(read(&mut bob, &mut draw, &messages[10]).unwrap(), b"10");
}

#[test]
fn a_copy_taken_after_reading_cannot_read_what_came_before() {
    let Pair {
        mut alice,
        mut bob,
        mut draw,
    } = pair();
    let m = send(&mut alice, "secret");
    read(&mut bob, &mut draw, &m).unwrap();
    let mut stolen: Session = postcard::from_bytes(&postcard::to_stdvec(&bob).unwrap()).unwrap();
    assert_eq!(read(&mut stolen, &mut draw, &m), Err(RatchetError::KeyGone));
}

/// The copy is taken at rest, in each of the states a conversation rests in; after one
/// round trip (Alice writes, Bob answers with a receipt) what Alice writes is unreadable
/// with it. Bob's next ratchet key is made when he writes, never kept unused.
#[test]
fn a_copy_taken_before_a_round_trip_cannot_read_what_comes_after() {
    for rest in 0..3 {
        let Pair {
            mut alice,
            mut bob,
            mut draw,
        } = pair();
        // Rest 0: Bob has read Alice's first message. Rest 1: and answered it. Rest 2:
        // and read Alice's receipt of his answer (which turned his ratchet once more).
        if rest >= 1 {
            let answer = send(&mut bob, "answer");
            read(&mut alice, &mut draw, &answer).unwrap();
        }
        if rest >= 2 {
            let receipt = send(&mut alice, "receipt");
            read(&mut bob, &mut draw, &receipt).unwrap();
        }
        let mut stolen: Session =
            postcard::from_bytes(&postcard::to_stdvec(&bob).unwrap()).unwrap();
        let one = send(&mut alice, "one");
        assert_eq!(read(&mut bob, &mut draw, &one).unwrap(), b"one");
        let receipt = send(&mut bob, "receipt");
        read(&mut alice, &mut draw, &receipt).unwrap();
        let after = send(&mut alice, "after the round trip");
        assert_eq!(
            read(&mut bob, &mut draw, &after).unwrap(),
            b"after the round trip"
        );
        let mut attacker_draw = Draw(200);
        let _ = read(&mut stolen, &mut attacker_draw, &one);
        let _ = read(&mut stolen, &mut attacker_draw, &receipt);
        assert_eq!(
            read(&mut stolen, &mut attacker_draw, &after),
            Err(RatchetError::Unauthentic),
            "resting state {rest}"
        );
    }
}

#[test]
fn a_session_bound_to_another_identity_does_not_open() {
    let mut draw = Draw(100);
    let alice_identity = draw.next();
    let mallory_identity = draw.next();
    let bob_identity = draw.next();
    let bob_prekey = KeyPair::from_random(draw.next());
    let mut alice = Session::initiate(
        &alice_identity,
        &KeyPair::from_secret(&bob_identity).public,
        &bob_prekey.public,
        1,
        [draw.next(), draw.next()],
    )
    .unwrap();
    let (m, _) = alice.encrypt(b"from alice", fresh()).unwrap();
    let init = m.init.clone().unwrap();
    let mut bob = Session::accept(
        &bob_identity,
        &bob_prekey,
        &KeyPair::from_secret(&mallory_identity).public,
        &init,
    )
    .unwrap();
    assert_eq!(bob.decrypt(&m).unwrap_err(), RatchetError::Unauthentic);
}

#[test]
fn low_order_keys_are_refused() {
    let identity = [3u8; 32];
    let zero = [0u8; 32];
    assert_eq!(
        Session::initiate(&identity, &zero, &zero, 1, [[4; 32], [5; 32]]).unwrap_err(),
        RatchetError::BadKey
    );
}

#[test]
fn message_keys_are_never_repeated_in_a_long_conversation() {
    let Pair {
        mut alice, mut bob, ..
    } = pair();
    let mut keys = std::collections::BTreeSet::new();
    for round in 0..30 {
        for _ in 0..(round % 4) + 1 {
            let (m, key) = alice.encrypt(b"a", fresh()).unwrap();
            assert!(keys.insert(key));
            assert_eq!(bob.decrypt(&m).unwrap().key, key);
        }
        let (m, key) = bob.encrypt(b"b", fresh()).unwrap();
        assert!(keys.insert(key));
        assert_eq!(alice.decrypt(&m).unwrap().key, key);
    }
}

fn hex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
}

/// RFC 7748 section 6.1: Alice's and Bob's keys and their shared secret, through the same
/// `KeyPair` the sessions use. The Double Ratchet and X3DH specifications publish no test
/// vectors; their primitives are pinned here and below.
#[test]
fn x25519_matches_rfc_7748() {
    let alice: [u8; 32] = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
        .try_into()
        .unwrap();
    let bob: [u8; 32] = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
        .try_into()
        .unwrap();
    let alice = KeyPair::from_secret(&alice);
    let bob = KeyPair::from_secret(&bob);
    assert_eq!(
        alice.public.to_vec(),
        hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        bob.public.to_vec(),
        hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let shared = hex(
        "4a5d9d5b a4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
            .replace(' ', "")
            .as_str(),
    );
    assert_eq!(alice.dh(&bob.public).unwrap().to_vec(), shared);
    assert_eq!(bob.dh(&alice.public).unwrap().to_vec(), shared);
}

/// RFC 5869 appendix A.1 (HKDF-SHA256, basic test case).
#[test]
fn hkdf_matches_rfc_5869() {
    let ikm = [0x0bu8; 22];
    let salt = hex("000102030405060708090a0b0c");
    let info = hex("f0f1f2f3f4f5f6f7f8f9");
    let mut okm = [0u8; 42];
    Hkdf::<Sha256>::new(Some(&salt), &ikm)
        .expand(&info, &mut okm)
        .unwrap();
    assert_eq!(
        okm.to_vec(),
        hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    );
}

/// RFC 8439 section 2.8.2 (ChaCha20-Poly1305 AEAD).
#[test]
fn chacha20poly1305_matches_rfc_8439() {
    let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = hex("070000004041424344454647");
    let aad = hex("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let sealed = ChaCha20Poly1305::new(Key::from_slice(&key))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    let tag = &sealed[sealed.len() - 16..];
    assert_eq!(tag.to_vec(), hex("1ae10b594f09e26a7e902ecbd0600691"));
    assert_eq!(
        sealed[..16].to_vec(),
        hex("d31a8d34648e60db7b86afbc53ef7ec2")
    );
}
