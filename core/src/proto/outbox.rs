//! The sender's retry machine for direct messages, without I/O.
//!
//! It mirrors the durable outbox: every entry stays here until the recipient acks it,
//! refuses it for good, or it expires. It decides *when* to transmit and *when* to dial;
//! the node does the sealing, sending and storing. Time comes in as `now_ms`, randomness
//! (for backoff jitter) as a seed, so a simulator can drive it deterministically.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{MessageId, OutboxEntry};
use crate::wire::MAX_BATCH;

/// First retry delay after a failed attempt.
pub const BACKOFF_BASE_MS: u64 = 1_000;
/// The longest delay between attempts.
pub const BACKOFF_MAX_MS: u64 = 60_000;
/// Request batches to one peer that may await their acks at the same time.
pub const MAX_IN_FLIGHT_BATCHES: usize = 4;
/// Entries the outbox holds at most; `send` is refused beyond it.
pub const MAX_ENTRIES: usize = 100_000;

/// Something that happened, fed to [`Outbox::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A new entry, or one resumed from the store at start.
    Queued(OutboxEntry),
    /// A connection to this peer is open.
    PeerUp(String),
    /// The last connection to this peer closed.
    PeerDown(String),
    /// The recipient stored it durably.
    Acked(MessageId),
    /// The recipient refused it for good.
    Rejected(MessageId),
    /// Transmission failed or the recipient asked to retry later.
    Failed(MessageId),
    /// Time passed; check for due retries and expiries.
    Tick,
}

/// What the node should do, returned by [`Outbox::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Seal these messages and send them to `peer` in one request.
    Transmit {
        /// Recipient peer id.
        peer: String,
        /// At most [`MAX_BATCH`] ids, oldest entry first.
        ids: Vec<MessageId>,
    },
    /// Try to open a connection to `peer`; entries wait for it.
    Dial {
        /// Peer to reach.
        peer: String,
    },
    /// Acked: remove from the durable outbox, mark delivered.
    Delivered(MessageId),
    /// Refused for good: remove from the durable outbox, mark failed.
    Refused(MessageId),
    /// Not acked before its expiry: remove from the durable outbox, mark failed.
    Expired(MessageId),
}

#[derive(Clone, Debug)]
struct Tracked {
    entry: OutboxEntry,
    /// Failed attempts so far; drives the backoff.
    attempts: u32,
    /// Not before this time (Unix ms).
    next_ms: u64,
    /// Part of a request awaiting its response.
    in_flight: bool,
    /// The in-flight batch it travels in.
    batch: u64,
}

/// A request on its way: to whom, and how many of its messages are unresolved.
#[derive(Clone, Debug)]
struct Batch {
    peer: String,
    unresolved: usize,
}

/// The retry state of every unacknowledged outgoing message.
#[derive(Debug)]
pub struct Outbox {
    entries: BTreeMap<MessageId, Tracked>,
    /// Queue order: (created, id), so that retries keep the order messages were written in.
    order: BTreeSet<(u64, MessageId)>,
    connected: BTreeSet<String>,
    /// Requests awaiting their response; a batch ends when all its messages are resolved.
    batches: BTreeMap<u64, Batch>,
    next_batch: u64,
    /// Peers whose dial is due, and when the next dial may happen.
    next_dial_ms: BTreeMap<String, u64>,
    dial_attempts: BTreeMap<String, u32>,
    rng: u64,
}

