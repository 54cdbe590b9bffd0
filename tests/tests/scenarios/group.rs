//! Group chats between real `bonghwa rpc` processes on loopback: sender keys through the
//! group log, gossip, and history repair by sync.

use bonghwa_tests::process::{Launch, RpcProcess};
use serde_json::{Value, json};

/// Everyone adds everyone's code; each pair is connected.
fn befriend(nodes: &mut [&mut RpcProcess]) -> anyhow::Result<()> {
    let codes: Vec<(String, String)> = nodes.iter().map(|n| (n.peer_id(), n.code())).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, (_, code)) in codes.iter().enumerate() {
            if i != j {
                node.call("contact_add", json!({"code": code}))?;
            }
        }
        for addr in addrs.iter().skip(i + 1) {
            node.call("connect", json!({"addr": addr}))?;
        }
    }
    Ok(())
}

/// The texts of a chat, oldest first.
pub(crate) fn texts(node: &mut RpcProcess, chat: &str) -> anyhow::Result<Vec<String>> {
    let history = node.call("messages", json!({"chat": chat, "limit": 1000}))?;
    Ok(history
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

pub(crate) fn received(node: &mut RpcProcess, group: &str, text: &str) -> anyhow::Result<Value> {
    node.wait_event(&format!("{text:?} in the group"), |p| {
        p["kind"] == "message_received" && p["chat"] == group && p["message"]["text"] == text
    })
}

/// Alice and bob take turns, `count` messages "while carol was away {i}", each received
/// by the other before the next.
pub(crate) fn alternate(
    alice: &mut RpcProcess,
    bob: &mut RpcProcess,
    group: &str,
    count: usize,
) -> anyhow::Result<()> {
    for i in 0..count {
        let (from, to) = if i % 2 == 0 {
            (&mut *alice, &mut *bob)
        } else {
            (&mut *bob, &mut *alice)
        };
        let text = format!("while carol was away {i}");
        from.call("send", json!({"to": group, "text": text}))?;
        received(to, group, &text)?;
    }
    Ok(())
}

#[test]
fn three_members_chat_in_a_group_and_hold_the_same_history() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let launch = Launch::default();
    let mut alice = RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &launch)?;
    let mut carol = RpcProcess::spawn(&bin, "carol", &tmp.path().join("carol"), &launch)?;
    befriend(&mut [&mut alice, &mut bob, &mut carol])?;

    let created = alice.call(
        "group_create",
        json!({"name": "가족", "members": [bob.peer_id(), carol.peer_id()]}),
    )?;
    let group = created["group_id"].as_str().unwrap_or_default().to_owned();
    for node in [&mut bob, &mut carol] {
        node.wait_event("the invite", |p| {
            p["kind"] == "group_changed" && p["group"] == group.as_str()
        })?;
    }
    let chats = bob.call("chats", json!({}))?;
    let entry = chats
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == group.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["kind"], "group", "{chats}");
    assert_eq!(entry["name"], "가족", "{chats}");

    let sent = alice.call("send", json!({"to": group, "text": "저녁 7시에 모여요"}))?;
    received(&mut bob, &group, "저녁 7시에 모여요")?;
    received(&mut carol, &group, "저녁 7시에 모여요")?;
    let id = sent["id"].as_str().unwrap_or_default();
    alice.wait_status(&group, id, "sent")?;
    bob.call("send", json!({"to": group, "text": "좋아요"}))?;
    received(&mut alice, &group, "좋아요")?;
    received(&mut carol, &group, "좋아요")?;
    carol.call("send", json!({"to": group, "text": "케이크 가져갈게"}))?;
    received(&mut alice, &group, "케이크 가져갈게")?;
    received(&mut bob, &group, "케이크 가져갈게")?;

    let expected = texts(&mut alice, &group)?;
    assert_eq!(expected.len(), 3, "{expected:?}");
    assert_eq!(texts(&mut bob, &group)?, expected, "same order everywhere");
    assert_eq!(
        texts(&mut carol, &group)?,
        expected,
        "same order everywhere"
    );
    let members = carol.call("group_members", json!({"group": group}))?;
    assert_eq!(members.as_array().map(Vec::len), Some(3), "{members}");
    Ok(())
}

