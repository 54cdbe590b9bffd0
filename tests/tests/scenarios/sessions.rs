//! Sessions (version-2 envelopes, a Double Ratchet inside sealed sender) as an attacker
//! meets them: a stolen identity key or data dir, captured envelopes, forged starts,
//! copies through several relays, kill -9 in the middle of bursts, and two people who
//! start a session with each other at the same time.
//!
//! The nodes write a key log (`BONGHWA_KEY_LOG`): every envelope they seal (what a
//! wiretapper or a relay captures) and, for every envelope they open, the fingerprint of
//! the message key, the outer ephemeral key and the envelope's digest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bonghwa_core::crypto::{self, ratchet};
use bonghwa_core::identity::{ContactCard, Identity};
use bonghwa_core::model::{Hlc, MessageId};
use bonghwa_core::node::DataDirReader;
use bonghwa_core::wire::session::{SessionEnvelope, SessionPlaintext, SessionStart};
use bonghwa_core::wire::{self, Ack, Body, DmPayload, Reject};
use bonghwa_tests::hostile::Attacker;
use bonghwa_tests::process::{Launch, RpcProcess};
use bonghwa_tests::relay::RelayProcess;
use libp2p::identity::Keypair;
use serde_json::{Value, json};

/// A launch whose node writes its key log to `log`, with extra flags.
fn logged(log: &Path, args: &[String]) -> Launch {
    Launch {
        args: args.to_vec(),
        env: vec![("BONGHWA_KEY_LOG".into(), log.display().to_string())],
        ..Launch::default()
    }
}

/// What one or more key logs hold.
#[derive(Default)]
struct KeyLog {
    /// Every envelope sealed, in order.
    sealed: Vec<Vec<u8>>,
    /// The message key fingerprint of each, in the same order.
    sealed_keys: Vec<String>,
    /// `(key fingerprint, outer ephemeral key, envelope digest)` per envelope opened.
    opened: Vec<(String, String, String)>,
}

fn read_logs(paths: &[&Path]) -> anyhow::Result<KeyLog> {
    let mut log = KeyLog::default();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["sealed", key, _, hex] => {
                    log.sealed_keys.push((*key).into());
                    log.sealed
                        .push(data_encoding::HEXLOWER.decode(hex.as_bytes())?);
                }
                ["opened", key, outer, digest] => {
                    log.opened
                        .push(((*key).into(), (*outer).into(), (*digest).into()));
                }
                _ => anyhow::bail!("unexpected key log line {line:?}"),
            }
        }
    }
    Ok(log)
}

