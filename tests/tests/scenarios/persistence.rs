//! Nothing acknowledged is lost: offline recipients, restarts, kill -9.

use bonghwa_core::Event;
use bonghwa_core::model::MessageStatus;
use bonghwa_tests::process::{Launch, RpcProcess};
use bonghwa_tests::{TestNode, befriend, send_and_wait};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_message_exactly_once_when_back() -> anyhow::Result<()> {
    let mut alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    befriend(&mut alice, &mut bob).await?;
    send_and_wait(&mut alice, &mut bob, "before").await?;
    let bob_id = bob.peer_id();
    let bob = bob.stop().await?;
    alice
        .wait_for("bob to disconnect", |e| {
            matches!(e, Event::PeerDisconnected { peer_id } if *peer_id == bob_id).then_some(())
        })
        .await?;

    let id = alice
        .node
        .send(&bob_id, "while you were away")
        .await?
        .to_hex();
    let pending = alice.node.messages(&bob_id, None, None).await?;
    assert_eq!(
        pending.last().map(|m| (m.id.as_str(), m.status)),
        Some((id.as_str(), MessageStatus::Pending))
    );

    let mut bob = bob.start().await?;
    let got = bob.wait_message("while you were away").await?;
    assert_eq!(got.id, id);
    alice.wait_status(&id, MessageStatus::Delivered).await?;
    // Shown exactly once, even though Alice retried.
    send_and_wait(&mut alice, &mut bob, "after").await?;
    let history: Vec<String> = bob
        .history_with(&alice)
        .await?
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(history, ["before", "while you were away", "after"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_history_contacts_names_and_resumes_outbox() -> anyhow::Result<()> {
    let mut alice = TestNode::start("alice").await?;
    let mut bob = TestNode::start("bob").await?;
    befriend(&mut alice, &mut bob).await?;
    send_and_wait(&mut alice, &mut bob, "one").await?;
    send_and_wait(&mut bob, &mut alice, "two").await?;
    alice.node.contact_verify(&bob.peer_id()).await?;
    let bob_id = bob.peer_id();
    let bob = bob.stop().await?;
    alice
        .wait_for("bob to disconnect", |e| {
            matches!(e, Event::PeerDisconnected { peer_id } if *peer_id == bob_id).then_some(())
        })
        .await?;
    let queued = alice.node.send(&bob_id, "three, queued").await?.to_hex();

    // Both restart; Alice first, while Bob is still down.
    let mut alice = alice.restart().await?;
    let identity = alice.node.identity().await?;
    assert_eq!(identity.name, "alice");
    let contacts = alice.node.contacts().await?;
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].name, "bob");
    assert!(contacts[0].verified);
    let history = alice.node.messages(&bob_id, None, None).await?;
    let view: Vec<(&str, MessageStatus)> = history
        .iter()
        .map(|m| (m.text.as_str(), m.status))
        .collect();
    assert_eq!(
        view,
        [
            ("one", MessageStatus::Delivered),
            ("two", MessageStatus::Delivered),
            ("three, queued", MessageStatus::Pending)
        ]
    );

    // The unacked outbox entry is resumed once Bob is back.
    let mut bob = bob.start().await?;
    let got = bob.wait_message("three, queued").await?;
    assert_eq!(got.id, queued);
    alice.wait_status(&queued, MessageStatus::Delivered).await?;
    let at_bob: Vec<String> = bob
        .history_with(&alice)
        .await?
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(at_bob, ["one", "two", "three, queued"]);
    assert_eq!(bob.node.contacts().await?[0].name, "alice");
    Ok(())
}

fn befriend_processes(alice: &mut RpcProcess, bob: &mut RpcProcess) -> anyhow::Result<()> {
    alice.call("connect", json!({"addr": bob.addr()}))?;
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;
    Ok(())
}

#[test]
fn kill_9_of_receiver_right_after_ack_loses_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let launch = Launch::default();
    let mut alice = RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &launch)?;
    befriend_processes(&mut alice, &mut bob)?;
    let bob_id = bob.peer_id();
    let mut ids = Vec::new();
    for i in 0..20 {
        let sent = alice.call("send", json!({"to": bob_id, "text": format!("acked {i}")}))?;
        ids.push(sent["id"].as_str().unwrap_or_default().to_owned());
    }
    // The moment Alice holds the last ack, Bob dies without any chance to flush.
    for id in &ids {
        alice.wait_status(&bob_id, id, "delivered")?;
    }
    let bob_dir = bob.data_dir.clone();
    bob.kill9()?;

    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    let history = bob.call("messages", json!({"chat": alice.peer_id(), "limit": 100}))?;
    let texts: Vec<&str> = history
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    let expected: Vec<String> = (0..20).map(|i| format!("acked {i}")).collect();
    assert_eq!(texts, expected);
    bob.shutdown()?;
    alice.shutdown()?;
    Ok(())
}

#[test]
fn kill_9_of_sender_right_after_send_returns_still_delivers() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let launch = Launch::default();
    let mut alice = RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &launch)?;
    befriend_processes(&mut alice, &mut bob)?;
    let alice_id = alice.peer_id();
    let bob_id = bob.peer_id();
    // Bob goes away first, so the message can only wait in Alice's outbox.
    let bob_dir = bob.data_dir.clone();
    bob.shutdown()?;
    let sent = alice.call("send", json!({"to": bob_id, "text": "survives kill -9"}))?;
    let id = sent["id"].as_str().unwrap_or_default().to_owned();
    let alice_dir = alice.data_dir.clone();
    alice.kill9()?;

    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    bob.call("connect", json!({"addr": alice.addr()}))?;
    let got = bob.wait_event("the queued message", |p| p["kind"] == "message_received")?;
    assert_eq!(got["message"]["id"], id.as_str());
    assert_eq!(got["message"]["text"], "survives kill -9");
    alice.wait_status(&bob_id, &id, "delivered")?;
    let history = bob.call("messages", json!({"chat": alice_id}))?;
    assert_eq!(history.as_array().map(Vec::len), Some(1));
    alice.shutdown()?;
    bob.shutdown()?;
    Ok(())
}
