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

/// Where an entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Backing off until this time (Unix ms).
    Waiting(u64),
    /// Due: goes out as soon as its peer is connected and has a free batch slot.
    Ready,
    /// Part of this request batch, awaiting its response.
    InFlight(u64),
}

#[derive(Clone, Debug)]
struct Tracked {
    entry: OutboxEntry,
    /// Failed attempts so far; drives the backoff.
    attempts: u32,
    state: State,
}

impl Tracked {
    fn queue_key(&self) -> (u64, MessageId) {
        (self.entry.created_ms, self.entry.id)
    }
}

/// A request on its way: to whom, and how many of its messages are unresolved.
#[derive(Clone, Debug)]
struct Batch {
    peer: String,
    unresolved: usize,
}

/// The retry state of every unacknowledged outgoing message.
///
/// Every input costs O(log n) plus the number of peers with due messages (a `PeerUp` also
/// scans the backing-off entries once), so a deep outbox stays cheap to drive.
#[derive(Debug)]
pub struct Outbox {
    entries: BTreeMap<MessageId, Tracked>,
    /// Due entries per peer in queue order (created, id), so retries keep the order
    /// messages were written in.
    ready: BTreeMap<String, BTreeSet<(u64, MessageId)>>,
    /// Backing-off entries by the time they are due.
    waiting: BTreeSet<(u64, MessageId)>,
    /// Entries not in flight, by expiry (an entry in flight is not expired under its request).
    expiries: BTreeSet<(u64, MessageId)>,
    /// How many entries each peer has, whatever their state.
    per_peer: BTreeMap<String, usize>,
    connected: BTreeSet<String>,
    /// Requests awaiting their response; a batch ends when all its messages are resolved.
    batches: BTreeMap<u64, Batch>,
    /// Open batches per peer.
    busy: BTreeMap<String, usize>,
    next_batch: u64,
    /// When the next dial to a peer may happen, and how many dials were made.
    next_dial_ms: BTreeMap<String, u64>,
    dial_attempts: BTreeMap<String, u32>,
    rng: u64,
}