/// Waits until the key log at `path` holds at least `count` lines starting with `prefix`
/// (the node appends as it seals and opens; this is waiting on that event).
fn wait_log(path: &Path, prefix: &str, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + bonghwa_tests::WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let seen = text.lines().filter(|l| l.starts_with(prefix)).count();
        if seen >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: {seen} of {count} {prefix:?} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count_lines(path: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

fn texts(history: &Value) -> Vec<String> {
    history
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The whole history of a chat, page by page (a page holds at most 1,000).
fn full_history(node: &mut RpcProcess, chat: &str) -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = node.call(
            "messages",
            json!({"chat": chat, "limit": 1000, "before": before}),
        )?;
        let messages = page.as_array().cloned().unwrap_or_default();
        let mut texts: Vec<String> = texts(&page);
        texts.append(&mut all);
        all = texts;
        if messages.len() < 1000 {
            return Ok(all);
        }
        before = messages[0]["id"].as_str().map(str::to_owned);
    }
}

fn befriend(alice: &mut RpcProcess, bob: &mut RpcProcess) -> anyhow::Result<()> {
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    Ok(())
}

#[test]
fn a_stolen_identity_key_opens_nothing_that_was_sent_before() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relay = RelayProcess::spawn(&bin, &tmp.path().join("relay"), &[])?;
    let args = vec!["--bootstrap".to_owned(), relay.addr()];
    let (alice_log, bob_log) = (tmp.path().join("alice.keys"), tmp.path().join("bob.keys"));
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &logged(&alice_log, &args))?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &logged(&bob_log, &args))?;
    befriend(&mut alice, &mut bob)?;
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());

    // Ten directly, while Bob is online.
    let mut expected = Vec::new();
    for i in 0..10 {
        let text = format!("direct secret {i}");
        alice.send_and_wait(&mut bob, &text)?;
        expected.push(text);
    }
    // Ten through the relay, while Bob is offline.
    bob.shutdown()?;
    alice.wait_event("bob gone", |p| {
        p["kind"] == "peer_disconnected" && p["peer_id"] == bob_id.as_str()
    })?;
    for i in 0..10 {
        let text = format!("relayed secret {i}");
        alice.call("send", json!({"to": bob_id, "text": text}))?;
        expected.push(text);
    }
    alice.count_events("held by the relay", 10, |p| {
        p["kind"] == "message_status" && p["status"] == "sent"
    })?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &logged(&bob_log, &args))?;
    bob.count_events("mail from the relay", 10, |p| {
        p["kind"] == "message_received" && p["chat"] == alice_id.as_str()
    })?;
    assert_eq!(
        texts(&bob.call("messages", json!({"chat": alice_id, "limit": 100}))?),
        expected
    );
    alice.shutdown()?;
    bob.shutdown()?;
    drop(relay);

    // The attacker: Bob's identity.key, and every envelope either side sealed (all that
    // went over the wire or into the relay).
    let stolen = Identity::load_or_create(&bob_dir.join("identity.key"))?;
    let captured = read_logs(&[&alice_log, &bob_log])?;
    assert!(
        captured.sealed.len() >= 20,
        "every message went out in a session: {} envelopes logged",
        captured.sealed.len()
    );
    for envelope in &captured.sealed {
        assert_eq!(envelope[0], crypto::ENVELOPE_V2);
        assert!(crypto::open(stolen.msg_secret(), envelope).is_err());
        assert!(crypto::open_v2(stolen.msg_secret(), envelope).is_err());
        for text in &expected {
            assert!(
                !envelope.windows(text.len()).any(|w| w == text.as_bytes()),
                "plaintext in an envelope"
            );
        }
    }
    Ok(())
}

