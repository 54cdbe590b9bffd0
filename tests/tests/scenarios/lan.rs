//! Two hosts on one LAN (network namespaces joined by a veth pair), started with no
//! addresses given: they find each other by mDNS and chat.

use bonghwa_tests::netns::{self, Lan};
use bonghwa_tests::process::{Launch, RpcProcess};
use serde_json::{Value, json};

/// Waits for `peer_discovered` (sent once the peer's card is known), then reads `nearby`.
fn wait_nearby(node: &mut RpcProcess, peer: &str) -> anyhow::Result<Value> {
    node.wait_event("peer_discovered", |p| {
        p["kind"] == "peer_discovered" && p["peer_id"] == peer
    })?;
    let nearby = node.call("nearby", json!({}))?;
    nearby
        .as_array()
        .and_then(|list| list.iter().find(|p| p["peer_id"] == peer))
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} announced {peer} but nearby lacks it: {nearby}",
                node.name
            )
        })
}

#[test]
fn lan_peers_find_each_other_by_mdns_and_chat() -> anyhow::Result<()> {
    if !netns::available("lan_peers_find_each_other_by_mdns_and_chat") {
        return Ok(());
    }
    let lan = Lan::create()?;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let launch = |host: &str| Launch {
        netns: Some(host.to_owned()),
        mdns: true,
        listen: Some(String::new()),
        ..Launch::default()
    };
    let mut alice = RpcProcess::spawn(
        &bin,
        "Alice 앨리스",
        &tmp.path().join("alice"),
        &launch(&lan.hosts[0]),
    )?;
    let mut bob = RpcProcess::spawn(&bin, "Bob", &tmp.path().join("bob"), &launch(&lan.hosts[1]))?;
    let (alice_id, bob_id) = (alice.peer_id(), bob.peer_id());

    // Each sees the other nearby, with the name and contact code from its card.
    let bob_seen = wait_nearby(&mut alice, &bob_id)?;
    assert_eq!(bob_seen["name"], "Bob");
    assert_eq!(bob_seen["contact_code"], bob.code());
    let alice_seen = wait_nearby(&mut bob, &alice_id)?;
    assert_eq!(alice_seen["name"], "Alice 앨리스");

    // Adding the code from `nearby` is all it takes.
    alice.call("contact_add", json!({"code": bob_seen["contact_code"]}))?;
    bob.call("contact_add", json!({"code": alice_seen["contact_code"]}))?;

    alice.send_and_wait(&mut bob, "LAN only, no internet")?;
    bob.send_and_wait(&mut alice, "받았어요")?;

    // The connection is over the LAN link, not loopback.
    let peers = alice.call("peers", json!({}))?;
    let addrs = peers[0]["addrs"].to_string();
    assert!(addrs.contains(&lan.addrs[1]), "{peers}");
    alice.shutdown()?;
    bob.shutdown()?;
    drop(lan);
    Ok(())
}
