//! Direct messages between in-process nodes on loopback (mDNS off, `connect`).

use bonghwa_core::Event;
use bonghwa_core::model::MessageStatus;
use bonghwa_tests::{TestNode, befriend, send_and_wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_loopback_chat_both_ways() -> anyhow::Result<()> {
    let mut alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    befriend(&mut alice, &mut bob).await?;

    send_and_wait(&mut alice, &mut bob, "안녕하세요, Bob 👋").await?;
    send_and_wait(&mut bob, &mut alice, "Hi Alice, 잘 지냈어요?").await?;

    // Both sides show the same two messages in the same order, all delivered.
    let at_alice = alice.history_with(&bob).await?;
    let at_bob = bob.history_with(&alice).await?;
    let texts = |h: &[bonghwa_core::node::MessageInfo]| {
        h.iter().map(|m| m.text.clone()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&at_alice), texts(&at_bob));
    assert_eq!(at_alice.len(), 2);
    assert!(
        at_alice
            .iter()
            .all(|m| m.status == MessageStatus::Delivered),
        "{at_alice:?}"
    );

    // Names travel in the signed cards.
    let contacts = alice.node.contacts().await?;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].name, "bob");
    assert!(contacts[0].online);

    // The chat list counts Bob's message as unread until Alice reads it.
    let chats = alice.node.chats().await?;
    assert_eq!(chats[0].unread, 1);
    alice.node.mark_read(&bob.peer_id()).await?;
    assert_eq!(alice.node.chats().await?[0].unread, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_go_pending_sent_delivered_in_order() -> anyhow::Result<()> {
    let mut alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    befriend(&mut alice, &mut bob).await?;
    let id = alice
        .node
        .send(&bob.peer_id(), "status check")
        .await?
        .to_hex();
    let mut seen = Vec::new();
    while seen.last() != Some(&MessageStatus::Delivered) {
        let status = alice
            .wait_for("a status", |e| match e {
                Event::MessageStatus {
                    id: got, status, ..
                } if *got == id => Some(*status),
                _ => None,
            })
            .await?;
        seen.push(status);
    }
    assert_eq!(seen, vec![MessageStatus::Sent, MessageStatus::Delivered]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_message_becomes_a_contact_request() -> anyhow::Result<()> {
    let mut alice = TestNode::start("alice").await?;
    let mallory = TestNode::start("mallory").await?;
    // Mallory knows Alice's code; Alice never added Mallory.
    mallory.node.connect(&alice.addr().await?).await?;
    mallory.node.contact_add(&alice.code().await?, None).await?;
    mallory
        .node
        .send(&alice.peer_id(), "click this link")
        .await?;

    let (peer, name) = alice
        .wait_for("contact request", |e| match e {
            Event::ContactRequest { peer_id, name } => Some((peer_id.clone(), name.clone())),
            _ => None,
        })
        .await?;
    assert_eq!(peer, mallory.peer_id());
    assert_eq!(name, "mallory");
    // Not trusted: not among contacts, and the chat is marked as a request.
    assert!(alice.node.contacts().await?.is_empty());
    let chats = alice.node.chats().await?;
    assert_eq!(chats.len(), 1);
    assert!(chats[0].request);
    assert_eq!(
        chats[0].last.as_ref().map(|m| m.text.as_str()),
        Some("click this link")
    );
    // Accepting = adding their code; then it is a normal contact.
    alice.node.contact_add(&mallory.code().await?, None).await?;
    assert_eq!(alice.node.contacts().await?.len(), 1);
    assert!(!alice.node.chats().await?[0].request);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_numbers_match_and_verify_sticks() -> anyhow::Result<()> {
    let mut alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    befriend(&mut alice, &mut bob).await?;
    let at_alice = alice.node.safety_number(&bob.peer_id()).await?;
    let at_bob = bob.node.safety_number(&alice.peer_id()).await?;
    assert_eq!(at_alice, at_bob);
    assert!(!alice.node.contacts().await?[0].verified);
    alice.node.contact_verify(&bob.peer_id()).await?;
    let alice = alice.restart().await?;
    assert!(alice.node.contacts().await?[0].verified);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sends_are_refused_with_clear_errors() -> anyhow::Result<()> {
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    let err = alice.node.send(&bob.peer_id(), "hi").await.unwrap_err();
    assert!(err.to_string().contains("not a contact"), "{err}");
    let err = alice.node.send("not-a-peer", "hi").await.unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("is neither a peer id") && err.contains("nor a group id"),
        "{err}"
    );
    alice.node.contact_add(&bob.code().await?, None).await?;
    let err = alice.node.send(&bob.peer_id(), "   ").await.unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let huge = "가".repeat(20_000);
    let err = alice.node.send(&bob.peer_id(), &huge).await.unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    // Nothing was stored by the refused sends.
    assert!(alice.node.chats().await?.is_empty());
    let err = alice.node.contact_add("BH1AAAA", None).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let code = bob.code().await?;
    let err = alice
        .node
        .contact_add(&code[..code.len() - 3], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_can_be_accepted_or_refused_without_a_code() -> anyhow::Result<()> {
    let mut alice = TestNode::start("alice").await?;
    let mut friend = TestNode::start("friend").await?;
    let mut spammer = TestNode::start("spammer").await?;
    for stranger in [&mut friend, &mut spammer] {
        stranger.node.connect(&alice.addr().await?).await?;
        stranger
            .node
            .contact_add(&alice.code().await?, None)
            .await?;
        stranger.node.send(&alice.peer_id(), "hello?").await?;
    }
    for _ in 0..2 {
        alice
            .wait_for("a request", |e| {
                matches!(e, Event::ContactRequest { .. }).then_some(())
            })
            .await?;
    }
    alice.node.contact_accept(&friend.peer_id()).await?;
    alice.node.contact_refuse(&spammer.peer_id()).await?;

    let contacts = alice.node.contacts().await?;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].name, "friend");
    let chats = alice.node.chats().await?;
    assert_eq!(chats.len(), 1, "the refused chat is hidden: {chats:?}");
    assert!(!chats[0].request);

    // The accepted stranger is now an ordinary contact both ways.
    send_and_wait(&mut alice, &mut friend, "welcome").await?;
    // The refused one is acknowledged (so it stops retrying) but nothing is shown.
    let id = spammer
        .node
        .send(&alice.peer_id(), "buy now")
        .await?
        .to_hex();
    spammer.wait_status(&id, MessageStatus::Delivered).await?;
    assert!(
        alice
            .node
            .messages(&spammer.peer_id(), None, None)
            .await?
            .len()
            == 1,
        "only the first message, from before the refusal, is kept"
    );
    assert_eq!(alice.node.chats().await?.len(), 1);
    Ok(())
}