#[test]
fn a_copied_data_dir_reads_nothing_after_one_round_trip() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let (alice_log, bob_log) = (tmp.path().join("alice.keys"), tmp.path().join("bob.keys"));
    let bob_dir = tmp.path().join("bob");
    let mut alice = RpcProcess::spawn(
        &bin,
        "alice",
        &tmp.path().join("alice"),
        &logged(&alice_log, &[]),
    )?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &logged(&bob_log, &[]))?;
    befriend(&mut alice, &mut bob)?;
    alice.send_and_wait(&mut bob, "hello")?;
    bob.send_and_wait(&mut alice, "hi")?;
    // Each read message is answered by a receipt; wait until both sides opened them all
    // (Bob: hello and Alice's receipt of hi; Alice: hi and Bob's receipt of hello).
    wait_log(&bob_log, "opened", 2)?;
    wait_log(&alice_log, "opened", 2)?;

    // The attacker copies Bob's whole data dir at rest.
    bob.shutdown()?;
    let stolen_dir = tmp.path().join("stolen");
    crate::compat::copy_dir(&bob_dir, &stolen_dir)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &logged(&bob_log, &[]))?;
    alice.call("connect", json!({"addr": bob.addr()}))?;

    let sealed_before = count_lines(&alice_log, "sealed");
    alice.send_and_wait(&mut bob, "one")?;
    // The round trip: Bob's automatic receipt reaches Alice.
    wait_log(&alice_log, "opened", 3)?;
    let after: Vec<String> = (0..3)
        .map(|i| format!("after the round trip {i}"))
        .collect();
    for text in &after {
        alice.send_and_wait(&mut bob, text)?;
    }
    alice.shutdown()?;
    bob.shutdown()?;

    let captured = read_logs(&[&alice_log])?;
    let mut reader = DataDirReader::open(&stolen_dir, None)?;
    let read: Vec<Option<String>> = captured.sealed[sealed_before..]
        .iter()
        .map(|e| reader.read(e))
        .collect();
    // The copy keeps up until Bob answers from a key it does not hold...
    assert_eq!(
        read[0].as_deref(),
        Some("one"),
        "the copy is a working copy"
    );
    // ...and reads nothing Alice wrote after that.
    let opened_after: Vec<String> = read.iter().flatten().cloned().collect();
    for text in &after {
        assert!(
            !opened_after.contains(text),
            "the stolen copy read {text:?}: {opened_after:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_forged_with_the_recipients_keys_is_refused_and_never_shown() -> anyhow::Result<()>
{
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &Launch::default())?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &Launch::default())?;
    befriend(&mut alice, &mut bob)?;
    alice.send_and_wait(&mut bob, "the real alice")?;
    let alice_id = alice.peer_id();
    let alice_card = ContactCard::from_code(&alice.code())?;
    let (bob_card, bob_prekey) = ContactCard::from_code_with_prekey(&bob.code())?;
    let bob_prekey = bob_prekey.expect("Bob's code carries a prekey");

    // The thief holds a copy of Bob's data dir: his identity and prekey secrets.
    bob.shutdown()?;
    let stolen_dir = tmp.path().join("stolen");
    crate::compat::copy_dir(&bob_dir, &stolen_dir)?;
    let (bob_msg_secret, prekeys) = DataDirReader::open(&stolen_dir, None)?.stolen_secrets();
    let prekey_secret = prekeys
        .iter()
        .find(|(id, _)| *id == bob_prekey.id)
        .map(|(_, secret)| *secret)
        .expect("the stolen dir holds the prekey");
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &Launch::default())?;

    // (1) A session "from Alice" computed from Bob's secrets (X3DH allows it), with a
    // start signature the thief cannot make (it signs with a key of its own).
    let mut forged = ratchet::Session::forge_initiator(
        &alice_card.msg_key,
        &bob_msg_secret,
        &prekey_secret,
        bob_prekey.id,
        [[7; 32], [8; 32]],
    )?;
    let payload = DmPayload {
        version: wire::PAYLOAD_VERSION,
        id: MessageId::random().unwrap(),
        hlc: Hlc {
            ms: 1_700_000_000_000,
            counter: 0,
        },
        sender: alice_card.clone(),
        recipient: bob_card.identity,
        body: Body::Text("send me your bank password".into()),
    };
    let plaintext = SessionPlaintext {
        payload: payload.clone(),
        prekey: None,
    }
    .encode();
    let (message, _) = forged.encrypt(&plaintext, [9; 32])?;
    let thief = Identity::generate()?;
    let signed = SessionEnvelope::start_bytes(&bob_card.identity, &forged.id, &message);
    let start_forged = SessionEnvelope {
        sender: alice_card.identity,
        session: forged.id,
        start: Some(SessionStart {
            card: alice_card.clone(),
            signature: thief
                .sign(wire::session::SESSION_START_DOMAIN, &signed)
                .to_vec(),
        }),
        message: message.clone(),
    };
    let unsigned = SessionEnvelope {
        start: None,
        ..start_forged.clone()
    };
    let seal = |inner: &SessionEnvelope, random: u8| {
        crypto::seal_v2(&bob_prekey.key, &inner.encode(), [random; 32]).unwrap()
    };
    // (2) A version-1 envelope "from Alice": Noise X lets a holder of Bob's key make one
    // (key-compromise impersonation); the test makes it with Alice's key, which gives the
    // same bytes an impersonator could.
    let alice_key = Identity::load_or_create(&alice_dir.join("identity.key"))?;
    let downgrade = crypto::seal(
        alice_key.msg_secret(),
        &bob_card.msg_key,
        &DmPayload {
            id: MessageId::random().unwrap(),
            ..payload.clone()
        }
        .encode(),
    )?;
    let mut thief = Attacker::new()?;
    let bob_peer = thief.connect(&bob.addr()).await?;
    let acks = crate::hostile::verdicts(
        &mut thief,
        bob_peer,
        vec![seal(&start_forged, 1), seal(&unsigned, 2), downgrade],
    )
    .await;
    assert_eq!(
        acks,
        vec![
            Ack::Rejected(Reject::Forged),
            Ack::Rejected(Reject::Undecryptable),
            Ack::Rejected(Reject::Forged),
        ]
    );
    // The real Alice still gets through; nothing forged is in Bob's history.
    alice.call("connect", json!({"addr": bob.addr()}))?;
    alice.send_and_wait(&mut bob, "still me")?;
    let history = texts(&bob.call("messages", json!({"chat": alice_id}))?);
    assert_eq!(history, vec!["the real alice", "still me"]);
    alice.shutdown()?;
    bob.shutdown()?;
    Ok(())
}

