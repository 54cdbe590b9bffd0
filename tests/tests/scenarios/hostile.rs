//! Hostile input on the wire: each case is refused, nothing is stored, nothing panics,
//! and the node keeps serving honest peers afterwards.

use bonghwa_core::crypto;
use bonghwa_core::identity::Identity;
use bonghwa_core::model::{Hlc, MessageId};
use bonghwa_core::wire::{Ack, Body, DmPayload, DmRequest, DmResponse, PAYLOAD_VERSION, Reject};
use bonghwa_tests::hostile::{Attacker, frame};
use bonghwa_tests::{TestNode, befriend, send_and_wait};

/// A correctly sealed envelope from `sender` (whose card is `card_of`) to `bob`.
fn envelope(
    sealer: &Identity,
    card_of: &Identity,
    bob_card: &bonghwa_core::identity::ContactCard,
    text: &str,
    id: u8,
) -> Vec<u8> {
    let payload = DmPayload {
        version: PAYLOAD_VERSION,
        id: MessageId([id; 32]),
        hlc: Hlc {
            ms: 1_700_000_000_000,
            counter: 0,
        },
        sender: card_of.card("alice", vec![], 1),
        recipient: bob_card.identity,
        body: Body::Text(text.into()),
    };
    crypto::seal(sealer.msg_secret(), &bob_card.msg_key, &payload.encode()).expect("seal")
}

/// The node answered with no acks at all, or closed the stream: nothing was accepted.
fn accepted_nothing(answer: &Result<Vec<u8>, String>) -> bool {
    match answer {
        Err(_) => true,
        Ok(raw) if raw.len() >= 4 => DmResponse::decode(&raw[4..]).is_ok_and(|r| r.acks.is_empty()),
        Ok(_) => true,
    }
}

pub(crate) async fn verdicts(
    attacker: &mut Attacker,
    bob: libp2p::PeerId,
    envelopes: Vec<Vec<u8>>,
) -> Vec<Ack> {
    let bytes = frame(&DmRequest { envelopes }.encode());
    let raw = attacker
        .send(bob, bytes)
        .await
        .expect("transport")
        .expect("a response");
    assert!(raw.len() >= 4, "response too short: {raw:?}");
    DmResponse::decode(&raw[4..]).expect("a dm response").acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_and_envelopes_are_refused_and_node_keeps_serving() -> anyhow::Result<()> {
    let mut bob = TestNode::start("bob").await?;
    let bob_card = bonghwa_core::identity::ContactCard::from_code(&bob.code().await?)?;
    let mut attacker = Attacker::new()?;
    let bob_peer = attacker.connect(&bob.addr().await?).await?;

    // 1. Garbage bytes: no frame at all.
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
    let answer = attacker.send(bob_peer, garbage).await?;
    assert!(
        accepted_nothing(&answer),
        "garbage was accepted: {answer:?}"
    );

    // 2. An oversized frame: a length prefix of 1 GiB (the body is never read).
    let mut oversized = (1u32 << 30).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 1024]);
    let answer = attacker.send(bob_peer, oversized).await?;
    assert!(
        accepted_nothing(&answer),
        "oversized frame was accepted: {answer:?}"
    );

    // 3. A frame that decodes but holds a well-formed lie: zero envelopes.
    let answer = attacker
        .send(bob_peer, frame(&DmRequest { envelopes: vec![] }.encode()))
        .await?;
    assert!(accepted_nothing(&answer), "{answer:?}");

    let alice = Identity::generate()?;
    let mallory = Identity::generate()?;
    let carol = Identity::generate()?;
    let carol_card = carol.card("carol", vec![], 1);

    // 4. Sealed for someone else (Carol), 5. tampered, 6. forged sender (Mallory seals,
    // but claims to be Alice), 7. a payload naming another recipient.
    let for_carol = envelope(&alice, &alice, &carol_card, "for carol", 4);
    let mut tampered = envelope(&alice, &alice, &bob_card, "tampered", 5);
    let last = tampered.len() - 20;
    tampered[last] ^= 0x40;
    let forged = envelope(&mallory, &alice, &bob_card, "I am alice, trust me", 6);
    let misaddressed = {
        let payload = DmPayload {
            version: PAYLOAD_VERSION,
            id: MessageId([7; 32]),
            hlc: Hlc::default(),
            sender: alice.card("alice", vec![], 1),
            recipient: carol_card.identity,
            body: Body::Text("re-sealed from carol's copy".into()),
        };
        crypto::seal(alice.msg_secret(), &bob_card.msg_key, &payload.encode())?
    };
    let acks = verdicts(
        &mut attacker,
        bob_peer,
        vec![for_carol, tampered, forged, misaddressed],
    )
    .await;
    assert_eq!(
        acks,
        vec![
            Ack::Rejected(Reject::Undecryptable),
            Ack::Rejected(Reject::Undecryptable),
            Ack::Rejected(Reject::Forged),
            Ack::Rejected(Reject::Forged),
        ]
    );
    assert!(
        bob.node.chats().await?.is_empty(),
        "a hostile envelope was stored"
    );

    // 8. A replay: the same genuine envelope twice is stored once and shown once.
    let genuine = envelope(&alice, &alice, &bob_card, "genuine, once", 8);
    let first = verdicts(&mut attacker, bob_peer, vec![genuine.clone()]).await;
    assert_eq!(first, vec![Ack::Stored(MessageId([8; 32]))]);
    let again = verdicts(&mut attacker, bob_peer, vec![genuine.clone(), genuine]).await;
    assert_eq!(again, vec![Ack::Stored(MessageId([8; 32])); 2]);
    let alice_id = alice.peer_id().to_string();
    let history = bob.node.messages(&alice_id, None, None).await?;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].text, "genuine, once");
    let mut received = 0;
    while let Ok(Some(event)) = bob.events.try_next() {
        if matches!(event, bonghwa_core::Event::MessageReceived { .. }) {
            received += 1;
        }
    }
    assert_eq!(received, 1, "the replay was shown again");

    // The node still serves honest peers.
    let mut carol = TestNode::start("carol").await?;
    befriend(&mut carol, &mut bob).await?;
    send_and_wait(&mut carol, &mut bob, "still there?").await?;
    send_and_wait(&mut bob, &mut carol, "yes").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_sending_garbage_is_disconnected() -> anyhow::Result<()> {
    let bob = TestNode::start("bob").await?;
    let mut attacker = Attacker::new()?;
    let bob_peer = attacker.connect(&bob.addr().await?).await?;
    let mut rounds = 0;
    while attacker.is_connected(&bob_peer) && rounds < 100 {
        let _ = attacker.send(bob_peer, vec![0xff; 64]).await?;
        rounds += 1;
    }
    assert!(
        !attacker.is_connected(&bob_peer),
        "still connected after {rounds} bad frames"
    );
    assert!(bob.node.chats().await?.is_empty());
    Ok(())
}