/// Waits (on `group_changed` events) until the group's member list passes `ok`.
fn wait_members(
    node: &mut RpcProcess,
    group: &str,
    ok: impl Fn(&[String]) -> bool,
) -> anyhow::Result<()> {
    loop {
        let members = node.call("group_members", json!({"group": group}))?;
        let members: Vec<String> = members
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if ok(&members) {
            return Ok(());
        }
        node.wait_event("a membership change", |p| {
            p["kind"] == "group_changed" && p["group"] == group
        })?;
    }
}

/// Alice, bob and carol (data dirs under `dir`, named after them), all contacts and
/// connected, in a group named `name` that alice made.
fn three_in_a_group(
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(RpcProcess, RpcProcess, RpcProcess, String)> {
    three_in_a_group_with(dir, name, &Launch::default())
}

/// [`three_in_a_group`], each started with `launch`.
pub(crate) fn three_in_a_group_with(
    dir: &std::path::Path,
    name: &str,
    launch: &Launch,
) -> anyhow::Result<(RpcProcess, RpcProcess, RpcProcess, String)> {
    let bin = crate::node_bin();
    let mut alice = RpcProcess::spawn(&bin, "alice", &dir.join("alice"), launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &dir.join("bob"), launch)?;
    let mut carol = RpcProcess::spawn(&bin, "carol", &dir.join("carol"), launch)?;
    befriend(&mut [&mut alice, &mut bob, &mut carol])?;
    let group = group_of(&mut alice, &mut [&mut bob, &mut carol], name)?;
    Ok((alice, bob, carol, group))
}

/// Three members; a group made by `creator` with the others.
fn group_of(
    creator: &mut RpcProcess,
    others: &mut [&mut RpcProcess],
    name: &str,
) -> anyhow::Result<String> {
    let members: Vec<String> = others.iter().map(|n| n.peer_id()).collect();
    let created = creator.call("group_create", json!({"name": name, "members": members}))?;
    let group = created["group_id"].as_str().unwrap_or_default().to_owned();
    for node in others.iter_mut() {
        node.wait_event("the invite", |p| {
            p["kind"] == "group_changed" && p["group"] == group.as_str()
        })?;
    }
    Ok(group)
}

#[test]
fn a_removed_member_gets_nothing_sent_after_the_removal() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut alice, mut bob, mut carol, group) = three_in_a_group(tmp.path(), "team")?;
    alice.call("send", json!({"to": group, "text": "before"}))?;
    received(&mut bob, &group, "before")?;
    received(&mut carol, &group, "before")?;

    alice.call(
        "group_remove",
        json!({"group": group, "member": carol.peer_id()}),
    )?;
    // Everyone agrees on who is in.
    let carol_id = carol.peer_id();
    for node in [&mut bob, &mut carol] {
        wait_members(node, &group, |members| !members.contains(&carol_id))?;
    }
    let refused = carol.call_raw("send", json!({"to": group, "text": "still here?"}))?;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not a member"),
        "{refused}"
    );
    // Bob has the new keys of alice (and alice of bob): messages after the removal flow.
    alice.call("send", json!({"to": group, "text": "after"}))?;
    received(&mut bob, &group, "after")?;
    bob.call("send", json!({"to": group, "text": "after, from bob"}))?;
    received(&mut alice, &group, "after, from bob")?;
    // Carol, connected all along, shows neither.
    assert_eq!(texts(&mut carol, &group)?, vec!["before".to_owned()]);
    Ok(())
}

#[test]
fn a_member_offline_for_the_whole_conversation_catches_up_on_return() -> anyhow::Result<()> {
    const COUNT: usize = 20;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let carol_dir = tmp.path().join("carol");
    let (mut alice, mut bob, mut carol, group) = three_in_a_group(tmp.path(), "book club")?;
    // Carol has bob's key before she goes (bob's key item reached her).
    bob.call("send", json!({"to": group, "text": "hello all"}))?;
    received(&mut carol, &group, "hello all")?;
    let carol_id = carol.peer_id();
    carol.shutdown()?;
    alice.wait_event("carol gone", |p| {
        p["kind"] == "peer_disconnected" && p["peer_id"] == carol_id.as_str()
    })?;

    alternate(&mut alice, &mut bob, &group, COUNT)?;
    let expected = texts(&mut alice, &group)?;
    assert_eq!(expected.len(), COUNT + 1);
    assert_eq!(texts(&mut bob, &group)?, expected);

    // Back: she reconnects to her contacts and syncs the group with them.
    let mut carol = RpcProcess::spawn(&bin, "carol", &carol_dir, &Launch::default())?;
    carol.count_events("the missed messages", COUNT, |p| {
        p["kind"] == "message_received" && p["chat"] == group.as_str()
    })?;
    assert_eq!(
        texts(&mut carol, &group)?,
        expected,
        "all, once, in the same order"
    );
    Ok(())
}

