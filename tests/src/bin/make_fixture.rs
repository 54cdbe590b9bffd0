//! `make-fixture OUT_DIR`: writes the data dirs from which `tests/fixtures/datadir-v1` was
//! taken (Alice's), with the nodes on loopback and mDNS off. Run on the commit whose format
//! a fixture pins; never regenerate an existing fixture with newer code.

use std::path::Path;

use bonghwa_core::Event;
use bonghwa_core::model::MessageStatus;
use bonghwa_tests::{TestNode, befriend, send_and_wait};

/// Writes the `datadir-v1` fixture (Alice's data dir) into `OUT_DIR/alice`.
/// Run by hand on the commit whose format the fixture captures (see the fixture's README);
/// the other nodes' dirs are left next to it and are not part of the fixture.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: make-fixture OUT_DIR"))?;
    let out = Path::new(&out);
    let mut alice = TestNode::start_in("alice", &out.join("alice")).await?;
    let mut bob = TestNode::start_in("bob", &out.join("bob")).await?;
    let mut carol = TestNode::start_in("carol", &out.join("carol")).await?;
    let dave = TestNode::start_in("dave", &out.join("dave")).await?;
    befriend(&mut alice, &mut bob).await?;
    befriend(&mut alice, &mut carol).await?;
    send_and_wait(&mut alice, &mut bob, "hello bob").await?;
    send_and_wait(&mut bob, &mut alice, "hi alice").await?;
    send_and_wait(&mut alice, &mut bob, "lunch on friday?").await?;
    alice.node.mark_read(&bob.peer_id()).await?;

    // Dave knows Alice's code, she does not know his: his message is a contact request.
    dave.node.connect(&alice.addr().await?).await?;
    dave.node.contact_add(&alice.code().await?, None).await?;
    dave.node.send(&alice.peer_id(), "hi, I'm dave").await?;
    let dave_id = dave.peer_id();
    alice
        .wait_for("dave's request", |e| {
            matches!(e, Event::ContactRequest { peer_id, .. } if *peer_id == dave_id).then_some(())
        })
        .await?;

    // Carol goes offline: her message and her group invite wait in Alice's outbox.
    let carol_id = carol.peer_id();
    carol.stop().await?;
    alice
        .wait_for("carol to disconnect", |e| {
            matches!(e, Event::PeerDisconnected { peer_id } if *peer_id == carol_id).then_some(())
        })
        .await?;
    alice
        .node
        .send(&carol_id, "call me when you are back")
        .await?;

    let group = alice
        .node
        .group_create("hikers", &[bob.peer_id(), carol_id.clone()])
        .await?;
    bob.wait_for("the invite", |e| {
        matches!(e, Event::GroupChanged { group: g } if *g == group).then_some(())
    })
    .await?;
    group_send_and_wait(&mut alice, &mut bob, &group, "trail at nine").await?;
    group_send_and_wait(&mut bob, &mut alice, &group, "bringing snacks").await?;
    dave.node.shutdown().await?;
    bob.node.shutdown().await?;
    alice.node.shutdown().await?;
    Ok(())
}

/// Sends `text` to `group` and waits until `to` has it and `from` sees it sent.
async fn group_send_and_wait(
    from: &mut TestNode,
    to: &mut TestNode,
    group: &str,
    text: &str,
) -> anyhow::Result<()> {
    let id = from.node.send(group, text).await?.to_hex();
    to.wait_message(text).await?;
    from.wait_status(&id, MessageStatus::Sent).await?;
    Ok(())
}
