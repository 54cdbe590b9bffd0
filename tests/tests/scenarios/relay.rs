//! `bonghwa relay` as an operator runs it, and its mailbox as clients use it: mail held
//! durably (through kill -9), handed only to its recipient, in order, and quotas that
//! refuse clearly while the relay keeps serving. The clients here are raw libp2p peers
//! speaking `/bonghwa/mailbox/1` with chosen identities.

use bonghwa_core::crypto::MAX_ENVELOPE;
use bonghwa_core::wire::{MAX_MAILBOX_REQUEST_BYTES, MailboxRequest, MailboxResponse};
use bonghwa_tests::hostile::{Attacker, frame};
use bonghwa_tests::process::{Launch, RpcProcess, identity_of};
use bonghwa_tests::relay::RelayProcess;
use libp2p::identity::Keypair;
use serde_json::json;

use crate::group::{alternate, received, texts, three_in_a_group_with};

const MAILBOX: &str = "/bonghwa/mailbox/1";

/// Sends one mailbox request and decodes the relay's answer.
pub(crate) async fn ask(
    peer: &mut Attacker,
    relay: libp2p::PeerId,
    request: &MailboxRequest,
) -> anyhow::Result<MailboxResponse> {
    ask_raw(peer, relay, frame(&request.encode())).await
}

async fn ask_raw(
    peer: &mut Attacker,
    relay: libp2p::PeerId,
    bytes: Vec<u8>,
) -> anyhow::Result<MailboxResponse> {
    let raw = peer
        .send(relay, bytes)
        .await?
        .map_err(|e| anyhow::anyhow!("no answer: {e}"))?;
    anyhow::ensure!(raw.len() >= 4, "short answer {raw:?}");
    Ok(MailboxResponse::decode(&raw[4..])?)
}

fn deposit(recipient: &libp2p::PeerId, envelope: Vec<u8>) -> MailboxRequest {
    MailboxRequest::Deposit {
        recipient: recipient.to_string(),
        envelope,
    }
}

