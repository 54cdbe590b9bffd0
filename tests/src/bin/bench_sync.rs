//! History-repair benchmark: the `/bonghwa/sync/1` reconciliation protocol itself, in one
//! process. Two `SyncSet`s share some messages and each holds messages the other lacks;
//! one side initiates, the other responds, until settled. Every message goes through the
//! real wire frames (`SyncRequest::Reconcile` / `SyncResponse::Reconcile`, encoded and
//! decoded with their limits checked), so the byte counts are real frame bytes (body plus
//! the 4-byte length prefix of `net/codec.rs`; transport overhead — Noise, Yamux, TCP —
//! not included). Not over the network, no store, no node: sync is not wired into the node
//! yet. Then the follow-up is framed the same way: `Fetch` requests for the ids the
//! initiator needs (at most `MAX_FETCH_IDS` each), and, with an assumed envelope size, the
//! `Envelopes` answers and the `Push`es of what the responder lacks. At the end each side
//! adds what it learned and the two sets must equal the union (exit status 1 if not), and a
//! second session between the repaired sets must settle in one round.
//!
//! Prints one JSON object per case: `diverged` (`--shared` common, `--diverged` split evenly
//! between the sides, the divergent messages written after the shared history, as during a
//! partition), `diverged_interleaved` (same counts, divergent messages scattered through the
//! whole history), `identical` (30,000 on both sides) and `small` (10 differences among
//! 100,000, scattered).
//!
//! Run: `cargo build --release -p bonghwa-tests --bins && target/release/bench-sync`
//! Flags: `--shared N` (20000), `--diverged N` (10000), `--seed N` (1), `--repeat N` (5),
//! `--envelope-bytes N` (1024, the assumed size of one encoded group envelope).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use bonghwa_core::crypto::group::GroupId;
use bonghwa_core::model::{Hlc, MessageId};
use bonghwa_core::proto::sync::{Initiator, Item, Limits, SyncSet, respond};
use bonghwa_core::wire::group::{
    MAX_FETCH_IDS, MAX_RECONCILE_FRAME_BYTES, SyncRequest, SyncResponse, pack_envelopes,
};
use bonghwa_tests::bench::arg;
use serde_json::{Value, json};

/// The length prefix every `/bonghwa/*` frame carries (`net/codec.rs`).
const PREFIX: usize = 4;
/// Start of the simulated history (ms since the epoch).
const BASE_MS: u64 = 1_790_000_000_000;
/// Average milliseconds between two messages of the simulated history.
const SPACING_MS: u64 = 10;

/// A tiny seeded generator (xorshift64*), so a seed always gives the same sets.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A message with a random id (as real ids are) at a random time in `[from, from+span)`.
    fn item(&mut self, from: u64, span: u64) -> Item {
        let mut id = [0u8; 32];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        Item {
            hlc: Hlc {
                ms: from + self.below(span),
                counter: self.below(2) as u32,
            },
            id: MessageId(id),
        }
    }
}

/// Where the divergent messages sit in time.
#[derive(Clone, Copy)]
enum Layout {
    /// After the shared history (written during a partition).
    Tail,
    /// Anywhere in the history.
    Interleaved,
}

struct Case {
    name: &'static str,
    shared: usize,
    only_a: usize,
    only_b: usize,
    layout: Layout,
}

/// The three piles: messages both hold, only the initiator (A), only the responder (B).
fn piles(case: &Case, rng: &mut Rng) -> (Vec<Item>, Vec<Item>, Vec<Item>) {
    let history = case.shared as u64 * SPACING_MS;
    let partition = (case.only_a + case.only_b) as u64 * SPACING_MS;
    let shared: Vec<Item> = (0..case.shared)
        .map(|_| rng.item(BASE_MS, history))
        .collect();
    let (from, span) = match case.layout {
        Layout::Tail => (BASE_MS + history, partition),
        Layout::Interleaved => (BASE_MS, history + partition),
    };
    let only_a = (0..case.only_a).map(|_| rng.item(from, span)).collect();
    let only_b = (0..case.only_b).map(|_| rng.item(from, span)).collect();
    (shared, only_a, only_b)
}

/// What one reconciliation session cost and taught the initiator.
#[derive(Default)]
struct Session {
    rounds: u32,
    /// Frame bytes per round trip: (request, response).
    per_round: Vec<(usize, usize)>,
    largest_frame: usize,
    have: Vec<MessageId>,
    need: Vec<MessageId>,
}

