//! Group fan-out benchmark: N in-process nodes (default 30) on TCP loopback in a random
//! mesh, one group with all of them; publish-to-delivery latency over every (message,
//! receiver) pair at a paced rate, then a burst for the messages per second the group
//! delivers to every member. Prints one JSON object per phase and a summary.
//!
//! Run: `cargo run --release -p bonghwa-tests --bin bench-group`
//! Flags: `--nodes N` (30), `--degree K` (4), `--seed S` (1), `--messages M` (300),
//! `--rate R` (50 per second), `--burst N` (1000), `--invite star|hops` (star),
//! `--setup-timeout S` (180), `--keep`.
//!
//! Mesh: a ring (node i dials node i+1, so the graph is connected) plus, for each node,
//! `--degree` dials to distinct random others it has no connection to yet (seeded
//! xorshift). Invites ride the direct outbox, which needs a connection (a contact card
//! carries no address, and there is no relay or DHT server here). With `--invite star`
//! (default) node 0 takes everyone as a contact, connects to every node it is not yet
//! connected to and creates the group with all of them at once: node 0 becomes a hub on
//! top of the mesh. With `--invite hops` contacts are mesh neighbours only: node 0 creates
//! the group with its neighbours and every member adds its own not-yet-invited neighbours,
//! breadth first, so the mesh stays as drawn; at 30 nodes a late invite can outgrow the
//! direct-message size limit and never arrive (BENCHMARKS.md).

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bonghwa_core::{Event, EventStream, Node};
use bonghwa_tests::bench::{arg, ms, percentile, status_kib};
use bonghwa_tests::loopback_config;
use serde_json::{Value, json};

/// Warm-up rounds at most (one message per node each).
const WARM_ROUNDS: usize = 5;
/// How long a warm-up round may take to arrive everywhere.
const WARM_ROUND_WAIT: Duration = Duration::from_secs(20);
/// How long deliveries may trail the last send of a phase.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound of the burst's sending.
const BURST_SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// How often waits look at the shared state.
const POLL: Duration = Duration::from_millis(5);

/// xorshift64*: a tiny seeded generator, enough to draw a mesh.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warm = 0,
    Latency = 1,
    Burst = 2,
}

impl Phase {
    fn parse(tag: &str) -> Option<Self> {
        match tag {
            "warm" => Some(Phase::Warm),
            "lat" => Some(Phase::Latency),
            "burst" => Some(Phase::Burst),
            _ => None,
        }
    }
}

/// What one phase's messages did: when each was sent, by whom, and when each receiver
/// saw it.
struct PhaseLog {
    sender: Vec<usize>,
    sent_at: Vec<Option<Instant>>,
    /// `received[node][seq]`: the first arrival.
    received: Vec<Vec<Option<Instant>>>,
    /// Arrivals per node (first arrivals only).
    count: Vec<usize>,
    duplicates: usize,
}

impl PhaseLog {
    fn new(nodes: usize, messages: usize) -> Self {
        Self {
            sender: (0..messages).map(|seq| seq % nodes).collect(),
            sent_at: vec![None; messages],
            received: vec![vec![None; messages]; nodes],
            count: vec![0; nodes],
            duplicates: 0,
        }
    }

    /// Whether every node holds every message it did not send.
    fn complete(&self) -> bool {
        self.complete_up_to(self.sent_at.len())
    }

    /// Whether every node holds every message it did not send among the first `messages`.
    fn complete_up_to(&self, messages: usize) -> bool {
        self.received.iter().enumerate().all(|(node, got)| {
            (0..messages).all(|seq| {
                self.sender[seq] == node || self.sent_at[seq].is_none() || got[seq].is_some()
            })
        })
    }

    /// Whether every node has received at least one message from every other node.
    fn keyed(&self, nodes: usize) -> bool {
        self.received.iter().enumerate().all(|(node, got)| {
            let mut from = vec![false; nodes];
            from[node] = true;
            for (seq, at) in got.iter().enumerate() {
                if at.is_some() {
                    from[self.sender[seq]] = true;
                }
            }
            from.iter().all(|&f| f)
        })
    }
}