/// A client with a fresh identity, connected to the relay.
pub(crate) async fn client(
    keypair: Keypair,
    relay: &RelayProcess,
) -> anyhow::Result<(Attacker, libp2p::PeerId)> {
    let mut peer = Attacker::speaking(keypair, MAILBOX)?;
    let relay_id = peer.connect(&relay.addr()).await?;
    Ok((peer, relay_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_survives_kill_9_and_goes_only_to_its_recipient_in_order() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let dir = tmp.path().join("relay");
    let relay = RelayProcess::spawn(&bin, &dir, &[])?;
    assert!(relay.peer_id().starts_with("12D3KooW"), "{}", relay.info);

    let bob_key = Keypair::generate_ed25519();
    let bob_id = bob_key.public().to_peer_id();
    let (mut depositor, relay_id) = client(Keypair::generate_ed25519(), &relay).await?;
    let envelopes: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i + 1; 1_000]).collect();
    for envelope in &envelopes {
        let answer = ask(
            &mut depositor,
            relay_id,
            &deposit(&bob_id, envelope.clone()),
        )
        .await?;
        assert_eq!(answer, MailboxResponse::Stored);
    }
    // A retried deposit is answered `Stored` and not held twice.
    let again = ask(
        &mut depositor,
        relay_id,
        &deposit(&bob_id, envelopes[0].clone()),
    )
    .await?;
    assert_eq!(again, MailboxResponse::Stored);
    drop(depositor);

    // Everything it acknowledged survives kill -9.
    relay.kill9()?;
    let relay = RelayProcess::spawn(&bin, &dir, &[])?;

    let (mut eve, relay_id) = client(Keypair::generate_ed25519(), &relay).await?;
    let eves = ask(&mut eve, relay_id, &MailboxRequest::Fetch { after: None }).await?;
    assert_eq!(
        eves,
        MailboxResponse::Page {
            mail: Vec::new(),
            more: false
        },
        "someone else's fetch gets none of Bob's mail"
    );
    // Eve's ack of Bob's seqs removes nothing: acks only touch the caller's own mail.
    ask(
        &mut eve,
        relay_id,
        &MailboxRequest::Ack {
            seqs: vec![0, 1, 2],
        },
    )
    .await?;

    let (mut bob, relay_id) = client(bob_key, &relay).await?;
    let page = ask(&mut bob, relay_id, &MailboxRequest::Fetch { after: None }).await?;
    let expected: Vec<(u64, Vec<u8>)> = envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64, e.clone()))
        .collect();
    assert_eq!(
        page,
        MailboxResponse::Page {
            mail: expected,
            more: false
        }
    );
    let acked = ask(
        &mut bob,
        relay_id,
        &MailboxRequest::Ack {
            seqs: vec![0, 1, 2],
        },
    )
    .await?;
    assert_eq!(acked, MailboxResponse::Acked);
    let empty = ask(&mut bob, relay_id, &MailboxRequest::Fetch { after: None }).await?;
    assert_eq!(
        empty,
        MailboxResponse::Page {
            mail: Vec::new(),
            more: false
        }
    );

    let status = relay.terminate()?;
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_oversized_deposits_are_refused_and_the_relay_keeps_serving()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    // The quota comes from a config file, as a service manager would set it.
    let config = tmp.path().join("relay.toml");
    std::fs::write(&config, "mail_mb_per_recipient = 1\nmail_days = 7\n")?;
    let config = config.display().to_string();
    let relay = RelayProcess::spawn(&bin, &tmp.path().join("relay"), &["--config", &config])?;
    let bob_id = Keypair::generate_ed25519().public().to_peer_id();
    let carol_id = Keypair::generate_ed25519().public().to_peer_id();
    let (mut flooder, relay_id) = client(Keypair::generate_ed25519(), &relay).await?;

    // 60,000-byte envelopes: 17 fit in 1 MiB, the 18th does not.
    let mut stored = 0;
    let mut refusal = None;
    for i in 0..40u32 {
        let mut envelope = vec![7u8; 60_000];
        envelope[..4].copy_from_slice(&i.to_be_bytes());
        match ask(&mut flooder, relay_id, &deposit(&bob_id, envelope)).await? {
            MailboxResponse::Stored => stored += 1,
            MailboxResponse::Refused(why) => {
                refusal = Some(why);
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(stored, 17);
    let refusal = refusal.expect("the 18th deposit must be refused");
    assert!(refusal.contains("mailbox is full"), "{refusal}");

    // An envelope over the envelope limit, and a frame over the frame limit.
    let too_big = ask(
        &mut flooder,
        relay_id,
        &deposit(&carol_id, vec![1; MAX_ENVELOPE + 1]),
    )
    .await?;
    assert!(
        matches!(&too_big, MailboxResponse::Refused(why) if why.contains("too large")),
        "{too_big:?}"
    );
    let mut huge = ((MAX_MAILBOX_REQUEST_BYTES + 1) as u32)
        .to_be_bytes()
        .to_vec();
    huge.extend(vec![0; 16]);
    let frame_refused = ask_raw(&mut flooder, relay_id, huge).await?;
    assert!(
        matches!(&frame_refused, MailboxResponse::Refused(why) if why.contains("exceeds")),
        "{frame_refused:?}"
    );
    let garbage = ask_raw(&mut flooder, relay_id, frame(&[9, 9, 9])).await?;
    assert!(
        matches!(garbage, MailboxResponse::Refused(_)),
        "{garbage:?}"
    );

    // Other recipients are still served.
    let (mut honest, relay_id) = client(Keypair::generate_ed25519(), &relay).await?;
    let ok = ask(&mut honest, relay_id, &deposit(&carol_id, vec![3; 500])).await?;
    assert_eq!(ok, MailboxResponse::Stored);
    Ok(())
}

/// The offline-delivery scenario: relay R, Alice and Bob bootstrapped to it. Bob goes
/// offline; Alice sends and exits; Bob comes back while Alice is away and gets everything
/// from R, in order, each once; when Alice returns she sees every message delivered.
#[test]
fn offline_recipient_gets_mail_from_the_relay_and_sender_later_sees_delivered() -> anyhow::Result<()>
{
    const COUNT: usize = 100;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relay = RelayProcess::spawn(&bin, &tmp.path().join("relay"), &[])?;
    let launch = Launch {
        args: vec!["--bootstrap".into(), relay.addr()],
        ..Launch::default()
    };
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());

    bob.shutdown()?;
    alice.wait_event("bob gone", |p| {
        p["kind"] == "peer_disconnected" && p["peer_id"] == bob_id.as_str()
    })?;
    for i in 0..COUNT {
        let request = json!({"jsonrpc": "2.0", "id": format!("s{i}"), "method": "send",
            "params": {"to": bob_id, "text": format!("while you were away {i}")}});
        alice.write_raw(&request.to_string())?;
    }
    // `sent`: the relay holds it.
    alice.count_events("held by the relay", COUNT, |p| {
        p["kind"] == "message_status" && p["status"] == "sent"
    })?;
    alice.shutdown()?;

    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    bob.count_events("mail from the relay", COUNT, |p| {
        p["kind"] == "message_received" && p["chat"] == alice_id.as_str()
    })?;
    let expected: Vec<String> = (0..COUNT)
        .map(|i| format!("while you were away {i}"))
        .collect();
    let texts = |history: serde_json::Value| -> Vec<String> {
        history
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m["text"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let history = bob.call("messages", json!({"chat": alice_id, "limit": 1000}))?;
    assert_eq!(texts(history), expected, "in order, each once");
    bob.wait_event("a reservation at the relay", |p| {
        p["kind"] == "relay_reservation" && p["reserved"] == true
    })?;
    let relays = bob.call("relays", json!({}))?;
    assert_eq!(
        relays,
        json!([{"peer_id": relay.peer_id(), "addr": relay.addr(), "connected": true,
                "reserved": true, "mailbox": "ok"}])
    );

    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    alice.count_events("delivered", COUNT, |p| {
        p["kind"] == "message_status" && p["status"] == "delivered"
    })?;
    let history = alice.call("messages", json!({"chat": bob_id, "limit": 1000}))?;
    let statuses: Vec<&str> = history
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, vec!["delivered"; COUNT]);
    let history = bob.call("messages", json!({"chat": alice_id, "limit": 1000}))?;
    assert_eq!(
        texts(history),
        expected,
        "nothing shown twice after the direct retry"
    );
    Ok(())
}

/// Alice and Bob are never online at the same time: her messages wait in Bob's mailbox,
/// his receipt waits in hers, and she sees `delivered` without ever reaching him.
#[test]
fn receipts_travel_through_mailboxes_when_the_two_are_never_online_together() -> anyhow::Result<()>
{
    const COUNT: usize = 5;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relay = RelayProcess::spawn(&bin, &tmp.path().join("relay"), &[])?;
    let relay_addr = relay.addr();
    let via_relay = ["--bootstrap", relay_addr.as_str()];
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    // Codes exchanged in person (or over a phone call): neither node is online for it.
    let bob_card = identity_of(&bin, &bob_dir, &via_relay)?;
    let alice_card = identity_of(&bin, &alice_dir, &via_relay)?;
    let bob_id = bob_card["peer_id"].as_str().unwrap_or_default().to_owned();
    let alice_id = alice_card["peer_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let launch = Launch {
        args: vec!["--bootstrap".into(), relay_addr.clone()],
        ..Launch::default()
    };

    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    alice.call("contact_add", json!({"code": bob_card["contact_code"]}))?;
    for i in 0..COUNT {
        alice.call(
            "send",
            json!({"to": bob_id, "text": format!("left for you {i}")}),
        )?;
    }
    alice.count_events("held by bob's mailbox", COUNT, |p| {
        p["kind"] == "message_status" && p["status"] == "sent"
    })?;
    assert_eq!(alice.shutdown()?.code(), Some(0));

    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    bob.call("contact_add", json!({"code": alice_card["contact_code"]}))?;
    bob.count_events("mail from the relay", COUNT, |p| {
        p["kind"] == "message_received" && p["chat"] == alice_id.as_str()
    })?;
    // Shutdown waits for the receipt to be in alice's mailbox.
    assert_eq!(bob.shutdown()?.code(), Some(0));

    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    alice.count_events("delivered by receipt", COUNT, |p| {
        p["kind"] == "message_status" && p["status"] == "delivered"
    })?;
    let history = alice.call("messages", json!({"chat": bob_id}))?;
    let statuses: Vec<&str> = history
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, vec!["delivered"; COUNT]);
    let peers = alice.call("peers", json!({}))?;
    assert!(
        !peers.to_string().contains(&bob_id),
        "bob was never online with alice: {peers}"
    );
    Ok(())
}

/// A flood of deposits from ever-new identities (so per-sender quotas do not stop it) hits
/// the relay's total budget: it refuses clearly, keeps its memory bounded, and still answers
/// a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_flood_stops_at_the_total_budget_with_memory_bounded() -> anyhow::Result<()> {
    const MAX_DEPOSITS: u32 = 400;
    /// The relay's memory ceiling asserted here: far above a 2 MiB mail budget plus the
    /// process's own baseline (about 15 MiB idle), far below an unbounded flood.
    const RSS_CEILING_KIB: u64 = 96 * 1024;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relay = RelayProcess::spawn(&bin, &tmp.path().join("relay"), &["--mail-mb-total", "2"])?;
    let mut stored = 0u32;
    let mut refusal = None;
    for i in 0..MAX_DEPOSITS {
        // A new sender and a new recipient every 10 deposits.
        let (mut flooder, relay_id) = client(Keypair::generate_ed25519(), &relay).await?;
        let victim = Keypair::generate_ed25519().public().to_peer_id();
        for j in 0..10u32 {
            let mut envelope = vec![0u8; 60_000];
            envelope[..4].copy_from_slice(&(i * 10 + j).to_be_bytes());
            match ask(&mut flooder, relay_id, &deposit(&victim, envelope)).await? {
                MailboxResponse::Stored => stored += 1,
                MailboxResponse::Refused(why) => refusal = Some(why),
                other => panic!("unexpected {other:?}"),
            }
        }
        if refusal.is_some() {
            break;
        }
    }
    // 2 MiB / 60,000 bytes: 34 envelopes fit.
    assert_eq!(stored, 34);
    let refusal = refusal.expect("the flood must be refused");
    assert!(refusal.contains("storage is full"), "{refusal}");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", relay.pid()))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    assert!(rss < RSS_CEILING_KIB, "relay RSS {rss} KiB after the flood");
    let (mut someone, relay_id) = client(Keypair::generate_ed25519(), &relay).await?;
    let page = ask(
        &mut someone,
        relay_id,
        &MailboxRequest::Fetch { after: None },
    )
    .await?;
    assert!(matches!(page, MailboxResponse::Page { .. }), "{page:?}");
    Ok(())
}

