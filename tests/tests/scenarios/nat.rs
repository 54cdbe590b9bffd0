//! Alice and Bob each behind their own NAT router (network namespaces, iptables
//! MASQUERADE), a relay on the public segment: they cannot dial each other, yet talk
//! through the relay; DCUtR tries to make the connection direct and the test reports
//! whether it did.

use std::time::{Duration, Instant};

use bonghwa_tests::WAIT;
use bonghwa_tests::netns::{self, Nat};
use bonghwa_tests::process::{Launch, RpcProcess};
use bonghwa_tests::relay::RelayProcess;
use serde_json::{Value, json};

/// How long each node is polled in turn while waiting for whichever reports first.
const POLL: Duration = Duration::from_millis(200);

#[test]
fn peers_behind_separate_nats_talk_through_the_relay_and_try_a_hole_punch() -> anyhow::Result<()> {
    let test = "peers_behind_separate_nats_talk_through_the_relay_and_try_a_hole_punch";
    if !netns::available(test) || !netns::iptables_available(test) {
        return Ok(());
    }
    let nat = Nat::create()?;
    let tmp = tempfile::tempdir()?;
    let bin = crate::node_bin();
    let tcp = format!("/ip4/{}/tcp/4001", nat.relay_ip);
    let quic = format!("/ip4/{}/udp/4001/quic-v1", nat.relay_ip);
    let relay = RelayProcess::spawn_in(
        &bin,
        &tmp.path().join("relay"),
        Some(&nat.public),
        &[&tcp, &quic],
        &["--external-addr", &tcp],
    )?;
    let launch = |home: &str| Launch {
        netns: Some(home.to_owned()),
        // Default listen addresses (TCP and QUIC on every interface of the home).
        listen: Some(String::new()),
        // Both of the relay's addresses: over QUIC, the port the NAT shows the relay is the
        // port we listen on, which is what a hole punch needs.
        args: vec![
            "--bootstrap".into(),
            format!("{tcp}/p2p/{}", relay.peer_id()),
            "--bootstrap".into(),
            format!("{quic}/p2p/{}", relay.peer_id()),
        ],
        ..Launch::default()
    };
    let mut alice = RpcProcess::spawn(
        &bin,
        "alice",
        &tmp.path().join("alice"),
        &launch(&nat.homes[0]),
    )?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &tmp.path().join("bob"), &launch(&nat.homes[1]))?;
    let bob_id = bob.peer_id();
    let reserved = |p: &Value| p["kind"] == "relay_reservation" && p["reserved"] == true;
    alice.wait_event("alice's reservation", reserved)?;
    bob.wait_event("bob's reservation", reserved)?;

    // AutoNAT: the relay cannot dial back into either home.
    for node in [&mut alice, &mut bob] {
        let verdict = node.wait_event("reachability", |p| {
            p["kind"] == "reachability" && p["status"] != "unknown"
        })?;
        assert_eq!(verdict["status"], "private", "{}: {verdict}", node.name);
        assert_eq!(node.call("identity", json!({}))?["reachability"], "private");
    }

    // The homes cannot reach each other directly.
    let bob_direct = format!(
        "/ip4/{}/tcp/{}/p2p/{bob_id}",
        nat.home_ips[1],
        tcp_port(&bob)?
    );
    let direct = alice.call_raw("connect", json!({"addr": bob_direct}))?;
    assert!(
        direct.get("error").is_some(),
        "a direct dial into bob's home worked: {direct}"
    );

    // Codes exchanged out of band; they list the relay as each one's mailbox.
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;
    alice.send_and_wait(&mut bob, "안녕, through the relay")?;
    bob.send_and_wait(&mut alice, "got it")?;

    // The connection went through the relay circuit (unless a hole punch already made a
    // direct one next to it).
    let peers = alice.call("peers", json!({}))?;
    let bob_entry = peers
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["peer_id"] == bob_id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(
        bob_entry["addrs"].to_string().contains("p2p-circuit") || bob_entry["via"] == "direct",
        "{peers}"
    );

    // DCUtR is attempted over the relayed connection: wait for either side's report.
    let punched = |p: &Value| p["kind"] == "hole_punch";
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        if let Some(event) = alice.try_event(POLL, punched)? {
            break event;
        }
        if let Some(event) = bob.try_event(POLL, punched)? {
            break event;
        }
        anyhow::ensure!(Instant::now() < deadline, "no hole punch was attempted");
    };
    let peers = alice.call("peers", json!({}))?;
    eprintln!(
        "NAT scenario: hole punch reported {outcome}; alice's view of bob afterwards: {}",
        peers
    );
    // Either way, messages still flow.
    alice.send_and_wait(&mut bob, "still here")?;
    alice.shutdown()?;
    bob.shutdown()?;
    drop(relay);
    drop(nat);
    Ok(())
}

/// The TCP port `node` listens on.
fn tcp_port(node: &RpcProcess) -> anyhow::Result<String> {
    let addrs = node.identity["addrs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    addrs
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| {
            let rest = a.split("/tcp/").nth(1)?;
            Some(rest.split('/').next()?.to_owned())
        })
        .ok_or_else(|| anyhow::anyhow!("no tcp address in {addrs:?}"))
}