/// Everything the event collectors record, shared with the driver.
struct State {
    group: Option<String>,
    /// Groups each node has seen a `GroupChanged` for.
    joined: Vec<BTreeSet<String>>,
    lagged: u64,
    stopped: usize,
    unexpected: usize,
    phases: [PhaseLog; 3],
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads one node's events until it stops, recording joins and group messages.
async fn collect(index: usize, mut events: EventStream, state: Shared) {
    while let Some(event) = events.next().await {
        let now = Instant::now();
        match event {
            Event::GroupChanged { group } => {
                lock(&state).joined[index].insert(group);
            }
            Event::MessageReceived { chat, message } => {
                let mut s = lock(&state);
                if s.group.as_deref() != Some(chat.as_str()) {
                    continue;
                }
                let parsed = message
                    .text
                    .split_once(' ')
                    .and_then(|(tag, seq)| Some((Phase::parse(tag)?, seq.parse::<usize>().ok()?)));
                let Some((phase, seq)) = parsed else {
                    s.unexpected += 1;
                    continue;
                };
                let log = &mut s.phases[phase as usize];
                match log.received[index].get_mut(seq) {
                    Some(slot @ None) => {
                        *slot = Some(now);
                        log.count[index] += 1;
                    }
                    Some(Some(_)) => log.duplicates += 1,
                    None => s.unexpected += 1,
                }
            }
            Event::Lagged { missed } => lock(&state).lagged += missed,
            _ => {}
        }
    }
    lock(&state).stopped += 1;
}

/// Polls `done` until it holds or `timeout` passes; false on timeout.
async fn wait_until(state: &Shared, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&lock(state)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Latencies of one phase over every (message, receiver) pair, with what is missing.
struct Delivery {
    latencies: Vec<f64>,
    missing: usize,
    missing_messages: BTreeSet<usize>,
    first_send: Option<Instant>,
    last_delivery: Option<Instant>,
    /// Per receiver, its last delivery.
    receiver_done: Vec<Option<Instant>>,
}

fn delivery(log: &PhaseLog) -> Delivery {
    let mut d = Delivery {
        latencies: Vec::new(),
        missing: 0,
        missing_messages: BTreeSet::new(),
        first_send: log.sent_at.iter().flatten().min().copied(),
        last_delivery: None,
        receiver_done: vec![None; log.received.len()],
    };
    // Messages whose send failed (or never happened) are counted by the send loops.
    for (seq, sent) in log.sent_at.iter().enumerate() {
        let Some(sent) = sent else {
            continue;
        };
        for (node, got) in log.received.iter().enumerate() {
            if node == log.sender[seq] {
                continue;
            }
            match got[seq] {
                Some(at) => {
                    d.latencies.push(ms(at.saturating_duration_since(*sent)));
                    d.last_delivery = d.last_delivery.max(Some(at));
                    d.receiver_done[node] = d.receiver_done[node].max(Some(at));
                }
                None => {
                    d.missing += 1;
                    d.missing_messages.insert(seq);
                }
            }
        }
    }
    d.latencies.sort_by(f64::total_cmp);
    d
}

fn latency_json(sorted: &[f64]) -> Value {
    json!({
        "pairs": sorted.len(),
        "p50": round3(percentile(sorted, 50.0)),
        "p90": round3(percentile(sorted, 90.0)),
        "p99": round3(percentile(sorted, 99.0)),
        "max": sorted.last().copied().map(round3),
    })
}

/// Breadth-first distances from node 0: (largest, reached).
fn eccentricity(adjacency: &[BTreeSet<usize>], from: usize) -> (usize, usize) {
    let mut dist = vec![usize::MAX; adjacency.len()];
    dist[from] = 0;
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        for &next in &adjacency[at] {
            if dist[next] == usize::MAX {
                dist[next] = dist[at] + 1;
                queue.push_back(next);
            }
        }
    }
    let reached: Vec<usize> = dist.into_iter().filter(|&d| d != usize::MAX).collect();
    (reached.iter().copied().max().unwrap_or(0), reached.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    bonghwa_tests::bench::exit_on_help(include_str!("bench_group.rs"));
    bonghwa_tests::init_logging();
    let n = arg("--nodes", 30).max(2);
    let degree = arg("--degree", 4);
    let seed = arg("--seed", 1) as u64;
    let messages = arg("--messages", 300);
    let rate = arg("--rate", 50).max(1);
    let burst = arg("--burst", 1000);
    // Upper bound of each setup step (invites, warm-up).
    let setup_timeout = Duration::from_secs(arg("--setup-timeout", 180) as u64);
    let args: Vec<String> = std::env::args().collect();
    let star = args
        .iter()
        .position(|a| a == "--invite")
        .and_then(|i| args.get(i + 1))
        .is_none_or(|v| v != "hops");
    let tmp = tempfile::tempdir()?;
    let (root, _cleanup) = if args.iter().any(|a| a == "--keep") {
        let root = tmp.keep();
        eprintln!("data dirs kept in {}", root.display());
        (root, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };
    let state: Shared = Arc::new(Mutex::new(State {
        group: None,
        joined: vec![BTreeSet::new(); n],
        lagged: 0,
        stopped: 0,
        unexpected: 0,
        phases: [
            PhaseLog::new(n, n * WARM_ROUNDS),
            PhaseLog::new(n, messages),
            PhaseLog::new(n, burst),
        ],
    }));

    // Start every node, each with its own sled database, and record its events.
    let t_setup = Instant::now();
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let mut collectors = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("n{i:02}");
        let (node, events) = Node::start_subscribed(loopback_config(&root.join(&name), &name))
            .await
            .with_context(|| format!("starting {name}"))?;
        collectors.push(tokio::spawn(collect(i, events, state.clone())));
        nodes.push(node);
    }
    let mut addrs = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut peer_ids = Vec::with_capacity(n);
    for node in &nodes {
        let identity = node.identity().await?;
        addrs.push(
            identity
                .addrs
                .first()
                .cloned()
                .context("a node has no listen address")?,
        );
        codes.push(identity.contact_code);
        peer_ids.push(node.peer_id().to_string());
    }

    progress(&t_setup, "nodes started");
    // The mesh: a ring, then `degree` random new neighbours per node.
    let mut rng = XorShift::new(seed);
    let mut adjacency = vec![BTreeSet::new(); n];
    let mut dials: Vec<(usize, usize)> = Vec::new();
    let mut link = |a: usize, b: usize, adjacency: &mut Vec<BTreeSet<usize>>| {
        adjacency[a].insert(b);
        adjacency[b].insert(a);
        dials.push((a, b));
    };
    for i in 0..n {
        let next = (i + 1) % n;
        if !adjacency[i].contains(&next) {
            link(i, next, &mut adjacency);
        }
    }
    for i in 0..n {
        let mut added = 0;
        let mut tries = 0;
        while added < degree && tries < 100 * n {
            tries += 1;
            let j = rng.below(n);
            if j != i && !adjacency[i].contains(&j) {
                link(i, j, &mut adjacency);
                added += 1;
            }
        }
    }
    let mesh_edges = dials.len();
    let degrees: Vec<usize> = adjacency.iter().map(BTreeSet::len).collect();
    let (ecc0, reached) = eccentricity(&adjacency, 0);
    if reached != n {
        bail!("the mesh is not connected ({reached} of {n} reached from node 0)");
    }
    let diameter = (0..n)
        .map(|i| eccentricity(&adjacency, i).0)
        .max()
        .unwrap_or(0);
    for &(a, b) in &dials {
        nodes[a]
            .connect(&addrs[b])
            .await
            .with_context(|| format!("n{a:02} connecting to n{b:02}"))?;
    }

    progress(&t_setup, "mesh connected");
    // Contacts, and the invite plan: who invites whom.
    let mut contact_pairs: Vec<(usize, usize)> = Vec::new();
    let mut hub_edges = 0;
    if star {
        for (j, addr) in addrs.iter().enumerate().skip(1) {
            contact_pairs.push((0, j));
            if !adjacency[0].contains(&j) {
                nodes[0]
                    .connect(addr)
                    .await
                    .with_context(|| format!("n00 connecting to n{j:02}"))?;
                hub_edges += 1;
                adjacency[0].insert(j);
                adjacency[j].insert(0);
            }
        }
    } else {
        for (a, neighbours) in adjacency.iter().enumerate() {
            contact_pairs.extend(neighbours.iter().filter(|&&b| a < b).map(|&b| (a, b)));
        }
    }
    for &(a, b) in &contact_pairs {
        nodes[a].contact_add(&codes[b], None).await?;
        nodes[b].contact_add(&codes[a], None).await?;
    }
    let connected_ms = ms(t_setup.elapsed());

    progress(&t_setup, "contacts added");
    // The group: node 0 creates it; invites go one hop at a time (or all from node 0).
    let t_group = Instant::now();
    let mut invited = vec![false; n];
    invited[0] = true;
    let first: Vec<usize> = if star {
        (1..n).collect()
    } else {
        adjacency[0].iter().copied().collect()
    };
    for &j in &first {
        invited[j] = true;
    }
    let first_ids: Vec<String> = first.iter().map(|&j| peer_ids[j].clone()).collect();
    let group = nodes[0].group_create("fan-out", &first_ids).await?;
    lock(&state).group = Some(group.clone());
    let mut wave = first;
    let mut waves = 1;
    while !wave.is_empty() {
        let members = wave.clone();
        if !wait_until(&state, setup_timeout, |s| {
            members.iter().all(|&j| s.joined[j].contains(&group))
        })
        .await
        {
            let missing: Vec<usize> = {
                let s = lock(&state);
                members
                    .iter()
                    .copied()
                    .filter(|&j| !s.joined[j].contains(&group))
                    .collect()
            };
            shutdown(&nodes, &collectors).await;
            bail!("invites not taken within {setup_timeout:?} by nodes {missing:?}");
        }
        let mut next = Vec::new();
        for &inviter in &wave {
            for &j in &adjacency[inviter] {
                if !invited[j] {
                    invited[j] = true;
                    nodes[inviter].group_add(&group, &peer_ids[j]).await?;
                    next.push(j);
                }
            }
        }
        if !next.is_empty() {
            waves += 1;
        }
        wave = next;
    }
    let joined_ms = ms(t_group.elapsed());

    progress(&t_setup, "every invite taken");
    // Membership first: every node must list every member (ops travel by gossip and sync).
    let t_members = Instant::now();
    let mut converged = false;
    while !converged && t_members.elapsed() < setup_timeout {
        converged = true;
        for node in &nodes {
            if node.group_members(&group).await?.len() < n {
                converged = false;
                break;
            }
        }
        if !converged {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let members_ms = ms(t_members.elapsed());

    progress(&t_setup, "every node lists every member");
    // Warm-up: every node sends one message per round until every node has received at
    // least one from every other node (all sender keys are out). A message sent before
    // its sender sealed its key to some member stays unreadable for that member (see
    // BENCHMARKS.md), hence rounds rather than one message each.
    let t_warm = Instant::now();
    let mut rounds = 0;
    let mut warm_ok = false;
    while rounds < WARM_ROUNDS && !warm_ok {
        for (i, node) in nodes.iter().enumerate() {
            let seq = rounds * n + i;
            let at = Instant::now();
            node.send(&group, &format!("warm {seq}")).await?;
            lock(&state).phases[Phase::Warm as usize].sent_at[seq] = Some(at);
        }
        rounds += 1;
        warm_ok = wait_until(&state, WARM_ROUND_WAIT, |s| {
            s.phases[Phase::Warm as usize].keyed(n)
        })
        .await;
    }
    let warm_ms = ms(t_warm.elapsed());
    let mut member_counts = Vec::with_capacity(n);
    for node in &nodes {
        member_counts.push(node.group_members(&group).await?.len());
    }
    let setup = json!({
        "phase": "setup",
        "nodes": n,
        "invite": if star { "star" } else { "hops" },
        "seed": seed,
        "degree_flag": degree,
        "mesh_edges": mesh_edges,
        "hub_edges_added_for_invites": hub_edges,
        "node_degree": {"min": degrees.iter().min(), "max": degrees.iter().max(),
                        "mean": round3(2.0 * mesh_edges as f64 / n as f64)},
        "diameter_hops": diameter,
        "eccentricity_of_node0": ecc0,
        "contact_pairs": contact_pairs.len(),
        "invite_waves": waves,
        "connect_and_contacts_ms": round3(connected_ms),
        "all_joined_ms": round3(joined_ms),
        "members_converged": converged,
        "members_converged_ms": round3(members_ms),
        "members_seen": {"min": member_counts.iter().min(), "max": member_counts.iter().max()},
        "warmup_rounds": rounds,
        "warmup_every_key_out": warm_ok,
        "warmup_ms": round3(warm_ms),
        "warmup": warm_summary(&state),
    });
    println!("{setup}");
    if !warm_ok {
        // Who lacks whose warm-up message, and whether the store holds it anyway (an event
        // lost to lag) or not.
        let missing: Vec<(usize, Vec<usize>)> = {
            let s = lock(&state);
            let log = &s.phases[Phase::Warm as usize];
            (0..n)
                .map(|r| {
                    let senders = (0..n)
                        .filter(|&k| {
                            k != r
                                && !log.received[r]
                                    .iter()
                                    .enumerate()
                                    .any(|(seq, at)| at.is_some() && log.sender[seq] == k)
                        })
                        .collect();
                    (r, senders)
                })
                .filter(|(_, senders): &(usize, Vec<usize>)| !senders.is_empty())
                .collect()
        };
        for (r, senders) in &missing {
            let stored = nodes[*r]
                .messages(&group, Some(1000), None)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            let members = nodes[*r]
                .group_members(&group)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            eprintln!(
                "n{r:02} (neighbours {:?}, {members} members, {stored} messages stored) lacks warm-up messages of {senders:?}",
                adjacency[*r]
            );
        }
        shutdown(&nodes, &collectors).await;
        bail!("warm-up: not every node received every warm-up message");
    }

    // Latency: paced, round-robin senders; each send is its own task so pacing holds.
    let t_lat = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut sends = Vec::with_capacity(messages);
    for seq in 0..messages {
        tokio::time::sleep_until((t_lat + interval * seq as u32).into()).await;
        let node = nodes[seq % n].clone();
        let group = group.clone();
        let state = state.clone();
        sends.push(tokio::spawn(async move {
            let at = Instant::now();
            let result = node.send(&group, &format!("lat {seq}")).await;
            lock(&state).phases[Phase::Latency as usize].sent_at[seq] = Some(at);
            result.map(|_| ())
        }));
    }
    let mut send_errors = 0;
    for send in sends {
        if !matches!(send.await, Ok(Ok(()))) {
            send_errors += 1;
        }
    }
    let sending_s = t_lat.elapsed().as_secs_f64();
    let lat_ok = wait_until(&state, DELIVERY_TIMEOUT, |s| {
        s.phases[Phase::Latency as usize].complete()
    })
    .await;
    let (lat_report, lat_missing) = {
        let s = lock(&state);
        let log = &s.phases[Phase::Latency as usize];
        let d = delivery(log);
        // Split by distance: receivers connected to the sender get its publish directly
        // (flood publish); the others only through forwarding (or sync).
        let (mut near, mut far) = (Vec::new(), Vec::new());
        for (seq, sent) in log.sent_at.iter().enumerate() {
            let Some(sent) = sent else { continue };
            for (node, got) in log.received.iter().enumerate() {
                if let Some(at) = got[seq]
                    && node != log.sender[seq]
                {
                    let lat = ms(at.saturating_duration_since(*sent));
                    if adjacency[log.sender[seq]].contains(&node) {
                        near.push(lat);
                    } else {
                        far.push(lat);
                    }
                }
            }
        }
        near.sort_by(f64::total_cmp);
        far.sort_by(f64::total_cmp);
        (
            json!({
                "phase": "latency",
                "latency_ms_connected_to_sender": latency_json(&near),
                "latency_ms_not_connected_to_sender": latency_json(&far),
                "messages": messages,
                "rate_per_s": rate,
                "sending_s": round3(sending_s),
                "send_errors": send_errors,
                "receivers_per_message": n - 1,
                "latency_ms": latency_json(&d.latencies),
                "all_delivered": lat_ok,
                "missing_pairs": d.missing,
                "messages_with_missing": d.missing_messages.len(),
                "duplicates": log.duplicates,
                "lagged_events": s.lagged,
            }),
            d.missing,
        )
    };
    println!("{lat_report}");

    // Burst: every node sends its share back to back, all nodes at once.
    let t_burst = Instant::now();
    let mut senders = Vec::with_capacity(n);
    for (i, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let group = group.clone();
        let state = state.clone();
        senders.push(tokio::spawn(async move {
            let mut errors = 0usize;
            for seq in (i..burst).step_by(n) {
                if t_burst.elapsed() > BURST_SEND_TIMEOUT {
                    break;
                }
                let at = Instant::now();
                match node.send(&group, &format!("burst {seq}")).await {
                    Ok(_) => lock(&state).phases[Phase::Burst as usize].sent_at[seq] = Some(at),
                    Err(_) => errors += 1,
                }
            }
            errors
        }));
    }
    let mut burst_errors = 0;
    for sender in senders {
        burst_errors += sender.await.unwrap_or(usize::MAX / 2);
    }
    let burst_sending_s = t_burst.elapsed().as_secs_f64();
    let burst_ok = wait_until(&state, DELIVERY_TIMEOUT, |s| {
        s.phases[Phase::Burst as usize].complete()
    })
    .await;
    let (burst_report, burst_missing) = {
        let s = lock(&state);
        let log = &s.phases[Phase::Burst as usize];
        let d = delivery(log);
        let sent = log.sent_at.iter().flatten().count();
        let span = match (d.first_send, d.last_delivery) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => f64::NAN,
        };
        let mut per_receiver: Vec<f64> = d
            .receiver_done
            .iter()
            .flatten()
            .filter_map(|done| {
                let first = d.first_send?;
                Some(done.saturating_duration_since(first).as_secs_f64())
            })
            .collect();
        per_receiver.sort_by(f64::total_cmp);
        (
            json!({
                "phase": "burst",
                "messages": burst,
                "sent": sent,
                "send_errors": burst_errors,
                "sending_s": round3(burst_sending_s),
                "accepted_per_s": round3(sent as f64 / burst_sending_s),
                "all_delivered": burst_ok,
                "first_send_to_last_delivery_s": round3(span),
                "delivered_to_all_per_s": if burst_ok { Some(round3(sent as f64 / span)) } else { None },
                "receiver_done_s": {"fastest": per_receiver.first().copied().map(round3),
                                    "slowest": per_receiver.last().copied().map(round3)},
                "latency_ms": latency_json(&d.latencies),
                "missing_pairs": d.missing,
                "messages_with_missing": d.missing_messages.len(),
                "duplicates": log.duplicates,
                "lagged_events": s.lagged,
            }),
            d.missing,
        )
    };
    println!("{burst_report}");

    let pid = std::process::id();
    let (rss, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let (duplicates, lagged, unexpected, warm_end) = {
        let s = lock(&state);
        let warm = delivery(&s.phases[Phase::Warm as usize]);
        (
            s.phases.iter().map(|p| p.duplicates).sum::<usize>(),
            s.lagged,
            s.unexpected,
            // Late warm-up messages arrive by now; what is still missing never will.
            json!({"pairs_sent": warm.latencies.len() + warm.missing,
                   "pairs_never_delivered": warm.missing}),
        )
    };
    shutdown(&nodes, &collectors).await;
    let summary = json!({
        "phase": "summary",
        "benchmark": "group",
        "transport": "tcp loopback, noise, yamux, gossipsub; in-process nodes, sled on disk",
        "nodes": n,
        "cores": std::thread::available_parallelism().map(|c| c.get()).unwrap_or(0),
        "latency_p50_ms": lat_report["latency_ms"]["p50"],
        "latency_p99_ms": lat_report["latency_ms"]["p99"],
        "burst_delivered_to_all_per_s": burst_report["delivered_to_all_per_s"],
        "missing_pairs": lat_missing + burst_missing,
        "duplicates": duplicates,
        "lagged_events": lagged,
        "unexpected_texts": unexpected,
        "warmup_at_end": warm_end,
        "process_rss_kib": rss,
        "process_peak_rss_kib": hwm,
    });
    println!("{summary}");
    if lat_missing + burst_missing > 0 || duplicates > 0 {
        bail!(
            "{} (message, receiver) pairs missing, {duplicates} duplicates",
            lat_missing + burst_missing
        );
    }
    Ok(())
}

fn warm_summary(state: &Shared) -> Value {
    let s = lock(state);
    let d = delivery(&s.phases[Phase::Warm as usize]);
    let sent = d.latencies.len() + d.missing;
    // Pairs not delivered when the warm-up ended (late, or never: see the summary).
    json!({"pairs_sent": sent, "latency_ms": latency_json(&d.latencies),
           "pairs_not_delivered_yet": d.missing, "messages_not_delivered_everywhere": d.missing_messages.len()})
}

/// Stops every node (all at once) and waits for the collectors to see them go.
async fn shutdown(nodes: &[Node], collectors: &[tokio::task::JoinHandle<()>]) {
    let stops: Vec<_> = nodes
        .iter()
        .map(|node| {
            let node = node.clone();
            tokio::spawn(async move { node.shutdown().await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for stop in stops {
        let _ = tokio::time::timeout_at(deadline, stop).await;
    }
    // One deadline for all of them: the event streams of 128 nodes waited for one after
    // the other took up to 128 × 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !collectors.iter().all(|c| c.is_finished()) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// A line on stderr as set-up goes (it can take minutes with many nodes), so a run that
/// stalls shows where.
fn progress(since: &Instant, what: &str) {
    eprintln!("[{:>7.1} s] {what}", since.elapsed().as_secs_f64());
}