impl Outbox {
    /// An empty outbox; `seed` drives backoff jitter.
    pub fn new(seed: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            order: BTreeSet::new(),
            connected: BTreeSet::new(),
            batches: BTreeMap::new(),
            next_batch: 0,
            next_dial_ms: BTreeMap::new(),
            dial_attempts: BTreeMap::new(),
            rng: seed | 1,
        }
    }

    /// How many entries await an ack.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing awaits an ack.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another entry may be queued.
    pub fn has_room(&self) -> bool {
        self.entries.len() < MAX_ENTRIES
    }

    /// Whether this message is still awaiting its ack.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id)
    }

    /// When [`Input::Tick`] next has something to do, if ever.
    pub fn next_wakeup(&self) -> Option<u64> {
        let retry = self
            .entries
            .values()
            .filter(|t| !t.in_flight)
            .map(|t| {
                // Entries for unconnected peers wait for the dial schedule, not for a retry.
                if self.connected.contains(&t.entry.to) {
                    t.next_ms.min(t.entry.expires_ms)
                } else {
                    t.entry.expires_ms
                }
            })
            .min();
        let dial = self.next_dial_ms.values().copied().min();
        match (retry, dial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Feeds one input and returns what to do now.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Queued(entry) => {
                let key = (entry.created_ms, entry.id);
                self.entries.insert(
                    entry.id,
                    Tracked {
                        entry,
                        attempts: 0,
                        next_ms: now_ms,
                        in_flight: false,
                        batch: 0,
                    },
                );
                self.order.insert(key);
            }
            Input::PeerUp(peer) => {
                self.connected.insert(peer.clone());
                self.next_dial_ms.remove(&peer);
                self.dial_attempts.remove(&peer);
                // A fresh connection is the best moment to retry: skip the backoff.
                for t in self.entries.values_mut() {
                    if t.entry.to == peer && !t.in_flight {
                        t.next_ms = now_ms;
                    }
                }
            }
            Input::PeerDown(peer) => {
                // In-flight requests come back as `Failed` when their connection closes.
                self.connected.remove(&peer);
            }
            Input::Acked(id) => {
                if self.finish(&id, now_ms).is_some() {
                    out.push(Output::Delivered(id));
                }
            }
            Input::Rejected(id) => {
                if self.finish(&id, now_ms).is_some() {
                    out.push(Output::Refused(id));
                }
            }
            Input::Failed(id) => {
                let delay = self.backoff_for(&id);
                if let Some(t) = self.entries.get_mut(&id) {
                    if t.in_flight {
                        t.in_flight = false;
                        release(&mut self.batches, t.batch);
                    }
                    t.attempts = t.attempts.saturating_add(1);
                    t.next_ms = now_ms.saturating_add(delay);
                }
            }
            Input::Tick => {}
        }
        self.pump(now_ms, &mut out);
        out
    }

    /// Removes an entry that is done, releasing its batch slot.
    fn finish(&mut self, id: &MessageId, _now_ms: u64) -> Option<Tracked> {
        let t = self.entries.remove(id)?;
        self.order.remove(&(t.entry.created_ms, t.entry.id));
        if t.in_flight {
            release(&mut self.batches, t.batch);
        }
        Some(t)
    }

    fn backoff_for(&mut self, id: &MessageId) -> u64 {
        let attempts = self.entries.get(id).map_or(0, |t| t.attempts);
        self.backoff(attempts)
    }

    /// Exponential backoff with ±25 % jitter, capped.
    fn backoff(&mut self, attempts: u32) -> u64 {
        let exp = BACKOFF_BASE_MS.saturating_mul(1u64 << attempts.min(16));
        let base = exp.min(BACKOFF_MAX_MS);
        // xorshift64: deterministic for a given seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let quarter = base / 4;
        base - quarter + self.rng % (2 * quarter + 1)
    }

    /// Emits expiries, transmissions to connected peers, and dials to the others.
    fn pump(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let expired: Vec<MessageId> = self
            .entries
            .values()
            .filter(|t| !t.in_flight && t.entry.expires_ms <= now_ms)
            .map(|t| t.entry.id)
            .collect();
        for id in expired {
            self.finish(&id, now_ms);
            out.push(Output::Expired(id));
        }

        let mut batches: BTreeMap<String, Vec<Vec<MessageId>>> = BTreeMap::new();
        let mut want_dial: BTreeSet<String> = BTreeSet::new();
        for (_, id) in &self.order {
            let Some(t) = self.entries.get(id) else {
                continue;
            };
            if t.in_flight || t.next_ms > now_ms {
                continue;
            }
            let peer = &t.entry.to;
            if !self.connected.contains(peer) {
                want_dial.insert(peer.clone());
                continue;
            }
            let busy = self.batches.values().filter(|b| b.peer == *peer).count();
            let peer_batches = batches.entry(peer.clone()).or_default();
            let open_new = peer_batches.last().is_none_or(|b| b.len() >= MAX_BATCH);
            if open_new {
                if busy + peer_batches.len() >= MAX_IN_FLIGHT_BATCHES {
                    continue;
                }
                peer_batches.push(Vec::new());
            }
            if let Some(batch) = peer_batches.last_mut() {
                batch.push(*id);
            }
        }
        for (peer, peer_batches) in batches {
            for ids in peer_batches.into_iter().filter(|b| !b.is_empty()) {
                let batch = self.next_batch;
                self.next_batch = self.next_batch.wrapping_add(1);
                for id in &ids {
                    if let Some(t) = self.entries.get_mut(id) {
                        t.in_flight = true;
                        t.batch = batch;
                    }
                }
                self.batches.insert(
                    batch,
                    Batch {
                        peer: peer.clone(),
                        unresolved: ids.len(),
                    },
                );
                out.push(Output::Transmit {
                    peer: peer.clone(),
                    ids,
                });
            }
        }
        for peer in want_dial {
            let due = self.next_dial_ms.get(&peer).is_none_or(|at| *at <= now_ms);
            if due {
                let attempts = self.dial_attempts.get(&peer).copied().unwrap_or(0);
                let delay = self.backoff(attempts);
                self.dial_attempts
                    .insert(peer.clone(), attempts.saturating_add(1));
                self.next_dial_ms
                    .insert(peer.clone(), now_ms.saturating_add(delay));
                out.push(Output::Dial { peer });
            }
        }
        // Forget dial schedules for peers nothing waits for any more.
        let waiting: BTreeSet<&String> = self.entries.values().map(|t| &t.entry.to).collect();
        self.next_dial_ms.retain(|peer, _| waiting.contains(peer));
        self.dial_attempts.retain(|peer, _| waiting.contains(peer));
    }
}

