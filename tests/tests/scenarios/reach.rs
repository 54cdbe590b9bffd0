//! Reaching peers beyond the LAN on loopback: relays hold reservations for their clients
//! and take them back when they return, and a Kademlia DHT served by relays lets a client
//! that knows only a peer id find that peer and reach it.

use bonghwa_tests::process::{Launch, RpcProcess};
use bonghwa_tests::relay::RelayProcess;
use serde_json::{Value, json};

fn via(relay: &RelayProcess) -> Launch {
    Launch {
        args: vec!["--bootstrap".into(), relay.addr()],
        ..Launch::default()
    }
}

fn published(node: &mut RpcProcess) -> anyhow::Result<Value> {
    node.wait_event("its address record in the DHT", |p| {
        p["kind"] == "addresses_published"
    })
}

/// Three relays that know each other, four clients each bootstrapped to one relay.
/// A client finds another (bootstrapped elsewhere) by peer id alone and connects.
#[test]
fn a_client_that_knows_only_a_peer_id_finds_and_reaches_that_peer_through_the_dht()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let r1 = RelayProcess::spawn(&bin, &tmp.path().join("r1"), &[])?;
    let r2 = RelayProcess::spawn(&bin, &tmp.path().join("r2"), &["--bootstrap", &r1.addr()])?;
    let r3 = RelayProcess::spawn(
        &bin,
        &tmp.path().join("r3"),
        &["--bootstrap", &r1.addr(), "--bootstrap", &r2.addr()],
    )?;
    let mut c1 = RpcProcess::spawn(&bin, "c1", &tmp.path().join("c1"), &via(&r1))?;
    let mut c2 = RpcProcess::spawn(&bin, "c2", &tmp.path().join("c2"), &via(&r2))?;
    let mut c3 = RpcProcess::spawn(&bin, "c3", &tmp.path().join("c3"), &via(&r3))?;
    let mut c4 = RpcProcess::spawn(&bin, "c4", &tmp.path().join("c4"), &via(&r2))?;
    // On loopback nothing stands in the way: AutoNAT (the relay dialling back) says public.
    let verdict = c1.wait_event("reachability", |p| {
        p["kind"] == "reachability" && p["status"] != "unknown"
    })?;
    assert_eq!(verdict["status"], "public", "{verdict}");
    let c1_record = published(&mut c1)?;
    published(&mut c3)?;
    published(&mut c2)?;
    published(&mut c4)?;

    // c3 (only ever told about r3) looks c1 (only told about r1) up by peer id.
    let found = c3.call("find_peer", json!({"peer_id": c1.peer_id()}))?;
    assert_eq!(found["peer_id"], c1.peer_id().as_str());
    let c1_listen = c1.addr().replace(&format!("/p2p/{}", c1.peer_id()), "");
    assert!(
        found["addrs"].to_string().contains(&c1_listen),
        "c1 listens on {c1_listen}; the DHT said {found}, c1 published {c1_record}"
    );
    // (c3 may already hold a connection to c1: once AutoNAT finds c1 public, c1 serves the
    // DHT too and c3's own queries can reach it. What matters is that the record found it.)
    // And reaches it with nothing but the peer id.
    let connected = c3.call("connect", json!({"addr": format!("/p2p/{}", c1.peer_id())}))?;
    assert_eq!(connected["peer_id"], c1.peer_id().as_str());
    let peers = c3.call("peers", json!({}))?;
    assert!(peers.to_string().contains(&c1.peer_id()), "{peers}");

    // Same from the other side of the DHT: c2 finds c4's record and reaches it.
    let connected = c2.call("connect", json!({"addr": format!("/p2p/{}", c4.peer_id())}))?;
    assert_eq!(connected["peer_id"], c4.peer_id().as_str());

    // A peer id nobody published is a clear error, not a hang.
    let stranger = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let missing = c4.call_raw("find_peer", json!({"peer_id": stranger}))?;
    let message = missing["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no address record"), "{missing}");
    Ok(())
}

/// A relay that goes away and comes back: the client sees its reservation lost, takes it
/// again when the relay returns, and messages deposited meanwhile are fetched.
#[test]
fn a_client_reserves_again_when_its_relay_comes_back() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let relay_dir = tmp.path().join("relay");
    let relay = RelayProcess::spawn(&bin, &relay_dir, &[])?;
    let relay_addr = relay.addr();
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &via(&relay))?;
    let reserved = |p: &Value| p["kind"] == "relay_reservation" && p["reserved"] == true;
    bob.wait_event("reservation", reserved)?;

    assert_eq!(relay.terminate()?.code(), Some(0));
    bob.wait_event("reservation lost", |p| {
        p["kind"] == "relay_reservation" && p["reserved"] == false
    })?;
    let relays = bob.call("relays", json!({}))?;
    assert_eq!(relays[0]["reserved"], false, "{relays}");

    // Same data dir: same identity and, remembered, the same port.
    let relay = RelayProcess::spawn(&bin, &relay_dir, &[])?;
    assert_eq!(relay.addr(), relay_addr, "the relay came back where it was");
    bob.wait_event("reservation again", reserved)?;
    let relays = bob.call("relays", json!({}))?;
    assert_eq!(relays[0]["reserved"], true, "{relays}");
    assert_eq!(relays[0]["connected"], true, "{relays}");
    Ok(())
}
