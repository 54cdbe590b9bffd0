//! Relay capacity benchmark: a real `bonghwa relay` process (release build) on loopback and
//! thousands of lightweight libp2p clients in this process, each its own `Swarm` with a
//! fresh identity (TCP, Noise, Yamux; relay client, identify, ping, AutoNAT), each holding a
//! relay v2 reservation. The client count is ramped in steps; at each step, once every client holds
//! its reservation, the relay's RSS, RSS per connection and CPU are recorded. After the
//! ramp, the relay's idle CPU while it holds them all. Stops at the first step that fails
//! (a refusal, a lost reservation or the step timeout) and names it.
//!
//! Prints one JSON object per line: one per step, then a summary.
//!
//! Run: `cargo build --release -p bonghwa-tests --bins && (ulimit -n 20000 &&
//! target/release/bench-relay)`; both this process and the relay (which inherits the limit)
//! hold one socket per client.
//! Flags: `--max N` (5000), `--first N` (500), `--step N` (1000): steps are `first`, then
//! multiples of `step`, up to `max`; `--concurrency N` (64) reservations in progress at once
//! (the relay accepts 128 handshaking connections); `--step-timeout S` (180); `--hold S`
//! (30) seconds of idle CPU sampling before the ramp and after it; `--clients-per-ip N` (1)
//! clients that share one loopback source address (127.1.x.y); `--keep` keeps the data dir
//! and the relay's log; `--no-autonat`: clients that do not speak AutoNAT (the relay then
//! probes them one after another without pause, see BENCHMARKS.md).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bonghwa_core::net::IDENTIFY_PROTOCOL;
use bonghwa_tests::bench::{arg, node_bin, status_kib};
use bonghwa_tests::relay::RelayProcess;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::upgrade;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::tcp::tokio::TcpStream;
use libp2p::{Multiaddr, Transport, autonat, identify, noise, ping, relay, yamux};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

/// What one client needs: the relay client, and what every Bonghwa node also speaks to a
/// relay (identify, ping, AutoNAT v1 with Bonghwa's settings), so that the relay's
/// per-connection work is realistic. AutoNAT can be left out (`--no-autonat`).
#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    autonat: Toggle<autonat::Behaviour>,
}

/// Bonghwa's AutoNAT settings (`core/src/net/mod.rs`, `autonat_config`).
fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(5),
        retry_interval: Duration::from_secs(30),
        refresh_interval: Duration::from_secs(15 * 60),
        throttle_server_period: Duration::from_secs(15),
        only_global_ips: false,
        ..autonat::Config::default()
    }
}

/// What a client task reports to the ramp.
enum Report {
    /// Holds its reservation.
    Reserved,
    /// Never got one.
    Failed(String),
    /// Had one and lost it (connection or listener closed).
    Lost(String),
}

/// One client: reserve at `relay_addr`, keep the connection until `stop`.
async fn client(
    source: Ipv4Addr,
    with_autonat: bool,
    relay_addr: Multiaddr,
    slots: Arc<Semaphore>,
    reports: mpsc::Sender<Report>,
    mut stop: watch::Receiver<bool>,
) {
    // A slot while handshaking and reserving: the relay refuses connections beyond its
    // limit of pending (handshaking) ones.
    let Ok(slot) = slots.acquire_owned().await else {
        return;
    };
    if *stop.borrow() {
        return;
    }
    let mut slot = Some(slot);
    let mut swarm = match build_client(source, with_autonat) {
        Ok(s) => s,
        Err(e) => {
            let _ = reports.send(Report::Failed(format!("build: {e}"))).await;
            return;
        }
    };
    if let Err(e) = swarm.listen_on(relay_addr.with(Protocol::P2pCircuit)) {
        let _ = reports
            .send(Report::Failed(format!("listen_on: {e}")))
            .await;
        return;
    }
    let mut reserved = false;
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            event = swarm.select_next_some() => event,
        };
        let problem = match event {
            SwarmEvent::Behaviour(ClientEvent::Relay(
                relay::client::Event::ReservationReqAccepted { .. },
            )) => {
                if !reserved {
                    reserved = true;
                    slot = None;
                    let _ = reports.send(Report::Reserved).await;
                }
                None
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                Some(format!("listener closed: {reason:?}"))
            }
            SwarmEvent::ListenerError { error, .. } => Some(format!("listener error: {error}")),
            SwarmEvent::OutgoingConnectionError { error, .. } => Some(format!("dial: {error}")),
            SwarmEvent::ConnectionClosed { cause, .. } => {
                Some(format!("connection closed: {cause:?}"))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            drop(slot.take());
            let report = if reserved {
                Report::Lost(problem)
            } else {
                Report::Failed(problem)
            };
            let _ = reports.send(report).await;
            return;
        }
    }
}

