//! Repair benchmark (issue 4): the time and bytes two real nodes need to reconcile a group
//! whose halves diverged by N messages. Prints one JSON object; exits with status 1 if,
//! after the repair, a message is missing or doubled, or the two sides list them in a
//! different order.
//!
//! Two `bonghwa rpc` processes (`bonghwa-node`), Ana and Ben, each in its own network
//! namespace, joined by one veth link (`netns::Chain`), TCP only, mDNS off. They become
//! contacts, Ana creates a group with Ben, and each sends one message (so both hold the
//! other's sender key). Then the link is taken down and the TCP connection closed at both
//! ends (`ss -K`), and both nodes must report `peer_disconnected`. Each side sends N/2
//! group messages, pipelined, that cannot cross. Then the link comes back up, Ana
//! `connect`s to Ben, and the clock runs until both hold all N: the time at which each
//! node has received the other's N/2 (its `message_received` events, or its unread count
//! in `chats` if events were lost), and the bytes on the link (both directions, every
//! frame: connection set-up, gossip and sync alike, so an upper bound of what sync costs).
//!
//! With `--linger` the link only goes down: nothing closes the connection, and the nodes
//! do not notice a dead link by themselves (libp2p's ping reports failures but no longer
//! closes connections, and the node does not act on them), so they go on counting each
//! other as connected, gossip what they send into the dead connection, and nobody dials
//! at the heal: this measures a short outage, the one TCP rides out. (A link taken down on
//! the host itself makes TCP retry every 0.5 s instead of backing off, so recovery after
//! the heal is quicker here than after a break further along the path.)
//!
//! Run (as root, with iproute2): `cargo run --release -p bonghwa-tests --bin bench-repair`
//! Flags: `--messages N` (10000, split evenly between the sides), `--timeout S` (600, for
//! the repair), `--outage S` (0: keep the link down at least this long), `--linger`,
//! `--keep` (keep the data dirs and node logs).
//!
//! After the repair the link is watched until it goes quiet (less than 2 KiB in 2 s, at
//! most 60 s), for what still crosses once both sides hold everything (sync transfers
//! already queued). The node logs give how many sync fetches were answered and how many
//! items they brought that the node lacked; the rest came by gossip or by sync pushes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bonghwa_tests::bench::{arg, ms, node_bin};
use bonghwa_tests::netns::{self, Chain, LinkBytes};
use bonghwa_tests::process::{Launch, RpcProcess};
use serde_json::{Value, json};

/// The link between the two hosts (`Chain` link 0).
const LINK: usize = 0;
/// How long one look at a node's output may wait for a line.
const LOOK: Duration = Duration::from_millis(5);
/// Lines read from one node per look at most, so that the other is looked at too.
const LINES_PER_LOOK: usize = 4_096;
/// How often the unread counts are read while waiting (in case events were lost).
const UNREAD_POLL: Duration = Duration::from_millis(250);
/// Dial attempts after the heal (the link is up before the first; a failure is retried).
const CONNECT_TRIES: usize = 50;
/// Pause between dial attempts.
const CONNECT_PAUSE: Duration = Duration::from_millis(100);
/// After the repair, the link counts as quiet once less than this crossed in one window.
const QUIET_BYTES: u64 = 2_048;
/// The window for [`QUIET_BYTES`].
const QUIET_WINDOW: Duration = Duration::from_secs(2);
/// How long to wait for the link to go quiet at most.
const QUIET_MAX: Duration = Duration::from_secs(60);
/// A page of `messages` (the node's `MAX_PAGE`).
const PAGE: usize = 1_000;

/// One side of the group, as the benchmark sees it.
struct Side {
    node: RpcProcess,
    /// Group messages from the other side received since the heal (events).
    received: usize,
    /// The group chat's unread count just before the heal.
    unread_before: u64,
    /// The latest unread count read.
    unread: u64,
    /// Events the node's subscriber lost (`lagged`).
    lagged: u64,
    /// When it held all of the other side's messages (since the heal), and how we saw it.
    done: Option<(Duration, &'static str)>,
}

/// One message as listed by `messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    id: String,
    from: String,
    text: String,
    status: String,
}