/// The status a message has in `node`'s history.
fn status_of(node: &mut RpcProcess, chat: &str, id: &str) -> anyhow::Result<Value> {
    let history = node.call("messages", json!({"chat": chat, "limit": 1000}))?;
    Ok(history
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .map(|m| m["status"].clone())
        .unwrap_or_default())
}

#[test]
fn a_message_written_with_nobody_reachable_turns_sent_when_a_member_gets_it_after_a_restart()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let (mut alice, bob, carol, group) = three_in_a_group(tmp.path(), "night shift")?;
    for other in [bob, carol] {
        let id = other.peer_id();
        other.shutdown()?;
        alice.wait_event("a member gone", |p| {
            p["kind"] == "peer_disconnected" && p["peer_id"] == id.as_str()
        })?;
    }
    let sent = alice.call("send", json!({"to": group, "text": "anyone there?"}))?;
    let id = sent["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        status_of(&mut alice, &group, &id)?,
        "pending",
        "nobody got it"
    );
    alice.shutdown()?;

    // Alice comes back first, then bob: he gets it by sync, and alice sees it leave.
    let launch = Launch::default();
    let mut alice = RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &launch)?;
    assert_eq!(
        status_of(&mut alice, &group, &id)?,
        "pending",
        "after the restart"
    );
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &launch)?;
    bob.call("connect", json!({"addr": alice.addr()}))?;
    received(&mut bob, &group, "anyone there?")?;
    alice.wait_status(&group, &id, "sent")?;
    Ok(())
}

#[test]
fn a_member_killed_during_traffic_catches_up_with_nothing_lost_or_doubled() -> anyhow::Result<()> {
    const EACH: usize = 30;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let carol_dir = tmp.path().join("carol");
    let (mut alice, mut bob, mut carol, group) = three_in_a_group(tmp.path(), "busy")?;

    // Traffic from all three, pipelined; carol is killed once she has taken some of it.
    let send = |node: &mut RpcProcess, text: String| -> anyhow::Result<()> {
        let request = json!({"jsonrpc": "2.0", "id": text, "method": "send",
            "params": {"to": group, "text": text}});
        node.write_raw(&request.to_string())
    };
    for i in 0..EACH {
        send(&mut alice, format!("alice {i}"))?;
        send(&mut bob, format!("bob {i}"))?;
    }
    let mut carol_sent = Vec::new();
    for i in 0..5 {
        let text = format!("carol {i}");
        let answer = carol.call("send", json!({"to": group, "text": text}))?;
        assert!(answer["id"].is_string(), "{answer}");
        carol_sent.push(text);
    }
    carol.count_events("some traffic", 10, |p| {
        p["kind"] == "message_received" && p["chat"] == group.as_str()
    })?;
    carol.kill9()?;

    // Carol comes back: she catches up, and her acknowledged sends (some may never have
    // left her before the kill) reach the others through sync.
    let mut carol = RpcProcess::spawn(&bin, "carol", &carol_dir, &Launch::default())?;
    let total = 2 * EACH + carol_sent.len();
    let wait_all = |node: &mut RpcProcess| -> anyhow::Result<Vec<String>> {
        loop {
            let now = texts(node, &group)?;
            if now.len() >= total {
                return Ok(now);
            }
            node.wait_event("more group traffic", |p| {
                p["kind"] == "message_received" && p["chat"] == group.as_str()
            })?;
        }
    };
    let after = wait_all(&mut carol)?;
    let expected = wait_all(&mut alice)?;
    assert_eq!(wait_all(&mut bob)?, expected);
    assert_eq!(
        after, expected,
        "carol: everything, once, in the same order"
    );
    for text in &carol_sent {
        assert!(
            expected.contains(text),
            "{text} was acknowledged, so it is not lost"
        );
    }
    let unique: std::collections::BTreeSet<&String> = after.iter().collect();
    assert_eq!(unique.len(), total, "nothing shown twice");
    Ok(())
}