/// Whether `relay` holds no mail for the owner of `keypair` (asked as that owner, which is
/// the only one the relay answers about its mail).
async fn mailbox_empty(relay: &RelayProcess, keypair: Keypair) -> anyhow::Result<bool> {
    use bonghwa_core::wire::{MailboxRequest, MailboxResponse};
    let (mut peer, relay_id) = crate::relay::client(keypair, relay).await?;
    let page =
        crate::relay::ask(&mut peer, relay_id, &MailboxRequest::Fetch { after: None }).await?;
    Ok(matches!(page, MailboxResponse::Page { mail, .. } if mail.is_empty()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_through_the_direct_link_and_three_relays_is_shown_once_and_delivered()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relays: Vec<RelayProcess> = (0..3)
        .map(|i| RelayProcess::spawn(&bin, &tmp.path().join(format!("relay{i}")), &[]))
        .collect::<anyhow::Result<_>>()?;
    let mut args = Vec::new();
    for relay in &relays {
        args.push("--bootstrap".to_owned());
        args.push(relay.addr());
    }
    let (alice_log, bob_log) = (tmp.path().join("alice.keys"), tmp.path().join("bob.keys"));
    let bob_dir = tmp.path().join("bob");
    let mut alice = RpcProcess::spawn(
        &bin,
        "alice",
        &tmp.path().join("alice"),
        &logged(&alice_log, &args),
    )?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &logged(&bob_log, &args))?;
    befriend(&mut alice, &mut bob)?;
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());
    alice.send_and_wait(&mut bob, "first")?;
    bob.shutdown()?;
    alice.wait_event("bob gone", |p| {
        p["kind"] == "peer_disconnected" && p["peer_id"] == bob_id.as_str()
    })?;
    let sent = alice.call("send", json!({"to": bob_id, "text": "everywhere"}))?;
    let id = sent["id"].as_str().unwrap_or_default().to_owned();
    alice.wait_status(&bob_id, &id, "sent")?;
    // Held at all three relays.
    let bob_key = Identity::load_or_create(&bob_dir.join("identity.key"))?.libp2p_keypair();
    let deadline = Instant::now() + bonghwa_tests::WAIT;
    for relay in &relays {
        while mailbox_empty(relay, bob_key.clone()).await? {
            anyhow::ensure!(Instant::now() < deadline, "a relay never got the deposit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Bob comes back: three relays hand him their copies and Alice retries directly.
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &logged(&bob_log, &args))?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    bob.wait_event("the message", |p| {
        p["kind"] == "message_received" && p["message"]["text"] == "everywhere"
    })?;
    alice.wait_status(&bob_id, &id, "delivered")?;
    // Bob fetched and acknowledged every copy (acknowledged only once handled).
    for relay in &relays {
        while !mailbox_empty(relay, bob_key.clone()).await? {
            anyhow::ensure!(Instant::now() < deadline, "a copy was never taken");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let history = texts(&bob.call("messages", json!({"chat": alice_id}))?);
    assert_eq!(history, vec!["first", "everywhere"]);
    // The same bytes went everywhere; Bob opened them once and never used a key twice.
    let keys = read_logs(&[&alice_log, &bob_log])?;
    let digests: Vec<&String> = keys.opened.iter().map(|(_, _, d)| d).collect();
    let distinct: BTreeSet<&&String> = digests.iter().collect();
    assert_eq!(distinct.len(), digests.len(), "an envelope opened twice");
    assert_no_key_reused(&keys);
    let statuses = alice.call("messages", json!({"chat": bob_id}))?;
    assert!(
        statuses
            .as_array()
            .is_some_and(|ms| ms.iter().all(|m| m["status"] == "delivered")),
        "{statuses}"
    );
    alice.shutdown()?;
    bob.shutdown()?;
    Ok(())
}

/// Every message key and every outer key opened exactly one envelope.
fn assert_no_key_reused(log: &KeyLog) {
    let mut by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut by_outer: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, outer, digest) in &log.opened {
        by_key.entry(key).or_default().insert(digest);
        by_outer.entry(outer).or_default().insert(digest);
    }
    for (key, digests) in &by_key {
        assert_eq!(digests.len(), 1, "message key {key} opened {digests:?}");
    }
    for (outer, digests) in &by_outer {
        assert_eq!(digests.len(), 1, "outer key {outer} opened {digests:?}");
    }
    let sealed_outer: BTreeSet<&[u8]> = log.sealed.iter().map(|e| &e[1..33]).collect();
    assert_eq!(
        sealed_outer.len(),
        log.sealed.len(),
        "an outer key sealed twice"
    );
}

/// Pipelines `count` sends; returns the ids the node acknowledged before `stop` of them
/// (all if `stop` is `None`).
fn burst(
    alice: &mut RpcProcess,
    to: &str,
    tag: &str,
    count: usize,
    stop: Option<usize>,
) -> anyhow::Result<Vec<(String, String)>> {
    for i in 0..count {
        let request = json!({"jsonrpc": "2.0", "id": format!("{tag}{i}"), "method": "send",
            "params": {"to": to, "text": format!("{tag} {i}")}});
        alice.write_raw(&request.to_string())?;
    }
    // Answers may come in any order (the node serves many requests at once).
    let wanted = stop.unwrap_or(count);
    let mut answers: BTreeMap<usize, String> = BTreeMap::new();
    while (0..wanted).any(|i| !answers.contains_key(&i)) {
        let reply = alice
            .next_reply()
            .map_err(|e| anyhow::anyhow!("{} of {wanted} answers: {e:#}", answers.len()))?;
        let Some(i) = reply["id"]
            .as_str()
            .and_then(|id| id.strip_prefix(tag))
            .and_then(|i| i.parse().ok())
        else {
            continue;
        };
        let id = reply["result"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        answers.insert(i, id);
    }
    let acked = (0..wanted)
        .map(|i| (answers[&i].clone(), format!("{tag} {i}")))
        .collect();
    Ok(acked)
}

#[test]
fn kill_9_in_bursts_loses_nothing_doubles_nothing_and_never_reuses_a_key() -> anyhow::Result<()> {
    const BURST: usize = 1_000;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let log = tmp.path().join("keys");
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let launch = logged(&log, &[]);
    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    befriend(&mut alice, &mut bob)?;
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());
    alice.send_and_wait(&mut bob, "start")?;

    // The sender dies a third of the way into a burst.
    let acked = burst(&mut alice, &bob_id, "a", BURST, Some(BURST / 3))?;
    alice.kill9()?;
    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    for (id, _) in &acked {
        alice.wait_status(&bob_id, id, "delivered")?;
    }

    // The receiver dies a third of the way into the next one.
    let second = burst(&mut alice, &bob_id, "b", BURST, None)?;
    bob.count_events("a third of the second burst", BURST / 3, |p| {
        p["kind"] == "message_received"
            && p["message"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("b "))
    })?;
    bob.kill9()?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    for (id, _) in &second {
        alice.wait_status(&bob_id, id, "delivered")?;
    }

    let history = full_history(&mut bob, &alice_id)?;
    let held: BTreeSet<&String> = history.iter().collect();
    assert_eq!(held.len(), history.len(), "a message shown twice");
    for (_, text) in acked.iter().chain(&second) {
        assert!(
            held.contains(text),
            "{text:?} acknowledged to Alice and lost"
        );
    }
    alice.shutdown()?;
    bob.shutdown()?;
    let keys = read_logs(&[&log])?;
    assert!(keys.opened.len() > BURST, "{} opened", keys.opened.len());
    assert_no_key_reused(&keys);
    Ok(())
}

#[test]
fn two_people_who_start_a_session_at_once_both_read_everything() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let mut alice =
        RpcProcess::spawn(&bin, "alice", &tmp.path().join("alice"), &Launch::default())?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &Launch::default())?;
    // Codes exchanged, but no connection yet: each starts a session on its own.
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());
    for i in 0..3 {
        alice.call(
            "send",
            json!({"to": bob_id, "text": format!("from alice {i}")}),
        )?;
        bob.call(
            "send",
            json!({"to": alice_id, "text": format!("from bob {i}")}),
        )?;
    }
    alice.call("connect", json!({"addr": bob.addr()}))?;
    bob.count_events("alice's", 3, |p| p["kind"] == "message_received")?;
    alice.count_events("bob's", 3, |p| p["kind"] == "message_received")?;
    // And they go on talking both ways in whichever session each settles on.
    for i in 0..5 {
        alice.send_and_wait(&mut bob, &format!("later alice {i}"))?;
        bob.send_and_wait(&mut alice, &format!("later bob {i}"))?;
    }
    let at_bob = texts(&bob.call("messages", json!({"chat": alice_id, "limit": 100}))?);
    for i in 0..3 {
        assert!(at_bob.contains(&format!("from alice {i}")), "{at_bob:?}");
        assert!(at_bob.contains(&format!("from bob {i}")), "{at_bob:?}");
    }
    assert_eq!(at_bob.len(), 16);
    alice.shutdown()?;
    bob.shutdown()?;
    Ok(())
}