fn bytes_json(b: LinkBytes) -> Value {
    json!({"ana_to_ben": b.rightward, "ben_to_ana": b.leftward, "total": b.total()})
}

/// The group chat's unread count.
fn unread(node: &mut RpcProcess, group: &str) -> anyhow::Result<u64> {
    let chats = node.call("chats", json!({}))?;
    chats
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == group))
        .and_then(|c| c["unread"].as_u64())
        .with_context(|| format!("{}: no group {group} in chats: {chats}", node.name))
}

/// The group's whole history at `node`, oldest first, a page at a time.
fn history(node: &mut RpcProcess, group: &str, expected: usize) -> anyhow::Result<Vec<Listed>> {
    let mut pages: Vec<Vec<Listed>> = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..expected / PAGE + 8 {
        let mut params = json!({"chat": group, "limit": PAGE});
        if let Some(id) = &before {
            params["before"] = json!(id);
        }
        let page: Vec<Listed> = node
            .call("messages", params)?
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| Listed {
                        id: m["id"].as_str().unwrap_or_default().to_owned(),
                        from: m["from"].as_str().unwrap_or_default().to_owned(),
                        text: m["text"].as_str().unwrap_or_default().to_owned(),
                        status: m["status"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(oldest) = page.first() else {
            break;
        };
        before = Some(oldest.id.clone());
        let full = page.len() == PAGE;
        pages.push(page);
        if !full {
            break;
        }
    }
    Ok(pages.into_iter().rev().flatten().collect())
}

/// Reads what `side` has printed (waiting up to `within` for the first line), counting
/// group messages from `other`.
fn look(side: &mut Side, group: &str, other: &str, within: Duration) -> anyhow::Result<()> {
    let mut wait = within;
    for _ in 0..LINES_PER_LOOK {
        let Some(event) = side.node.try_event(wait, |_| true)? else {
            return Ok(());
        };
        wait = Duration::ZERO;
        if event["kind"] == "message_received"
            && event["chat"] == group
            && event["message"]["from"] == other
        {
            side.received += 1;
        } else if event["kind"] == "lagged" {
            side.lagged += event["missed"].as_u64().unwrap_or(0);
        }
    }
    Ok(())
}

/// Waits (up to `within`) until both nodes report that the connection to the other closed;
/// the time it took.
fn wait_disconnected(sides: &mut [Side; 2], within: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let ids = [sides[0].node.peer_id(), sides[1].node.peer_id()];
    let mut gone = [false, false];
    let rounds = within.as_millis() / LOOK.as_millis() + 1;
    for _ in 0..rounds {
        if t.elapsed() > within {
            break;
        }
        for (i, side) in sides.iter_mut().enumerate() {
            let other = ids[1 - i].as_str();
            if !gone[i] {
                gone[i] = side
                    .node
                    .try_event(LOOK, |p| {
                        p["kind"] == "peer_disconnected" && p["peer_id"] == other
                    })?
                    .is_some();
            }
        }
        if gone == [true, true] {
            return Ok(t.elapsed());
        }
    }
    bail!(
        "the nodes did not report the lost connection within {within:?} \
         (ana noticed: {}, ben noticed: {})",
        gone[0],
        gone[1]
    )
}

/// The node log's "group items fetched" lines (one per answered sync fetch): how many,
/// and the sum of their `new=` (items the node did not hold yet; pushes it received are
/// not logged). `None` if the log cannot be read.
fn fetched_by_sync(data_dir: &Path) -> Option<(u64, u64)> {
    let log = std::fs::read_to_string(data_dir.with_extension("log")).ok()?;
    let (mut fetches, mut new) = (0, 0);
    for line in log.lines().filter(|l| l.contains("group items fetched")) {
        fetches += 1;
        let line = without_colours(line);
        let Some(at) = line.find("new=") else {
            continue;
        };
        let digits: String = line[at + 4..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        new += digits.parse::<u64>().unwrap_or(0);
    }
    Some((fetches, new))
}

/// `line` without ANSI colour sequences (`ESC [ … m`), which the node's log has.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn main() -> anyhow::Result<ExitCode> {
    bonghwa_tests::bench::exit_on_help(include_str!("bench_repair.rs"));
    let n = arg("--messages", 10_000).max(2);
    let half = n / 2;
    let n = half * 2;
    let timeout = Duration::from_secs(arg("--timeout", 600) as u64);
    let args: Vec<String> = std::env::args().collect();
    let linger = args.iter().any(|a| a == "--linger");
    let outage = Duration::from_secs(arg("--outage", 0) as u64);
    if !netns::available("bench-repair") {
        bail!("bench-repair needs network namespaces (root and iproute2)");
    }
    let bin = node_bin()?;
    let tmp = tempfile::tempdir()?;
    let (root, _cleanup) = if args.iter().any(|a| a == "--keep") {
        let root = tmp.keep();
        eprintln!("data dirs and logs kept in {}", root.display());
        (root, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };

    // Two hosts, one link; the namespaces go when `chain` is dropped, on error too.
    let chain = Chain::create(2)?;
    let ips = [chain.ip_of(0, true), chain.ip_of(1, false)];
    let mut sides = Vec::new();
    for (i, name) in ["ana", "ben"].into_iter().enumerate() {
        let launch = Launch {
            netns: Some(chain.hosts[i].clone()),
            mdns: false,
            listen: Some(format!("/ip4/{}/tcp/0", ips[i])),
            ..Launch::default()
        };
        let node = RpcProcess::spawn(&bin, name, &root.join(name), &launch)?;
        sides.push(Side {
            node,
            received: 0,
            unread_before: 0,
            unread: 0,
            lagged: 0,
            done: None,
        });
    }
    let mut sides: [Side; 2] = sides.try_into().map_err(|_| anyhow::anyhow!("two nodes"))?;
    let ids = [sides[0].node.peer_id(), sides[1].node.peer_id()];
    let ben_addr = sides[1].node.tcp_addr_on(&ips[1])?;

    // Contacts, a connection, the group, and one message each way (sender keys).
    let codes = [sides[0].node.code(), sides[1].node.code()];
    sides[0]
        .node
        .call("contact_add", json!({"code": codes[1]}))?;
    sides[1]
        .node
        .call("contact_add", json!({"code": codes[0]}))?;
    sides[0].node.call("connect", json!({"addr": ben_addr}))?;
    let created = sides[0].node.call(
        "group_create",
        json!({"name": "repair", "members": [ids[1]]}),
    )?;
    let group = created["group_id"]
        .as_str()
        .context("group_create gave no group_id")?
        .to_owned();
    sides[1].node.wait_event("the invite", |p| {
        p["kind"] == "group_changed" && p["group"] == group.as_str()
    })?;
    for (from, to, text) in [(0, 1, "ana: hello"), (1, 0, "ben: hello")] {
        sides[from]
            .node
            .call("send", json!({"to": group, "text": text}))?;
        sides[to].node.wait_event(text, |p| {
            p["kind"] == "message_received"
                && p["chat"] == group.as_str()
                && p["message"]["text"] == text
        })?;
    }

    // The partition: link down, and (unless --linger) the connection closed at both ends.
    chain.cut(LINK)?;
    let t_cut = Instant::now();
    let noticed = if linger {
        None
    } else {
        chain.close_connections(LINK)?;
        Some(wait_disconnected(&mut sides, bonghwa_tests::WAIT)?)
    };

    // The divergence: N/2 pipelined sends on each side, then every answer.
    let t = Instant::now();
    for i in 0..half {
        for (s, tag) in sides.iter_mut().zip(["a", "b"]) {
            let request = json!({"jsonrpc": "2.0", "id": format!("{tag}{i}"), "method": "send",
                "params": {"to": group, "text": format!("{tag} {i:05}")}});
            s.node.write_raw(&request.to_string())?;
        }
    }
    for side in &mut sides {
        for _ in 0..half {
            let reply = side.node.next_reply()?;
            if reply.get("error").is_some() || reply["result"]["id"].as_str().is_none() {
                bail!("{}: a send failed: {reply}", side.node.name);
            }
        }
    }
    let divergence = t.elapsed();
    // The split is real: nothing crossed it.
    for side in &mut sides {
        side.unread_before = unread(&mut side.node, &group)?;
        side.unread = side.unread_before;
        if side.unread_before != 1 {
            bail!(
                "{}: {} unread group messages before the heal, expected only the other's hello",
                side.node.name,
                side.unread_before
            );
        }
    }

    // An outage of at least --outage seconds (a scenario parameter, not a wait for
    // something): with --linger it decides what TCP and gossipsub still hold at the heal.
    std::thread::sleep(outage.saturating_sub(t_cut.elapsed()));

    // With --linger: do the nodes still count each other as connected?
    let peers = sides[0].node.call("peers", json!({}))?;
    let connected_at_heal = peers
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["peer_id"] == ids[1].as_str()));

    // The heal, and the clock. Ana dials Ben unless the old connection is still up.
    let bytes_before = chain.link_bytes(LINK)?;
    let t0 = Instant::now();
    let outage_time = t_cut.elapsed();
    chain.mend(LINK)?;
    let mut connect_tries = 0;
    let mut connected = connected_at_heal;
    while connect_tries < CONNECT_TRIES && !connected {
        connect_tries += 1;
        let answer = sides[0]
            .node
            .call_raw("connect", json!({"addr": ben_addr}))?;
        connected = answer.get("error").is_none();
        if !connected {
            eprintln!(
                "connect after the heal failed, retrying: {}",
                answer["error"]
            );
            // Pacing between dials; nothing to wait on when a dial failed.
            std::thread::sleep(CONNECT_PAUSE);
        }
    }
    if !connected {
        bail!("ana could not connect to ben after {CONNECT_TRIES} tries");
    }
    let connect_time = t0.elapsed();

    let deadline = t0 + timeout;
    let mut last_poll = Instant::now();
    let rounds = 8 * timeout.as_millis() / LOOK.as_millis() + 1;
    for _ in 0..rounds {
        if sides.iter().all(|s| s.done.is_some()) || Instant::now() > deadline {
            break;
        }
        let poll = last_poll.elapsed() >= UNREAD_POLL;
        if poll {
            last_poll = Instant::now();
        }
        for (i, side) in sides.iter_mut().enumerate() {
            if side.done.is_some() {
                continue;
            }
            look(side, &group, &ids[1 - i], LOOK)?;
            if side.received >= half {
                side.done = Some((t0.elapsed(), "events"));
            } else if poll {
                side.unread = unread(&mut side.node, &group)?;
                if side.unread >= side.unread_before + half as u64 {
                    side.done = Some((t0.elapsed(), "unread count"));
                }
            }
        }
    }
    let repair = sides
        .iter()
        .map(|s| s.done.map(|(d, _)| d))
        .collect::<Option<Vec<_>>>()
        .and_then(|d| d.into_iter().max());
    let bytes_repair = chain.link_bytes(LINK)?.since(bytes_before);

    // What else crossed until the link went quiet (sync transfers still queued, gossip).
    let t_quiet = Instant::now();
    let mut last = chain.link_bytes(LINK)?;
    let mut quiet_after = None;
    while repair.is_some() && t_quiet.elapsed() < QUIET_MAX {
        // Sampling a counter: there is no event for "nothing more is sent".
        std::thread::sleep(QUIET_WINDOW);
        let now = chain.link_bytes(LINK)?;
        if now.since(last).total() < QUIET_BYTES {
            quiet_after = Some(t0.elapsed().saturating_sub(QUIET_WINDOW));
            break;
        }
        last = now;
    }
    let bytes_quiet = last.since(bytes_before);

    // Both sides hold everything once, and list it in the same order.
    let expected_total = n + 2;
    let mut problems: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    for side in &mut sides {
        if side.received > half {
            problems.push(format!(
                "{} reported {} message_received events for the other side's {half} messages",
                side.node.name, side.received
            ));
        }
        if side.done.is_none() {
            side.unread = unread(&mut side.node, &group)?;
            problems.push(format!(
                "{} had {} of the other side's {half} messages after {timeout:?} \
                 ({} events seen)",
                side.node.name,
                side.unread.saturating_sub(side.unread_before),
                side.received
            ));
        }
        listed.push(history(&mut side.node, &group, expected_total)?);
    }
    let mut own_status = Vec::new();
    for (i, messages) in listed.iter().enumerate() {
        let name = &sides[i].node.name;
        let mut texts = BTreeMap::<&str, usize>::new();
        let unique_ids: BTreeSet<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        for m in messages {
            *texts.entry(m.text.as_str()).or_default() += 1;
        }
        if unique_ids.len() != messages.len() {
            problems.push(format!(
                "{name} lists {} messages but {} distinct ids",
                messages.len(),
                unique_ids.len()
            ));
        }
        let mut missing = Vec::new();
        let mut doubled = Vec::new();
        let all = (0..half)
            .flat_map(|i| [format!("a {i:05}"), format!("b {i:05}")])
            .chain(["ana: hello".to_owned(), "ben: hello".to_owned()]);
        for text in all {
            match texts.get(text.as_str()).copied().unwrap_or(0) {
                0 => missing.push(text),
                1 => {}
                _ => doubled.push(text),
            }
        }
        if messages.len() != expected_total || !missing.is_empty() || !doubled.is_empty() {
            problems.push(format!(
                "{name} lists {} messages (expected {expected_total}); missing {} (first: {:?}), \
                 doubled {} (first: {:?})",
                messages.len(),
                missing.len(),
                missing.first(),
                doubled.len(),
                doubled.first()
            ));
        }
        let mut statuses = BTreeMap::<&str, usize>::new();
        for m in messages.iter().filter(|m| m.from == ids[i]) {
            *statuses.entry(m.status.as_str()).or_default() += 1;
        }
        own_status.push(json!(statuses));
    }
    let same_order = listed[0]
        .iter()
        .map(|m| (&m.id, &m.text))
        .eq(listed[1].iter().map(|m| (&m.id, &m.text)));
    if !same_order {
        let first_difference = listed[0]
            .iter()
            .zip(&listed[1])
            .position(|(a, b)| a.id != b.id);
        problems.push(format!(
            "the two histories differ (lengths {} and {}, first difference at {first_difference:?})",
            listed[0].len(),
            listed[1].len()
        ));
    }
    let fetched = [
        fetched_by_sync(&sides[0].node.data_dir),
        fetched_by_sync(&sides[1].node.data_dir),
    ];
    let done = |s: &Side| s.done.map(|(d, _)| d.as_secs_f64());
    let by = |s: &Side| s.done.map(|(_, by)| by);
    let report = json!({
        "benchmark": "repair",
        "setup": "two bonghwa rpc processes in two network namespaces joined by one veth link; \
                  TCP, noise, yamux; mDNS off",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map(|c| c.get()).unwrap_or(0),
        "messages": n,
        "per_side": half,
        "partition": if linger { "link down only" } else { "link down, TCP connection closed (ss -K)" },
        "disconnect_noticed_ms": noticed.map(ms),
        "connected_at_heal": connected_at_heal,
        "divergence_s": divergence.as_secs_f64(),
        "outage_s": outage_time.as_secs_f64(),
        "heal_connect_ms": ms(connect_time),
        "heal_connect_tries": connect_tries,
        "repair_s": repair.map(|d| d.as_secs_f64()),
        "done_s": {"ana": done(&sides[0]), "ben": done(&sides[1])},
        "done_seen_by": {"ana": by(&sides[0]), "ben": by(&sides[1])},
        "received_events": {"ana": sides[0].received, "ben": sides[1].received},
        "lagged_events": {"ana": sides[0].lagged, "ben": sides[1].lagged},
        "link_bytes_to_done": bytes_json(bytes_repair),
        "link_bytes_to_done_per_message": bytes_repair.total() as f64 / n as f64,
        "link_bytes_until_quiet": bytes_json(bytes_quiet),
        "quiet_after_s": quiet_after.map(|d| d.as_secs_f64()),
        "sync_fetches_from_log": {
            "ana": fetched[0].map(|(f, n)| json!({"fetches": f, "new_items": n})),
            "ben": fetched[1].map(|(f, n)| json!({"fetches": f, "new_items": n})),
        },
        "own_messages_by_status": {"ana": own_status[0], "ben": own_status[1]},
        "history_len": {"ana": listed[0].len(), "ben": listed[1].len()},
        "same_order": same_order,
        "ok": problems.is_empty(),
        "problems": problems,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    for side in sides {
        let name = side.node.name.clone();
        if let Err(e) = side.node.shutdown() {
            eprintln!("{name}: shutdown: {e:#}");
        }
    }
    Ok(if report["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