#[test]
fn forged_group_messages_are_rejected_by_everyone() -> anyhow::Result<()> {
    use bonghwa_core::crypto::group::{GroupId, SenderKey, signing_key_of, topic_for};
    use bonghwa_core::identity::{ContactCard, Identity};
    use bonghwa_core::model::{Hlc, MessageId};
    use bonghwa_core::wire::group::{
        GroupBody, GroupEnvelope, GroupPayload, LogBody, LogItem, SyncRequest, SyncResponse,
    };
    use bonghwa_tests::gossip_attacker::GossipAttacker;
    use bonghwa_tests::hostile::{Attacker, frame};

    let tmp = tempfile::tempdir()?;
    let (mut alice, mut bob, mut carol, group) = three_in_a_group(tmp.path(), "guarded")?;
    alice.call("send", json!({"to": group, "text": "real"}))?;
    received(&mut bob, &group, "real")?;
    received(&mut carol, &group, "real")?;

    // Mallory knows the group id (say it leaked) but is not a member.
    let gid = GroupId::from_hex(&group).ok_or_else(|| anyhow::anyhow!("bad group id"))?;
    let topic = topic_for(&gid);
    let mallory = Identity::generate()?;
    let signing = signing_key_of(&mallory)?;
    // Mallory's own sender key, handed to every member as a member would (so only the
    // membership check stands between her and their screens).
    let mut key = SenderKey::generate()?;
    let state = postcard::to_stdvec(key.state())?;
    let mut sealed = Vec::new();
    for node in [&alice, &bob, &carol] {
        let card = ContactCard::from_code(&node.code())?;
        let copy = bonghwa_core::crypto::seal(mallory.msg_secret(), &card.msg_key, &state)?;
        sealed.push((card.identity, copy));
    }
    let hlc = Hlc { ms: 1, counter: 0 };
    let keys = LogItem::sign(&signing, gid, hlc, LogBody::Keys(sealed));
    let mut forged = |text: &str| -> anyhow::Result<LogItem> {
        let id = MessageId::random().map_err(|e| anyhow::anyhow!("{e}"))?;
        let payload = GroupPayload::new(id, hlc, GroupBody::Text(text.into()));
        let envelope = GroupEnvelope::seal(&mut key, &signing, &gid, &payload)?;
        Ok(LogItem::sign(
            &signing,
            gid,
            hlc,
            LogBody::Message(envelope),
        ))
    };
    // A non-member's message, and one that claims to be bob's (mallory's signature).
    let outsider = forged("forged: from a non-member")?;
    let bob_key = ContactCard::from_code(&bob.code())?.identity;
    let mut impostor = forged("forged: claims to be bob")?;
    impostor.author = bob_key;

    let runtime = tokio::runtime::Runtime::new()?;
    let refused = runtime.block_on(async {
        let attacker =
            GossipAttacker::join(mallory.libp2p_keypair(), &alice.addr(), &topic).await?;
        attacker.publish(&topic, keys.encode()).await?;
        attacker.publish(&topic, outsider.encode()).await?;
        attacker.publish(&topic, impostor.encode()).await?;
        // The same through history repair.
        let mut pusher = Attacker::speaking(mallory.libp2p_keypair(), "/bonghwa/sync/1")?;
        let alice_id = pusher.connect(&alice.addr()).await?;
        let push = SyncRequest::Push {
            group_id: gid,
            envelopes: vec![keys.encode(), outsider.encode(), impostor.encode()],
        };
        let raw = pusher
            .send(alice_id, frame(&push.encode()))
            .await?
            .map_err(|e| anyhow::anyhow!("no answer to the push: {e}"))?;
        anyhow::Ok((SyncResponse::decode(&raw[4..])?, attacker))
    })?;
    let (answer, _attacker) = refused;
    assert!(
        matches!(&answer, SyncResponse::Refused(why) if why.contains("not a member")),
        "{answer:?}"
    );

    bob.call("send", json!({"to": group, "text": "after the forgeries"}))?;
    for node in [&mut alice, &mut carol] {
        received(node, &group, "after the forgeries")?;
    }
    for node in [&mut alice, &mut bob, &mut carol] {
        let seen = texts(node, &group)?;
        assert_eq!(
            seen,
            vec!["real".to_owned(), "after the forgeries".to_owned()],
            "{}",
            node.name
        );
    }
    Ok(())
}