/// Hashes of every file under `dir` (to show that a refused start wrote nothing).
fn snapshot(dir: &Path) -> anyhow::Result<BTreeMap<std::path::PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(snapshot(&entry.path())?);
        } else {
            out.insert(entry.path(), std::fs::read(entry.path())?);
        }
    }
    Ok(out)
}

#[test]
fn a_passphrase_protects_keys_and_sessions_and_a_wrong_one_changes_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let secret = tmp.path().join("passphrase");
    std::fs::write(&secret, "봉화 on the hill\n")?;
    let protected = Launch {
        args: vec!["--passphrase-file".into(), secret.display().to_string()],
        ..Launch::default()
    };
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &Launch::default())?;
    assert_eq!(alice.identity["keys_protected"], false);
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &protected)?;
    assert_eq!(bob.identity["keys_protected"], true);
    befriend(&mut alice, &mut bob)?;
    alice.send_and_wait(&mut bob, "before")?;
    let bob_id = bob.peer_id();
    bob.shutdown()?;

    // The key file and the sessions do not open without the passphrase.
    assert!(DataDirReader::open(&bob_dir, None).is_err());
    let before = snapshot(&bob_dir)?;
    for (env, expected) in [
        (None, "protected by a passphrase"),
        (Some("wrong"), "wrong passphrase"),
    ] {
        let mut command = std::process::Command::new(&bin);
        command
            .arg("--data-dir")
            .arg(&bob_dir)
            .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .arg("rpc")
            .env_remove("BONGHWA_PASSPHRASE")
            .stdin(std::process::Stdio::null());
        if let Some(value) = env {
            command.env("BONGHWA_PASSPHRASE", value);
        }
        let output = command.output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{stderr}");
    }
    assert_eq!(
        snapshot(&bob_dir)?,
        before,
        "a refused start changed the data dir"
    );

    // With it, everything is there and the session goes on.
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &protected)?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    alice.send_and_wait(&mut bob, "after")?;
    bob.send_and_wait(&mut alice, "reply")?;
    let history = texts(&bob.call("messages", json!({"chat": alice.peer_id()}))?);
    assert_eq!(history, vec!["before", "after", "reply"]);
    assert_ne!(alice.peer_id(), bob_id);
    alice.shutdown()?;
    bob.shutdown()?;
    Ok(())
}