impl Outbox {
    /// An empty outbox; `seed` drives backoff jitter.
    pub fn new(seed: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            ready: BTreeMap::new(),
            waiting: BTreeSet::new(),
            expiries: BTreeSet::new(),
            per_peer: BTreeMap::new(),
            connected: BTreeSet::new(),
            batches: BTreeMap::new(),
            busy: BTreeMap::new(),
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

    /// The entries waiting for `peer` that are not in flight, oldest first (for depositing
    /// at the peer's mailboxes while it is unreachable). O(n): called on dials only.
    pub fn unsent_for(&self, peer: &str) -> Vec<MessageId> {
        let mut ids: Vec<(u64, MessageId)> = self
            .entries
            .values()
            .filter(|t| t.entry.to == peer && !matches!(t.state, State::InFlight(_)))
            .map(Tracked::queue_key)
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// When [`Input::Tick`] next has something to do, if ever. Never a time that a tick
    /// would leave unchanged, so the caller does not spin.
    pub fn next_wakeup(&self) -> Option<u64> {
        let retry = self.waiting.first().map(|(at, _)| *at);
        let expiry = self.expiries.first().map(|(at, _)| *at);
        // Dials matter only for peers with due entries and no connection.
        let dial = self
            .ready
            .keys()
            .filter(|peer| !self.connected.contains(*peer))
            .filter_map(|peer| self.next_dial_ms.get(peer).copied())
            .min();
        [retry, expiry, dial].into_iter().flatten().min()
    }

    /// Feeds one input and returns what to do now.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Queued(entry) => {
                // A resumed entry may already be here: start it afresh.
                self.finish(&entry.id);
                let tracked = Tracked {
                    entry,
                    attempts: 0,
                    state: State::Ready,
                };
                *self.per_peer.entry(tracked.entry.to.clone()).or_default() += 1;
                self.expiries
                    .insert((tracked.entry.expires_ms, tracked.entry.id));
                self.ready
                    .entry(tracked.entry.to.clone())
                    .or_default()
                    .insert(tracked.queue_key());
                self.entries.insert(tracked.entry.id, tracked);
            }
            Input::PeerUp(peer) => {
                self.connected.insert(peer.clone());
                self.next_dial_ms.remove(&peer);
                self.dial_attempts.remove(&peer);
                // A fresh connection is the best moment to retry: skip the backoff.
                let due: Vec<(u64, MessageId)> = self
                    .waiting
                    .iter()
                    .filter(|(_, id)| self.entries.get(id).is_some_and(|t| t.entry.to == peer))
                    .copied()
                    .collect();
                for (at, id) in due {
                    self.waiting.remove(&(at, id));
                    self.make_ready(&id);
                }
            }
            Input::PeerDown(peer) => {
                // In-flight requests come back as `Failed` when their connection closes.
                self.connected.remove(&peer);
            }
            Input::Acked(id) => {
                if self.finish(&id).is_some() {
                    out.push(Output::Delivered(id));
                }
            }
            Input::Rejected(id) => {
                if self.finish(&id).is_some() {
                    out.push(Output::Refused(id));
                }
            }
            Input::Failed(id) => self.back_off(&id, now_ms),
            Input::Tick => {}
        }
        self.pump(now_ms, &mut out);
        out
    }

    /// Takes an entry out of whatever queue its state puts it in.
    fn unqueue(&mut self, id: &MessageId) {
        let Some(t) = self.entries.get(id) else {
            return;
        };
        let key = t.queue_key();
        match t.state {
            State::Waiting(at) => {
                self.waiting.remove(&(at, *id));
            }
            State::Ready => {
                if let Some(queue) = self.ready.get_mut(&t.entry.to) {
                    queue.remove(&key);
                    if queue.is_empty() {
                        self.ready.remove(&t.entry.to);
                    }
                }
            }
            State::InFlight(batch) => {
                release(&mut self.batches, &mut self.busy, batch);
                // Out of flight, it can expire again.
                self.expiries.insert((t.entry.expires_ms, *id));
            }
        }
    }

    /// Removes an entry that is done.
    fn finish(&mut self, id: &MessageId) -> Option<Tracked> {
        self.unqueue(id);
        let t = self.entries.remove(id)?;
        self.expiries.remove(&(t.entry.expires_ms, *id));
        if let Some(count) = self.per_peer.get_mut(&t.entry.to) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Nothing waits for this peer any more: forget its dial schedule.
                self.per_peer.remove(&t.entry.to);
                self.next_dial_ms.remove(&t.entry.to);
                self.dial_attempts.remove(&t.entry.to);
            }
        }
        Some(t)
    }

    /// A failed attempt: wait before the next one.
    fn back_off(&mut self, id: &MessageId, now_ms: u64) {
        let Some(attempts) = self.entries.get(id).map(|t| t.attempts) else {
            return;
        };
        let delay = self.backoff(attempts);
        self.unqueue(id);
        let at = now_ms.saturating_add(delay);
        if let Some(t) = self.entries.get_mut(id) {
            t.attempts = attempts.saturating_add(1);
            t.state = State::Waiting(at);
            self.waiting.insert((at, *id));
        }
    }

    /// Puts an entry (already out of its previous queue) into its peer's due queue.
    fn make_ready(&mut self, id: &MessageId) {
        if let Some(t) = self.entries.get_mut(id) {
            t.state = State::Ready;
            let key = t.queue_key();
            self.ready
                .entry(t.entry.to.clone())
                .or_default()
                .insert(key);
        }
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
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now_ms {
                break;
            }
            self.finish(&id);
            out.push(Output::Expired(id));
        }
        while let Some(&(at, id)) = self.waiting.first() {
            if at > now_ms {
                break;
            }
            self.waiting.remove(&(at, id));
            self.make_ready(&id);
        }

        let peers: Vec<String> = self.ready.keys().cloned().collect();
        for peer in peers {
            if self.connected.contains(&peer) {
                self.transmit_ready(&peer, out);
            } else if self.next_dial_ms.get(&peer).is_none_or(|at| *at <= now_ms) {
                let attempts = self.dial_attempts.get(&peer).copied().unwrap_or(0);
                let delay = self.backoff(attempts);
                self.dial_attempts
                    .insert(peer.clone(), attempts.saturating_add(1));
                self.next_dial_ms
                    .insert(peer.clone(), now_ms.saturating_add(delay));
                out.push(Output::Dial { peer });
            }
        }
    }

    /// Sends a connected peer's due entries, oldest first, in as many batches as its free
    /// slots allow.
    fn transmit_ready(&mut self, peer: &str, out: &mut Vec<Output>) {
        while self.busy.get(peer).copied().unwrap_or(0) < MAX_IN_FLIGHT_BATCHES {
            let Some(queue) = self.ready.get_mut(peer) else {
                return;
            };
            let mut ids = Vec::with_capacity(MAX_BATCH.min(queue.len()));
            while ids.len() < MAX_BATCH {
                let Some((_, id)) = queue.pop_first() else {
                    break;
                };
                ids.push(id);
            }
            if queue.is_empty() {
                self.ready.remove(peer);
            }
            if ids.is_empty() {
                return;
            }
            let batch = self.next_batch;
            self.next_batch = self.next_batch.wrapping_add(1);
            for id in &ids {
                if let Some(t) = self.entries.get_mut(id) {
                    t.state = State::InFlight(batch);
                    self.expiries.remove(&(t.entry.expires_ms, *id));
                }
            }
            self.batches.insert(
                batch,
                Batch {
                    peer: peer.to_owned(),
                    unresolved: ids.len(),
                },
            );
            *self.busy.entry(peer.to_owned()).or_default() += 1;
            out.push(Output::Transmit {
                peer: peer.to_owned(),
                ids,
            });
        }
    }
}

/// One message of `batch` is resolved; the batch ends with its last message, freeing a
/// slot of its peer.
fn release(batches: &mut BTreeMap<u64, Batch>, busy: &mut BTreeMap<String, usize>, batch: u64) {
    let Some(b) = batches.get_mut(&batch) else {
        return;
    };
    b.unresolved = b.unresolved.saturating_sub(1);
    if b.unresolved > 0 {
        return;
    }
    let peer = b.peer.clone();
    batches.remove(&batch);
    if let Some(count) = busy.get_mut(&peer) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            busy.remove(&peer);
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
                    // A wakeup at or before now would make the node spin.
                    let wake = outbox.next_wakeup();
                    assert!(wake.is_none_or(|w| w > now), "wakeup {wake:?} at {now}");
                }
            }
            assert_eq!(delivered.len(), total as usize, "seed {seed}");
            assert!(outbox.is_empty());
        }
    }
}