/// A relay joins a group's topic when one of its clients does, and carries its traffic
/// as ciphertext: a peer that reaches only the relay hears the group's items, sealed.
#[test]
fn a_relay_carries_group_traffic_it_cannot_read() -> anyhow::Result<()> {
    use bonghwa_core::crypto::group::{GroupId, topic_for};
    use bonghwa_core::wire::group::{LogBody, LogItem};
    use bonghwa_tests::gossip_attacker::GossipAttacker;

    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relay = RelayProcess::spawn(&bin, &tmp.path().join("relay"), &[])?;
    let launch = Launch {
        args: vec!["--bootstrap".into(), relay.addr()],
        ..Launch::default()
    };
    let mut alice = RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &launch)?;
    let created = alice.call("group_create", json!({"name": "notes", "members": []}))?;
    let group = created["group_id"].as_str().unwrap_or_default().to_owned();
    let gid = GroupId::from_hex(&group).ok_or_else(|| anyhow::anyhow!("bad group id"))?;
    let topic = topic_for(&gid);

    let runtime = tokio::runtime::Runtime::new()?;
    let mut listener = runtime.block_on(GossipAttacker::join(
        libp2p::identity::Keypair::generate_ed25519(),
        &relay.addr(),
        &topic,
    ))?;
    let secret = "the spare key is under the third pot";
    alice.call("send", json!({"to": group, "text": secret}))?;
    let heard = runtime.block_on(async {
        loop {
            let Some(bytes) = listener.next_message(bonghwa_tests::WAIT).await else {
                anyhow::bail!("the relay never carried the group's message");
            };
            if let Ok(item) = LogItem::decode(&bytes)
                && matches!(item.body, LogBody::Message(_))
            {
                return Ok((item, bytes));
            }
        }
    })?;
    let (item, bytes) = heard;
    assert_eq!(item.group_id, gid);
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the relay carried plaintext"
    );
    Ok(())
}

