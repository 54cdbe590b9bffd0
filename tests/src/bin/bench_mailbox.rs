//! Mailbox benchmark: a real `bonghwa relay` process (release build) and raw libp2p clients
//! on loopback. Deposit rate, fetch-and-ack rate, disk bytes per held envelope, the relay's
//! memory; then catch-up: how long a `bonghwa rpc` client that comes online takes to
//! receive messages held for it. Prints one JSON object.
//!
//! Run: `cargo build --release -p bonghwa-tests --bins && target/release/bench-mailbox`
//! Flags: `--deposits N` (default 100000), `--size BYTES` (default 1024), `--catchup N`
//! (default 1000), `--keep` (keep data dirs and logs).

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use bonghwa_core::wire::{MailboxRequest, MailboxResponse};
use bonghwa_tests::bench::{arg, node_bin, status_kib};
use bonghwa_tests::hostile::{Attacker, frame};
use bonghwa_tests::process::{Launch, RpcProcess};
use bonghwa_tests::relay::RelayProcess;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde_json::json;

const MAILBOX: &str = "/bonghwa/mailbox/1";

/// Bytes of all files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn ask(
    peer: &mut Attacker,
    relay: PeerId,
    request: &MailboxRequest,
) -> anyhow::Result<MailboxResponse> {
    let raw = peer
        .send(relay, frame(&request.encode()))
        .await?
        .map_err(|e| anyhow::anyhow!("no answer: {e}"))?;
    anyhow::ensure!(raw.len() >= 4, "short answer");
    Ok(MailboxResponse::decode(&raw[4..])?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    bonghwa_tests::bench::exit_on_help(include_str!("bench_mailbox.rs"));
    let deposits = arg("--deposits", 100_000);
    let size = arg("--size", 1024);
    let catchup = arg("--catchup", 1000);
    let bin = node_bin()?;
    let tmp = tempfile::tempdir()?;
    let (root, _cleanup) = if std::env::args().any(|a| a == "--keep") {
        let root = tmp.keep();
        eprintln!("data dirs and logs kept in {}", root.display());
        (root, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };

    // 1. Deposits, one request at a time, to 100 recipients, from a new sender every 1,000.
    let relay_dir = root.join("relay");
    let limit_mb = (deposits * (size + 64) / (1 << 20) + 64).to_string();
    let relay = RelayProcess::spawn(
        &bin,
        &relay_dir,
        &[
            "--mail-mb-per-recipient",
            &limit_mb,
            "--mail-mb-total",
            &limit_mb,
        ],
    )?;
    let recipients: Vec<Keypair> = (0..100).map(|_| Keypair::generate_ed25519()).collect();
    let empty_disk = disk_bytes(&relay_dir);
    let mut depositor = Attacker::speaking(Keypair::generate_ed25519(), MAILBOX)?;
    let mut relay_id = depositor.connect(&relay.addr()).await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(1800);
    let t = Instant::now();
    for i in 0..deposits {
        if Instant::now() > deadline {
            bail!("deposits took over 30 minutes; stopped at {i}");
        }
        // A new sender every 1,000 deposits: one sender may hold at most 2,000.
        if i > 0 && i % 1_000 == 0 {
            depositor = Attacker::speaking(Keypair::generate_ed25519(), MAILBOX)?;
            relay_id = depositor.connect(&relay.addr()).await?;
        }
        let mut envelope = vec![0x5a; size];
        envelope[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let to = recipients[i % recipients.len()].public().to_peer_id();
        let request = MailboxRequest::Deposit {
            recipient: to.to_string(),
            envelope,
        };
        match ask(&mut depositor, relay_id, &request).await? {
            MailboxResponse::Stored => {}
            other => bail!("deposit {i} refused: {other:?}"),
        }
    }
    let deposit_s = t.elapsed().as_secs_f64();
    let held_disk = disk_bytes(&relay_dir);
    let relay_rss = status_kib(relay.pid(), "VmRSS:");

    // 2. Each recipient fetches and acks all its mail.
    let t = Instant::now();
    let mut fetched = 0usize;
    for key in &recipients {
        let mut client = Attacker::speaking(key.clone(), MAILBOX)?;
        let relay_id = client.connect(&relay.addr()).await?;
        let mut after = None;
        loop {
            let MailboxResponse::Page { mail, more } =
                ask(&mut client, relay_id, &MailboxRequest::Fetch { after }).await?
            else {
                bail!("fetch refused");
            };
            fetched += mail.len();
            after = mail.last().map(|(seq, _)| *seq);
            let seqs = mail.iter().map(|(seq, _)| *seq).collect();
            ask(&mut client, relay_id, &MailboxRequest::Ack { seqs }).await?;
            if !more {
                break;
            }
        }
    }
    let fetch_s = t.elapsed().as_secs_f64();
    if fetched != deposits {
        bail!("fetched {fetched} of {deposits}");
    }
    relay.terminate()?;

    // 3. Catch-up: Bob offline, Alice leaves `catchup` messages at the relay and exits;
    // Bob starts and receives them all.
    let relay = RelayProcess::spawn(&bin, &root.join("relay2"), &[])?;
    let launch = Launch {
        args: vec!["--bootstrap".into(), relay.addr()],
        ..Launch::default()
    };
    let mut alice = RpcProcess::spawn(&bin, "alice", &root.join("alice"), &launch)?;
    let mut bob = RpcProcess::spawn(&bin, "bob", &root.join("bob"), &launch)?;
    alice.call("connect", json!({"addr": bob.addr()}))?;
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;
    let bob_id = bob.peer_id();
    let bob_dir = bob.data_dir.clone();
    bob.shutdown()?;
    alice.wait_event("bob gone", |p| p["kind"] == "peer_disconnected")?;
    for i in 0..catchup {
        let request = json!({"jsonrpc": "2.0", "id": format!("c{i}"), "method": "send",
            "params": {"to": bob_id, "text": format!("held {i}")}});
        alice.write_raw(&request.to_string())?;
    }
    alice.count_events("held", catchup, |p| {
        p["kind"] == "message_status" && p["status"] == "sent"
    })?;
    alice.shutdown()?;
    let t = Instant::now();
    let mut bob = RpcProcess::spawn(&bin, "bob", &bob_dir, &launch)?;
    bob.count_events("caught up", catchup, |p| p["kind"] == "message_received")?;
    let catchup_s = t.elapsed().as_secs_f64();
    bob.shutdown()?;
    relay.terminate()?;

    let report = json!({
        "benchmark": "mailbox",
        "transport": "tcp loopback, noise, yamux; release bonghwa relay; raw libp2p clients",
        "deposits": deposits,
        "envelope_bytes": size,
        "deposit_per_s_sequential": deposits as f64 / deposit_s,
        "fetch_and_ack_per_s": deposits as f64 / fetch_s,
        "disk_bytes_per_held_envelope": (held_disk.saturating_sub(empty_disk)) as f64 / deposits as f64,
        "relay_rss_kib_holding_all": relay_rss,
        "catchup_messages": catchup,
        "catchup_s_from_start_to_last_received": catchup_s,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