/// One message of `batch` is resolved; the batch ends with its last message.
fn release(batches: &mut BTreeMap<u64, Batch>, batch: u64) {
    if let Some(b) = batches.get_mut(&batch) {
        b.unresolved = b.unresolved.saturating_sub(1);
        if b.unresolved == 0 {
            batches.remove(&batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn entry(n: u8, to: &str, at: u64) -> OutboxEntry {
        OutboxEntry {
            id: MessageId([n; 32]),
            to: to.into(),
            created_ms: at,
            expires_ms: at + 7 * DAY,
        }
    }

    fn transmits(out: &[Output]) -> Vec<(String, Vec<MessageId>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Transmit { peer, ids } => Some((peer.clone(), ids.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn offline_peer_is_dialled_with_growing_backoff() {
        let mut outbox = Outbox::new(42);
        let out = outbox.handle(Input::Queued(entry(1, "bob", 0)), 0);
        assert_eq!(out, vec![Output::Dial { peer: "bob".into() }]);
        let mut dial_times = vec![0];
        let mut now = 0;
        while dial_times.len() < 8 {
            now = outbox.next_wakeup().unwrap();
            for o in outbox.handle(Input::Tick, now) {
                assert_eq!(o, Output::Dial { peer: "bob".into() });
                dial_times.push(now);
            }
        }
        let gaps: Vec<u64> = dial_times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= 750 && gaps[0] <= 1_250, "{gaps:?}");
        assert!(gaps[3] > gaps[0] * 4, "{gaps:?}");
        assert!(
            gaps.iter().all(|g| *g <= BACKOFF_MAX_MS * 5 / 4),
            "{gaps:?}"
        );
        assert!(
            outbox.contains(&MessageId([1; 32])),
            "still pending at {now}"
        );
    }

    #[test]
    fn connection_transmits_in_order_and_ack_delivers() {
        let mut outbox = Outbox::new(1);
        for n in 1..=3 {
            outbox.handle(Input::Queued(entry(n, "bob", u64::from(n))), 10);
        }
        let out = outbox.handle(Input::PeerUp("bob".into()), 20);
        let ids = vec![MessageId([1; 32]), MessageId([2; 32]), MessageId([3; 32])];
        assert_eq!(transmits(&out), vec![("bob".into(), ids.clone())]);
        // In flight: nothing is sent twice.
        assert!(transmits(&outbox.handle(Input::Tick, 5_000)).is_empty());
        for id in &ids {
            assert_eq!(
                outbox.handle(Input::Acked(*id), 30),
                vec![Output::Delivered(*id)]
            );
        }
        assert!(outbox.is_empty());
        assert_eq!(outbox.next_wakeup(), None);
        // A late duplicate ack is ignored.
        assert!(outbox.handle(Input::Acked(ids[0]), 40).is_empty());
    }

    #[test]
    fn failure_backs_off_then_reconnect_retries_at_once() {
        let mut outbox = Outbox::new(7);
        outbox.handle(Input::PeerUp("bob".into()), 0);
        let out = outbox.handle(Input::Queued(entry(1, "bob", 0)), 0);
        assert_eq!(transmits(&out).len(), 1);
        outbox.handle(Input::PeerDown("bob".into()), 5);
        outbox.handle(Input::Failed(MessageId([1; 32])), 5);
        assert!(outbox.next_wakeup().unwrap() > 5);
        let out = outbox.handle(Input::PeerUp("bob".into()), 6);
        assert_eq!(transmits(&out).len(), 1, "{out:?}");
    }

    #[test]
    fn batches_are_capped_and_in_flight_is_limited() {
        let mut outbox = Outbox::new(3);
        outbox.handle(Input::PeerUp("bob".into()), 0);
        let mut sent = Vec::new();
        for i in 0..1000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let e = OutboxEntry {
                id: MessageId(id),
                to: "bob".into(),
                created_ms: u64::from(i),
                expires_ms: DAY,
            };
            sent.extend(transmits(&outbox.handle(Input::Queued(e), 0)));
        }
        assert_eq!(sent.len(), MAX_IN_FLIGHT_BATCHES);
        assert!(sent.iter().all(|(_, ids)| ids.len() <= MAX_BATCH));
        // Acking part of a batch frees nothing; acking all of it frees one slot for the
        // next batch, in creation order.
        let first: Vec<MessageId> = sent[0].1.clone();
        let mut more = Vec::new();
        for (i, id) in first.iter().enumerate() {
            more.extend(transmits(&outbox.handle(Input::Acked(*id), 1)));
            if i + 1 < first.len() {
                assert!(
                    more.is_empty(),
                    "a slot opened after {} of {} acks",
                    i + 1,
                    first.len()
                );
            }
        }
        assert_eq!(more.len(), 1);
        let last_sent = sent.last().unwrap().1.last().unwrap().0;
        assert!(more[0].1[0].0 > last_sent);
    }

    #[test]
    fn unacked_entries_expire_and_refusals_finish() {
        let mut outbox = Outbox::new(9);
        outbox.handle(Input::Queued(entry(1, "bob", 0)), 0);
        outbox.handle(Input::Queued(entry(2, "carol", 0)), 0);
        outbox.handle(Input::PeerUp("carol".into()), 1);
        assert_eq!(
            outbox.handle(Input::Rejected(MessageId([2; 32])), 2),
            vec![Output::Refused(MessageId([2; 32]))]
        );
        let out = outbox.handle(Input::Tick, 7 * DAY);
        assert!(
            out.contains(&Output::Expired(MessageId([1; 32]))),
            "{out:?}"
        );
        assert!(outbox.is_empty());
    }

    /// A seeded simulation: a peer that flaps up and down and loses responses at random.
    /// Every message ends delivered exactly once, none is lost, none expires.
    #[test]
    fn simulated_flaky_peer_gets_everything_once() {
        for seed in 1..20u64 {
            let mut rng = seed;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut outbox = Outbox::new(seed);
            let mut now = 0u64;
            let mut up = false;
            let mut delivered = BTreeSet::new();
            let mut pending: Vec<MessageId> = Vec::new();
            let total = 200u32;
            for i in 0..total {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                let e = OutboxEntry {
                    id: MessageId(id),
                    to: "bob".into(),
                    created_ms: u64::from(i),
                    expires_ms: 7 * DAY,
                };
                outbox.handle(Input::Queued(e), now);
            }
            for _ in 0..20_000 {
                if delivered.len() == total as usize {
                    break;
                }
                now += next() % 2_000;
                // The node feeds every output back; so does the simulation, for every input.
                let mut inputs = Vec::new();
                match next() % 10 {
                    0 if up => {
                        up = false;
                        // The connection closes, then its in-flight requests fail.
                        inputs.push(Input::PeerDown("bob".into()));
                        inputs.extend(pending.drain(..).map(Input::Failed));
                    }
                    1 if !up => {
                        up = true;
                        inputs.push(Input::PeerUp("bob".into()));
                    }
                    2..=5 if !pending.is_empty() => {
                        let id = pending.remove(0);
                        inputs.push(if next() % 4 == 0 {
                            Input::Failed(id)
                        } else {
                            Input::Acked(id)
                        });
                    }
                    _ => inputs.push(Input::Tick),
                }
                for input in inputs {
                    for o in outbox.handle(input, now) {
                        match o {
                            Output::Transmit { ids, .. } => {
                                assert!(up, "transmitted while down");
                                pending.extend(ids);
                            }
                            Output::Delivered(id) => {
                                assert!(delivered.insert(id), "delivered twice");
                            }
                            Output::Dial { .. } => assert!(!up),
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
            }
            assert_eq!(delivered.len(), total as usize, "seed {seed}");
            assert!(outbox.is_empty());
        }
    }
}
