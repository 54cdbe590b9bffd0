//! Direct-message benchmark: two `bonghwa rpc` processes on loopback, encryption and
//! durable storage on both sides. Prints one JSON object.
//!
//! Run: `cargo run --release -p bonghwa-tests --bin bench-direct`
//! Flags: `--latency N` (default 1000), `--throughput N` (default 10000), `--keep`
//! (keep the data dirs and node logs).

use std::time::Instant;

use bonghwa_tests::bench::{arg, ms, node_bin, percentile, status_kib};
use bonghwa_tests::process::{Launch, RpcProcess};
use serde_json::json;

/// CPU time (user + system) a process has used so far, in ms (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10
}

fn main() -> anyhow::Result<()> {
    bonghwa_tests::bench::exit_on_help(include_str!("bench_direct.rs"));
    let latency_n = arg("--latency", 1000);
    let throughput_n = arg("--throughput", 10_000);
    let bin = node_bin()?;
    let tmp = tempfile::tempdir()?;
    let (root, _cleanup) = if std::env::args().any(|a| a == "--keep") {
        let root = tmp.keep();
        eprintln!("data dirs and logs kept in {}", root.display());
        (root, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };
    let launch = Launch::default();

    // Time from process start to the `ready` line: first start (key + database created) …
    let t = Instant::now();
    let alice = RpcProcess::spawn(&bin, "alice", &root.join("alice"), &launch)?;
    let ready_first_ms = ms(t.elapsed());
    let alice_dir = alice.data_dir.clone();
    alice.shutdown()?;
    // … and a restart on an existing data dir.
    let t = Instant::now();
    let mut alice = RpcProcess::spawn(&bin, "alice", &alice_dir, &launch)?;
    let ready_restart_ms = ms(t.elapsed());
    let mut bob = RpcProcess::spawn(&bin, "bob", &root.join("bob"), &launch)?;
    let idle_rss = [
        status_kib(alice.pid(), "VmRSS:"),
        status_kib(bob.pid(), "VmRSS:"),
    ];

    alice.call("connect", json!({"addr": bob.addr()}))?;
    alice.call("contact_add", json!({"code": bob.code()}))?;
    bob.call("contact_add", json!({"code": alice.code()}))?;
    let bob_id = bob.peer_id();

    // Latency: one message at a time, send request → message_received at Bob.
    let mut latencies = Vec::with_capacity(latency_n);
    let mut round_trips = Vec::with_capacity(latency_n);
    for i in 0..latency_n {
        let text = format!("latency {i}");
        let t = Instant::now();
        let sent = alice.call("send", json!({"to": bob_id, "text": text}))?;
        bob.wait_event("latency message", |p| {
            p["kind"] == "message_received" && p["message"]["text"] == text.as_str()
        })?;
        latencies.push(ms(t.elapsed()));
        let id = sent["id"].as_str().unwrap_or_default().to_owned();
        alice.wait_event("delivered", |p| {
            p["kind"] == "message_status" && p["id"] == id.as_str() && p["status"] == "delivered"
        })?;
        round_trips.push(ms(t.elapsed()));
    }
    latencies.sort_by(f64::total_cmp);
    round_trips.sort_by(f64::total_cmp);

    // Throughput: all sends written at once, then wait for Bob to hold every one.
    let cpu_before = [cpu_ms(alice.pid()), cpu_ms(bob.pid())];
    let t = Instant::now();
    for i in 0..throughput_n {
        let request = json!({"jsonrpc": "2.0", "id": format!("t{i}"), "method": "send",
            "params": {"to": bob_id, "text": format!("throughput {i}")}});
        alice.write_raw(&request.to_string())?;
    }
    bob.count_events("throughput messages", throughput_n, |p| {
        p["kind"] == "message_received"
            && p["message"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("throughput "))
    })?;
    let received_elapsed = t.elapsed();
    let last_id = json!(format!("t{}", throughput_n - 1));
    alice.response(&last_id)?;
    alice.count_events("throughput delivered", throughput_n, |p| {
        p["kind"] == "message_status" && p["status"] == "delivered"
    })?;
    let delivered_elapsed = t.elapsed();
    let cpu_used = [
        cpu_ms(alice.pid()).saturating_sub(cpu_before[0]),
        cpu_ms(bob.pid()).saturating_sub(cpu_before[1]),
    ];
    let per_message_us = |ms: u64| ms as f64 * 1000.0 / throughput_n as f64;

    let peak_rss = [
        status_kib(alice.pid(), "VmHWM:"),
        status_kib(bob.pid(), "VmHWM:"),
    ];
    let history = bob.call("messages", json!({"chat": alice.peer_id(), "limit": 1}))?;
    alice.shutdown()?;
    bob.shutdown()?;

    let report = json!({
        "benchmark": "direct",
        "transport": "tcp loopback, noise, yamux; JSON-RPC over pipes at both ends",
        "latency_messages": latency_n,
        "latency_ms": {"p50": percentile(&latencies, 50.0), "p99": percentile(&latencies, 99.0),
                       "max": latencies.last()},
        "ack_round_trip_ms": {"p50": percentile(&round_trips, 50.0), "p99": percentile(&round_trips, 99.0)},
        "throughput_messages": throughput_n,
        "throughput_received_per_s": throughput_n as f64 / received_elapsed.as_secs_f64(),
        "throughput_delivered_per_s": throughput_n as f64 / delivered_elapsed.as_secs_f64(),
        "throughput_cpu_us_per_message": {"alice": per_message_us(cpu_used[0]),
                                           "bob": per_message_us(cpu_used[1])},
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "ready_ms": {"first_start": ready_first_ms, "restart": ready_restart_ms},
        "rss_kib": {"alice_idle": idle_rss[0], "bob_idle": idle_rss[1],
                    "alice_peak": peak_rss[0], "bob_peak": peak_rss[1]},
        "last_message_at_bob": history[0]["text"],
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