#[test]
fn a_member_back_when_everyone_else_is_offline_catches_up_from_the_relay() -> anyhow::Result<()> {
    const COUNT: usize = 20;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relay = RelayProcess::spawn(&bin, &tmp.path().join("relay"), &[])?;
    let launch = Launch {
        args: vec!["--bootstrap".into(), relay.addr()],
        ..Launch::default()
    };
    let (mut alice, mut bob, mut carol, group) =
        three_in_a_group_with(tmp.path(), "흩어진 가족", &launch)?;
    // Everyone's key is out.
    for (from, to) in [(0, [1, 2]), (1, [0, 2]), (2, [0, 1])] {
        let nodes = [&mut alice, &mut bob, &mut carol];
        let text = format!("hello from {}", nodes[from].name);
        nodes[from].call("send", json!({"to": group, "text": text}))?;
        for j in to {
            received(&mut *nodes[j], &group, &text)?;
        }
    }
    carol.shutdown()?;
    alternate(&mut alice, &mut bob, &group, COUNT)?;
    let expected = texts(&mut alice, &group)?;
    alice.shutdown()?;
    bob.shutdown()?;

    // Carol is back; alice and bob are not: only the relay has what she missed.
    let mut carol = RpcProcess::spawn(&bin, "carol", &tmp.path().join("carol"), &launch)?;
    carol.count_events("the missed messages from the relay", COUNT, |p| {
        p["kind"] == "message_received" && p["chat"] == group.as_str()
    })?;
    assert_eq!(texts(&mut carol, &group)?, expected, "all, once, in order");
    Ok(())
}