fn build_client(source: Ipv4Addr, with_autonat: bool) -> anyhow::Result<libp2p::Swarm<Client>> {
    let transport = |key: &Keypair| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
        Ok(BoundTcp { source }
            .upgrade(upgrade::Version::V1)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default()))
    };
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(transport)
        .map_err(|e| anyhow::anyhow!("transport: {e}"))?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay| Client {
            relay,
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.to_owned(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
            autonat: Toggle::from(
                with_autonat
                    .then(|| autonat::Behaviour::new(key.public().to_peer_id(), autonat_config())),
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// TCP that only dials, from a chosen loopback source address (all of 127.0.0.0/8 is
/// loopback on Linux). The relay rate-limits reservations per source IP (libp2p's default:
/// a burst of 60, then one a second), so clients that should look like separate hosts get
/// separate addresses.
struct BoundTcp {
    source: Ipv4Addr,
}

impl Transport for BoundTcp {
    type Output = TcpStream;
    type Error = std::io::Error;
    type ListenerUpgrade = futures::future::Pending<Result<TcpStream, std::io::Error>>;
    type Dial = BoxFuture<'static, Result<TcpStream, std::io::Error>>;

    fn listen_on(
        &mut self,
        _id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _id: ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        // Only `/ip4/<ip>/tcp/<port>`, optionally with `/p2p/<id>`; not circuits.
        let mut parts = addr.iter();
        let target = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (
                Some(Protocol::Ip4(ip)),
                Some(Protocol::Tcp(port)),
                None | Some(Protocol::P2p(_)),
                None,
            ) => SocketAddr::new(ip.into(), port),
            _ => return Err(TransportError::MultiaddrNotSupported(addr)),
        };
        let source = SocketAddr::new(self.source.into(), 0);
        Ok(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(source)?;
            let stream = socket.connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(TcpStream(stream))
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Poll::Pending // never listens, so never has an event
    }
}

/// The source address of client `i` when `per_ip` clients share one: 127.1.x.y.
fn source_ip(i: usize, per_ip: usize) -> Ipv4Addr {
    let k = i / per_ip.max(1);
    Ipv4Addr::new(
        127,
        1 + (k / 62_500) as u8,
        (k / 250 % 250) as u8,
        (k % 250 + 1) as u8,
    )
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails).
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_s(pid: u32, tck: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0) as f64
    };
    (ticks(11) + ticks(12)) / tck // utime (field 14), stime (field 15)
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process's soft limit on open files, from `/proc/self/limits`.
fn nofile_soft() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// The relay's CPU % (of one core) over `secs` seconds, counting lost reservations meanwhile.
async fn idle_cpu(
    pid: u32,
    tck: f64,
    secs: u64,
    reports: &mut mpsc::Receiver<Report>,
    lost: &mut BTreeMap<String, usize>,
) -> f64 {
    let c0 = cpu_s(pid, tck);
    let t0 = Instant::now();
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(report)) = tokio::time::timeout_at(end, reports.recv()).await {
        if let Report::Lost(why) | Report::Failed(why) = report {
            *lost.entry(why).or_default() += 1;
        }
    }
    (cpu_s(pid, tck) - c0) / t0.elapsed().as_secs_f64() * 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    bonghwa_tests::bench::exit_on_help(include_str!("bench_relay.rs"));
    let max = arg("--max", 5000);
    let first = arg("--first", 500);
    let step = arg("--step", 1000).max(1);
    let concurrency = arg("--concurrency", 64).max(1);
    let step_timeout = Duration::from_secs(arg("--step-timeout", 180) as u64);
    let hold = arg("--hold", 30) as u64;
    let per_ip = arg("--clients-per-ip", 1).max(1);
    let with_autonat = !std::env::args().any(|a| a == "--no-autonat");
    let mut steps: Vec<usize> = std::iter::once(first.min(max))
        .chain((1..).map(|k| k * step).take_while(|&n| n < max))
        .chain(std::iter::once(max))
        .filter(|&n| n > 0)
        .collect();
    steps.sort_unstable();
    steps.dedup();

    // This process holds one socket per client, and so does the relay (it inherits ours).
    let needed = max as u64 + 512;
    match nofile_soft() {
        Some(soft) if soft < needed => bail!(
            "the open-files limit is {soft}, {needed} are needed: run under `ulimit -n {needed}`"
        ),
        _ => {}
    }

    let bin = node_bin()?;
    let tmp = tempfile::tempdir()?;
    let (root, _cleanup) = if std::env::args().any(|a| a == "--keep") {
        let root = tmp.keep();
        eprintln!("data dir and relay log kept in {}", root.display());
        (root, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };

    // The relay serves reservations only with a confirmed external address (libp2p relay
    // v2 answers with it), and these clients do not run AutoNAT to confirm one: so pick a
    // free loopback port and give it as both the listen and the external address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let relay = RelayProcess::spawn_in(
        &bin,
        &root.join("relay"),
        None,
        &[&listen],
        &["--external-addr", &listen],
    )?;
    let pid = relay.pid();
    let relay_addr: Multiaddr = relay.addr().parse().context("relay address")?;
    let tck = clk_tck();
    let me = std::process::id();

    let (tx, mut rx) = mpsc::channel::<Report>(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut lost: BTreeMap<String, usize> = BTreeMap::new();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_rss = status_kib(pid, "VmRSS:");
    let base_idle_cpu = idle_cpu(pid, tck, hold, &mut rx, &mut lost).await;
    let base_bench_rss = status_kib(me, "VmRSS:");

    let mut reserved = 0usize;
    let mut limit: Option<Value> = None;
    let mut last_ok: Option<Value> = None;
    let ramp_start = Instant::now();
    for &target in &steps {
        let started = reserved;
        let cpu0 = cpu_s(pid, tck);
        let t = Instant::now();
        for i in tasks.len()..target {
            tasks.spawn(client(
                source_ip(i, per_ip),
                with_autonat,
                relay_addr.clone(),
                slots.clone(),
                tx.clone(),
                stop_rx.clone(),
            ));
        }
        let deadline = tokio::time::Instant::now() + step_timeout;
        let mut failed: BTreeMap<String, usize> = BTreeMap::new();
        let mut timed_out = false;
        // Every client so far has either reserved, failed or lost its reservation.
        while reserved + failed.values().sum::<usize>() + lost.values().sum::<usize>() < target {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Report::Reserved)) => reserved += 1,
                Ok(Some(Report::Failed(why))) => *failed.entry(why).or_default() += 1,
                Ok(Some(Report::Lost(why))) => {
                    *lost.entry(why).or_default() += 1;
                    reserved -= 1;
                }
                Ok(None) => bail!("report channel closed"),
                Err(_) => {
                    timed_out = true;
                    break;
                }
            }
        }
        let step_s = t.elapsed().as_secs_f64();
        let added = reserved.saturating_sub(started);
        let rss = status_kib(pid, "VmRSS:");
        let cpu = cpu_s(pid, tck);
        let report = json!({
            "step": target,
            "reservations_held": reserved,
            "refused_or_failed": failed.values().sum::<usize>(),
            "lost_so_far": lost.values().sum::<usize>(),
            "timed_out": timed_out,
            "step_s": step_s,
            "reservations_per_s": added as f64 / step_s,
            "relay_rss_kib": rss,
            "relay_rss_kib_per_connection": if reserved > 0 {
                rss.saturating_sub(base_rss) as f64 / reserved as f64
            } else { 0.0 },
            "relay_cpu_s_total": cpu,
            "relay_cpu_ms_per_new_reservation": if added > 0 {
                (cpu - cpu0) * 1000.0 / added as f64
            } else { 0.0 },
            "relay_fds": fds(pid),
            "relay_threads": status_kib(pid, "Threads:"),
            "bench_rss_kib": status_kib(me, "VmRSS:"),
            "bench_cpu_s_total": cpu_s(me, tck),
        });
        println!("{report}");
        if timed_out || !failed.is_empty() || !lost.is_empty() {
            limit = Some(json!({
                "step": target,
                "reservations_held": reserved,
                "timed_out_after_s": timed_out.then_some(step_timeout.as_secs()),
                "failures": failed,
                "lost": lost,
            }));
            break;
        }
        last_ok = Some(report);
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();

    // Hold: the relay's CPU while it holds every reservation and nothing else happens.
    let held_before_idle = reserved;
    let lost_before_idle = lost.values().sum::<usize>();
    let held_idle_cpu = idle_cpu(pid, tck, hold, &mut rx, &mut lost).await;
    let lost_total = lost.values().sum::<usize>();
    let summary = json!({
        "benchmark": "relay",
        "transport": "tcp loopback, noise, yamux; release bonghwa relay; in-process libp2p clients (relay client, identify, ping, autonat unless --no-autonat)",
        "steps": steps,
        "concurrency": concurrency,
        "clients_per_source_ip": per_ip,
        "clients_speak_autonat": with_autonat,
        "reached": last_ok.as_ref().map(|s| s["step"].clone()),
        "limit": limit,
        "ramp_s": ramp_s,
        "relay_rss_kib_baseline": base_rss,
        "relay_rss_kib_end": status_kib(pid, "VmRSS:"),
        "relay_hwm_kib": status_kib(pid, "VmHWM:"),
        "relay_idle_cpu_percent_no_clients": base_idle_cpu,
        "relay_idle_cpu_percent_holding": held_idle_cpu,
        "reservations_held_before_hold": held_before_idle,
        "reservations_lost_during_hold": lost_total - lost_before_idle,
        "hold_s": hold,
        "lost": lost,
        "relay_cpu_s_total": cpu_s(pid, tck),
        "bench_rss_kib_baseline": base_bench_rss,
        "bench_rss_kib_end": status_kib(me, "VmRSS:"),
        "bench_cpu_s_total": cpu_s(me, tck),
        "clk_tck": tck,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });

    // Stop the clients (bounded), then the relay.
    let _ = stop_tx.send(true);
    drop(tx);
    let stopping = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(_)) = tokio::time::timeout_at(stopping, tasks.join_next()).await {}
    tasks.abort_all();
    let status = relay.terminate()?;
    println!("{summary}");
    if !status.success() {
        bail!("relay exited with {status}");
    }
    Ok(())
}