/// One whole session, A initiating, every message through the real frames both ways.
fn reconcile(a: &SyncSet, b: &SyncSet, group_id: GroupId) -> anyhow::Result<Session> {
    let limits = Limits::default();
    let mut session = Session::default();
    let mut initiator = Initiator::new(limits);
    let mut message = initiator.initiate(a);
    loop {
        // Initiator → responder.
        let request = SyncRequest::Reconcile { group_id, message }.encode();
        let SyncRequest::Reconcile {
            message: received, ..
        } = SyncRequest::decode(&request)?
        else {
            bail!("a reconcile request decoded as another frame");
        };
        let reply = respond(b, &received, &limits)?;
        // Responder → initiator.
        let response = SyncResponse::Reconcile(reply).encode();
        let SyncResponse::Reconcile(reply) = SyncResponse::decode(&response)? else {
            bail!("a reconcile response decoded as another frame");
        };
        session
            .per_round
            .push((request.len() + PREFIX, response.len() + PREFIX));
        session.largest_frame = session.largest_frame.max(request.len()).max(response.len());
        let round = initiator.reconcile(a, &reply)?;
        session.have.extend(round.have);
        session.need.extend(round.need);
        match round.next {
            Some(next) => message = next,
            None => break,
        }
    }
    session.rounds = initiator.rounds();
    Ok(session)
}

/// Bytes of the follow-up, framed for real: `Fetch` requests naming the needed ids, and,
/// with every envelope assumed to be `envelope_bytes` long, the `Envelopes` answers, the
/// `Push`es of what the responder lacks and their `Accepted` answers.
fn transfer(session: &Session, group_id: GroupId, envelope_bytes: usize) -> anyhow::Result<Value> {
    let mut fetch_frames = 0usize;
    let mut fetch_bytes = 0usize;
    let mut envelope_frames_bytes = 0usize;
    for ids in session.need.chunks(MAX_FETCH_IDS) {
        let request = SyncRequest::Fetch {
            group_id,
            ids: ids.to_vec(),
        }
        .encode();
        let SyncRequest::Fetch { ids: asked, .. } = SyncRequest::decode(&request)? else {
            bail!("a fetch decoded as another frame");
        };
        fetch_frames += 1;
        fetch_bytes += request.len() + PREFIX;
        // The answer, in as many pages as the frame limit needs (one, at 1 KiB each).
        let mut left = asked.len();
        while left > 0 {
            let (page, consumed) = pack_envelopes((0..left).map(|_| vec![0xe5; envelope_bytes]));
            ensure!(
                consumed > 0,
                "an envelope of {envelope_bytes} bytes fits no page"
            );
            left -= consumed;
            let response = SyncResponse::Envelopes(page).encode();
            SyncResponse::decode(&response)?;
            envelope_frames_bytes += response.len() + PREFIX;
        }
    }
    let mut push_frames = 0usize;
    let mut push_bytes = 0usize;
    let mut left = session.have.len();
    let accepted = SyncResponse::Accepted.encode().len() + PREFIX;
    while left > 0 {
        let (page, consumed) = pack_envelopes((0..left).map(|_| vec![0xe5; envelope_bytes]));
        ensure!(
            consumed > 0,
            "an envelope of {envelope_bytes} bytes fits no page"
        );
        left -= consumed;
        let request = SyncRequest::Push {
            group_id,
            envelopes: page,
        }
        .encode();
        SyncRequest::decode(&request)?;
        push_frames += 1;
        push_bytes += request.len() + PREFIX;
    }
    Ok(json!({
        "fetch_requests": fetch_frames,
        "fetch_request_bytes": fetch_bytes,
        "assumed_envelope_bytes": envelope_bytes,
        "envelopes_answer_bytes": envelope_frames_bytes,
        "push_requests": push_frames,
        "push_request_bytes": push_bytes,
        "accepted_answer_bytes": push_frames * accepted,
    }))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ids(items: &[Item]) -> BTreeSet<MessageId> {
    items.iter().map(|item| item.id).collect()
}

fn run_case(case: &Case, seed: u64, repeat: usize, envelope_bytes: usize) -> anyhow::Result<Value> {
    let mut rng = Rng::new(seed);
    let (shared, only_a, only_b) = piles(case, &mut rng);
    let group_id = GroupId([0x42; 32]);
    let a_items: Vec<Item> = shared.iter().chain(&only_a).copied().collect();
    let b_items: Vec<Item> = shared.iter().chain(&only_b).copied().collect();

    let mut build_ms = Vec::new();
    let mut reconcile_ms = Vec::new();
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let a = SyncSet::new(a_items.iter().copied());
        let b = SyncSet::new(b_items.iter().copied());
        build_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let session = reconcile(&a, &b, group_id)?;
        reconcile_ms.push(t.elapsed().as_secs_f64() * 1e3);
        last = Some((a, b, session));
    }
    let (a, b, session) = last.context("no repetition ran")?;

    // The initiator learned exactly the differences, each once.
    let a_ids = ids(a.items());
    let b_ids = ids(b.items());
    let have: BTreeSet<MessageId> = session.have.iter().copied().collect();
    let need: BTreeSet<MessageId> = session.need.iter().copied().collect();
    let mut failures = Vec::new();
    if have.len() != session.have.len() || need.len() != session.need.len() {
        failures.push("have or need repeats an id");
    }
    if have != a_ids.difference(&b_ids).copied().collect() {
        failures.push("have is not exactly what only the initiator holds");
    }
    if need != b_ids.difference(&a_ids).copied().collect() {
        failures.push("need is not exactly what only the responder holds");
    }
    // Each side adds what it received; both must then hold the union.
    let by_id: BTreeMap<MessageId, Item> = a_items
        .iter()
        .chain(&b_items)
        .map(|item| (item.id, *item))
        .collect();
    let mut a_after = a.items().to_vec();
    a_after.extend(session.need.iter().filter_map(|id| by_id.get(id)));
    let mut b_after = b.items().to_vec();
    b_after.extend(session.have.iter().filter_map(|id| by_id.get(id)));
    let a_after = SyncSet::new(a_after);
    let b_after = SyncSet::new(b_after);
    let union: BTreeSet<MessageId> = ids(&a_items).union(&ids(&b_items)).copied().collect();
    let equal_union = ids(a_after.items()) == union && ids(b_after.items()) == union;
    if !equal_union {
        failures.push("a side does not hold the union after the transfer");
    }
    let again = reconcile(&a_after, &b_after, group_id)?;
    if again.rounds != 1 || !again.have.is_empty() || !again.need.is_empty() {
        failures.push("a second session between the repaired sets did not settle at once");
    }

    let to_responder: usize = session.per_round.iter().map(|r| r.0).sum();
    let to_initiator: usize = session.per_round.iter().map(|r| r.1).sum();
    let transfer = transfer(&session, group_id, envelope_bytes)?;
    Ok(json!({
        "bench": "sync",
        "what": "reconciliation protocol in one process, real frame encoding, not over the network",
        "case": case.name,
        "layout": match case.layout {
            Layout::Tail => "divergent messages after the shared history",
            Layout::Interleaved => "divergent messages scattered through the history",
        },
        "seed": seed,
        "shared": case.shared,
        "only_initiator": case.only_a,
        "only_responder": case.only_b,
        "set_sizes": [a.len(), b.len()],
        "rounds": session.rounds,
        "reconcile_bytes_to_responder": to_responder,
        "reconcile_bytes_to_initiator": to_initiator,
        "reconcile_bytes_total": to_responder + to_initiator,
        "largest_frame_body": session.largest_frame,
        "frame_limit": MAX_RECONCILE_FRAME_BYTES,
        "per_round_bytes": session.per_round,
        "have": session.have.len(),
        "need": session.need.len(),
        "transfer": transfer,
        "repeats": reconcile_ms.len(),
        "reconcile_ms_median": median(&mut reconcile_ms),
        "reconcile_ms_all": reconcile_ms,
        "build_both_sets_ms_median": median(&mut build_ms),
        "union_size": union.len(),
        "both_hold_union": equal_union,
        "resync_rounds": again.rounds,
        "ok": failures.is_empty(),
        "failures": failures,
    }))
}

fn main() -> anyhow::Result<()> {
    bonghwa_tests::bench::exit_on_help(include_str!("bench_sync.rs"));
    let shared = arg("--shared", 20_000);
    let diverged = arg("--diverged", 10_000);
    let seed = arg("--seed", 1) as u64;
    let repeat = arg("--repeat", 5);
    let envelope_bytes = arg("--envelope-bytes", 1024);
    let cases = [
        Case {
            name: "diverged",
            shared,
            only_a: diverged / 2,
            only_b: diverged - diverged / 2,
            layout: Layout::Tail,
        },
        Case {
            name: "diverged_interleaved",
            shared,
            only_a: diverged / 2,
            only_b: diverged - diverged / 2,
            layout: Layout::Interleaved,
        },
        Case {
            name: "identical",
            shared: 30_000,
            only_a: 0,
            only_b: 0,
            layout: Layout::Tail,
        },
        Case {
            name: "small",
            shared: 99_990,
            only_a: 5,
            only_b: 5,
            layout: Layout::Interleaved,
        },
    ];
    let mut all_ok = true;
    for (i, case) in cases.iter().enumerate() {
        let report = run_case(case, seed.wrapping_add(i as u64), repeat, envelope_bytes)?;
        all_ok &= report["ok"] == json!(true);
        println!("{report}");
    }
    if !all_ok {
        eprintln!("a case did not converge to the union");
        std::process::exit(1);
    }
    Ok(())
}
