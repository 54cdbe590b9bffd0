//! Group history repair by range-based set reconciliation (after negentropy), sans-IO.
//!
//! Two members of a group each hold a set of messages, identified by `(Hlc, MessageId)` and
//! sorted that way (the order every member shows). After a partition heals they must learn,
//! cheaply, which messages each side lacks. Sending every id would cost 32 bytes per
//! message per sync; instead the sides compare **fingerprints of ranges** and only descend
//! into ranges that differ:
//!
//! 1. The initiator splits its whole set into [`BUCKETS`] ranges and sends one fingerprint
//!    per range (a set of at most [`ID_LIST_THRESHOLD`] items is sent as its id list).
//! 2. Whoever receives a range compares it with its own items in the same bounds: equal
//!    fingerprints become `Skip`; a differing range is split again into [`BUCKETS`]
//!    sub-ranges, or, once small, sent as an id list.
//! 3. An id list from the responder lets the initiator compute, for that range, what it
//!    has that the responder lacks (`have`) and what it lacks (`need`). An id list from the
//!    initiator is answered with the responder's own id list for the range.
//!
//! Each round trip divides the differing ranges by [`BUCKETS`], so `d` differences among
//! `n` items settle in about `log16(n)` rounds plus the rounds needed to ship `2·32·d`
//! bytes of ids at the message budget. Identical sets settle in one round trip.
//!
//! **Only the initiator learns** `have` and `need`, as in negentropy: sync runs over a
//! request-response protocol where the initiator is the requester, so it is the side that
//! can follow up (fetch what it needs, push what it has). The responder is stateless.
//!
//! **Fingerprint**: the sum of the 32-byte ids as 256-bit integers modulo 2^256, plus the
//! count, hashed with SHA-256 and cut to 16 bytes. Addition is order-free and invertible,
//! so a [`SyncSet`] keeps prefix sums and fingerprints any range in O(1) after an
//! O(log n) search. XOR would give the same speed but is linear over GF(2): anyone who can
//! choose ids can build, by Gaussian elimination, a set that collides with another; a sum
//! with the count folded in and then hashed is far harder to steer (negentropy's argument).
//! Hashing the concatenated ids would resist steering best but costs O(range) per range.
//!
//! **Bounds** are `(hlc, id prefix)`: the shortest prefix of the next id that separates it
//! from the previous item, so most bounds are only the HLC (a few bytes).
//!
//! **Message size** is capped by a byte budget ([`Limits::max_message_bytes`]). When the
//! next range's answer would not fit, the sender stops and closes the message with one
//! fingerprint over everything from there to the end; the peer treats that like any other
//! differing range, so work is deferred, never lost, and every message makes progress.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Hlc, MessageId};

mod bounds;

#[cfg(test)]
use bounds::varint_len;
use bounds::{add256, below, bound_len, limbs, range_len, separator, sub256};

/// How many sub-ranges a differing range is split into.
pub const BUCKETS: usize = 16;
/// A range with at most this many items is sent as its id list rather than split.
pub const ID_LIST_THRESHOLD: usize = 2 * BUCKETS;
/// Default byte budget for one reconciliation message (leaves room in a 64 KiB frame).
pub const DEFAULT_MESSAGE_BYTES: usize = 48 * 1024;
/// The smallest budget allowed: a full split plus the closing range must always fit, so
/// every message makes progress.
pub const MIN_MESSAGE_BYTES: usize = 4 * 1024;
/// Most ranges a received message may hold (a 64 KiB message of minimal ranges).
pub const MAX_RANGES: usize = 16 * 1024;
/// Most ids a received message may list in total.
pub const MAX_LISTED_IDS: usize = 64 * 1024 / 32;
/// Length of a range fingerprint.
pub const FINGERPRINT_LEN: usize = 16;

const FINGERPRINT_DOMAIN: &[u8] = b"bonghwa-sync-fingerprint-v1";

/// One message as the reconciliation sees it: its time, then its id (the display order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Item {
    /// The message's HLC timestamp, the primary sort key.
    pub hlc: Hlc,
    /// The message id, the tie-breaker and what gets fetched.
    pub id: MessageId,
}

/// The upper (exclusive) end of a range. The lower end is the previous range's upper end,
/// or the very start for the first range, so a message's ranges tile the whole key space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bound {
    /// Every item with `(hlc, id) < (hlc, prefix ‖ zeros)`.
    At {
        /// Time part of the bound.
        hlc: Hlc,
        /// Leading bytes of an id (at most 32); empty when the HLC alone separates.
        prefix: Vec<u8>,
    },
    /// Past every item.
    End,
}

/// What a message says about one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Nothing to do here: the sides agree, or the range is already settled.
    Skip,
    /// The sender's fingerprint of its items in the range.
    Fingerprint([u8; FINGERPRINT_LEN]),
    /// All of the sender's ids in the range.
    IdList(Vec<MessageId>),
}

/// One range of a [`SyncMessage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// Where the range ends (exclusive).
    pub upper: Bound,
    /// What the sender says about it.
    pub mode: Mode,
}

/// One reconciliation message, either way. Ranges after the last one are settled; an
/// empty message therefore means "nothing left to compare".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMessage {
    /// Consecutive ranges with strictly increasing upper bounds.
    pub ranges: Vec<Range>,
}

/// Why a reconciliation message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncError {
    /// The message breaks the protocol's shape (bounds out of order, oversized prefix, …).
    #[error("malformed sync message: {0}")]
    Malformed(&'static str),
    /// The peer keeps the conversation going past [`Limits::max_rounds`].
    #[error("sync did not settle within {0} rounds; the peer may be misbehaving")]
    TooManyRounds(u32),
    /// The peer reported more differing ids than [`Limits::max_reported_ids`].
    #[error("sync reported more than {0} differing ids; fetch those first and sync again")]
    TooManyIds(usize),
}

/// Bounds on one sync session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded message this side produces (at least [`MIN_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Round trips the initiator allows before giving up.
    pub max_rounds: u32,
    /// Distinct `have` + `need` ids the initiator collects before giving up.
    pub max_reported_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MESSAGE_BYTES,
            max_rounds: 512,
            max_reported_ids: 200_000,
        }
    }
}

impl Limits {
    fn budget(&self) -> usize {
        self.max_message_bytes.max(MIN_MESSAGE_BYTES)
    }
}

/// A member's messages, sorted by `(hlc, id)`, with prefix sums for O(1) fingerprints.
///
/// Build it once per sync session from the store; it is a snapshot, so items that arrive
/// during the session are picked up by the next session.
#[derive(Clone, Debug, Default)]
pub struct SyncSet {
    items: Vec<Item>,
    /// `sums[i]` is the sum of the first `i` ids (little-endian 256-bit, mod 2^256).
    sums: Vec<[u64; 4]>,
}

impl SyncSet {
    /// Sorts the items and drops repeated ids (keeping the earliest time), so that a
    /// confused store cannot make the two sides count one message twice.
    pub fn new(items: impl IntoIterator<Item = Item>) -> Self {
        let mut items: Vec<Item> = items.into_iter().collect();
        items.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.hlc.cmp(&b.hlc)));
        items.dedup_by(|later, earlier| later.id == earlier.id);
        items.sort_unstable();
        let mut sums = Vec::with_capacity(items.len() + 1);
        let mut acc = [0u64; 4];
        sums.push(acc);
        for item in &items {
            acc = add256(acc, limbs(&item.id));
            sums.push(acc);
        }
        Self { items, sums }
    }

    /// The items in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Index of the first item at or above `bound`.
    fn position(&self, bound: &Bound) -> usize {
        self.items.partition_point(|item| below(item, bound))
    }

    /// Fingerprint of `items[lo..hi]`.
    fn fingerprint(&self, lo: usize, hi: usize) -> [u8; FINGERPRINT_LEN] {
        let sum = sub256(self.sums[hi], self.sums[lo]);
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        for limb in sum {
            hasher.update(limb.to_le_bytes());
        }
        hasher.update(((hi - lo) as u64).to_le_bytes());
        let digest = hasher.finalize();
        let mut out = [0u8; FINGERPRINT_LEN];
        out.copy_from_slice(&digest[..FINGERPRINT_LEN]);
        out
    }
}

/// What the initiator learns from one reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// The next message to send, or `None` when the sets are reconciled.
    pub next: Option<SyncMessage>,
    /// Ids we hold that the responder lacks: push them. Never repeated within a session.
    pub have: Vec<MessageId>,
    /// Ids the responder holds that we lack: fetch them. Never repeated within a session.
    pub need: Vec<MessageId>,
}

/// The initiator's side of one sync session. It remembers which ids it has already
/// reported, so `have`/`need` never repeat even when a deferred range is revisited, and
/// it bounds the session's rounds.
#[derive(Clone, Debug, Default)]
pub struct Initiator {
    limits: Limits,
    rounds: u32,
    reported: BTreeSet<MessageId>,
}

impl Initiator {
    /// A session with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rounds: 0,
            reported: BTreeSet::new(),
        }
    }

    /// Round trips so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The opening message: our whole set as [`BUCKETS`] fingerprints (or one id list).
    pub fn initiate(&self, set: &SyncSet) -> SyncMessage {
        let mut out = Output::new(set, self.limits.budget());
        let full = Bound::End;
        // An empty output always has room for a split: MIN_MESSAGE_BYTES guarantees it.
        let _ = out.differing(0, set.len(), &full);
        out.finish()
    }

    /// Takes the responder's reply and returns what we learned and what to send next.
    pub fn reconcile(&mut self, set: &SyncSet, reply: &SyncMessage) -> Result<Round, SyncError> {
        reply.validate()?;
        self.rounds += 1;
        if self.rounds > self.limits.max_rounds {
            return Err(SyncError::TooManyRounds(self.limits.max_rounds));
        }
        let mut round = Round::default();
        let mut out = Output::new(set, self.limits.budget());
        let mut lo = 0;
        for range in &reply.ranges {
            let hi = set.position(&range.upper);
            let progressed = match &range.mode {
                Mode::Skip => out.skip(&range.upper),
                Mode::Fingerprint(theirs) => {
                    if set.fingerprint(lo, hi) == *theirs {
                        out.skip(&range.upper)
                    } else {
                        out.differing(lo, hi, &range.upper)
                    }
                }
                Mode::IdList(theirs) => {
                    if out.skip(&range.upper) {
                        self.settle(&set.items[lo..hi], theirs, &mut round)?;
                        true
                    } else {
                        false
                    }
                }
            };
            if !progressed {
                out.close_from(lo);
                break;
            }
            lo = hi;
        }
        let next = out.finish();
        round.next = (!next.ranges.is_empty()).then_some(next);
        Ok(round)
    }

    /// Compares our items in a range with the responder's id list for it.
    fn settle(
        &mut self,
        ours: &[Item],
        theirs: &[MessageId],
        round: &mut Round,
    ) -> Result<(), SyncError> {
        let ours_ids: BTreeSet<MessageId> = ours.iter().map(|item| item.id).collect();
        let theirs_ids: BTreeSet<MessageId> = theirs.iter().copied().collect();
        for id in ours_ids.difference(&theirs_ids) {
            if self.reported.insert(*id) {
                round.have.push(*id);
            }
        }
        for id in theirs_ids.difference(&ours_ids) {
            if self.reported.insert(*id) {
                round.need.push(*id);
            }
        }
        if self.reported.len() > self.limits.max_reported_ids {
            return Err(SyncError::TooManyIds(self.limits.max_reported_ids));
        }
        Ok(())
    }
}

/// The responder's side: answers one message about `set`. Stateless, so a node can serve
/// many peers without keeping sessions; an empty answer means "settled".
pub fn respond(
    set: &SyncSet,
    message: &SyncMessage,
    limits: &Limits,
) -> Result<SyncMessage, SyncError> {
    message.validate()?;
    let mut out = Output::new(set, limits.budget());
    let mut lo = 0;
    for range in &message.ranges {
        let hi = set.position(&range.upper);
        let done = match &range.mode {
            Mode::Skip => out.skip(&range.upper),
            Mode::Fingerprint(theirs) => {
                if set.fingerprint(lo, hi) == *theirs {
                    out.skip(&range.upper)
                } else {
                    out.differing(lo, hi, &range.upper)
                }
            }
            // The initiator listed its ids; answer with ours so it can settle the range.
            Mode::IdList(_) => match out.id_lists(lo, hi, &range.upper) {
                Ok(()) => true,
                Err(stopped_at) => {
                    out.close_from(stopped_at);
                    return Ok(out.finish());
                }
            },
        };
        if !done {
            out.close_from(lo);
            break;
        }
        lo = hi;
    }
    Ok(out.finish())
}

impl SyncMessage {
    /// Checks the shape of a received message: counts within [`MAX_RANGES`] and
    /// [`MAX_LISTED_IDS`], prefixes of at most 32 bytes, strictly increasing bounds.
    pub fn validate(&self) -> Result<(), SyncError> {
        if self.ranges.len() > MAX_RANGES {
            return Err(SyncError::Malformed("too many ranges"));
        }
        let mut listed = 0usize;
        let mut previous: Option<(Hlc, [u8; 32])> = None;
        for (i, range) in self.ranges.iter().enumerate() {
            if let Mode::IdList(ids) = &range.mode {
                listed += ids.len();
                if listed > MAX_LISTED_IDS {
                    return Err(SyncError::Malformed("too many listed ids"));
                }
            }
            match &range.upper {
                Bound::End => {
                    if i + 1 != self.ranges.len() {
                        return Err(SyncError::Malformed("a range after the end"));
                    }
                }
                Bound::At { hlc, prefix } => {
                    if prefix.len() > 32 {
                        return Err(SyncError::Malformed("bound prefix longer than an id"));
                    }
                    let mut key = [0u8; 32];
                    key[..prefix.len()].copy_from_slice(prefix);
                    let current = (*hlc, key);
                    if previous.is_some_and(|p| p >= current) {
                        return Err(SyncError::Malformed("bounds out of order"));
                    }
                    previous = Some(current);
                }
            }
        }
        Ok(())
    }
}

/// A message under construction, charged against the byte budget as it grows.
struct Output<'a> {
    set: &'a SyncSet,
    ranges: Vec<Range>,
    used: usize,
    budget: usize,
}

/// Room kept for the closing fingerprint range and the message's own length prefix.
const CLOSING_RESERVE: usize = MAX_BOUND_BYTES + 1 + FINGERPRINT_LEN + 3;
/// Largest encoded bound: tag, HLC (10 + 5 varint bytes), prefix length and 32 bytes.
const MAX_BOUND_BYTES: usize = 1 + 10 + 5 + 1 + 32;

impl<'a> Output<'a> {
    fn new(set: &'a SyncSet, budget: usize) -> Self {
        Self {
            set,
            ranges: Vec::new(),
            used: 0,
            budget,
        }
    }

    fn fits(&self, extra: usize) -> bool {
        self.used + extra + CLOSING_RESERVE <= self.budget
    }

    fn push(&mut self, range: Range) {
        self.used += range_len(&range);
        self.ranges.push(range);
    }

    /// Marks a range settled, merging it into a preceding skip. False if it did not fit.
    fn skip(&mut self, upper: &Bound) -> bool {
        let previous_skip = match self.ranges.last() {
            Some(last) if last.mode == Mode::Skip => Some(bound_len(&last.upper)),
            _ => None,
        };
        if let Some(old) = previous_skip {
            let new = bound_len(upper);
            if new > old && !self.fits(new - old) {
                return false;
            }
            self.used = self.used + new - old;
            if let Some(last) = self.ranges.last_mut() {
                last.upper = upper.clone();
            }
            return true;
        }
        let range = Range {
            upper: upper.clone(),
            mode: Mode::Skip,
        };
        if !self.fits(range_len(&range)) {
            return false;
        }
        self.push(range);
        true
    }

    /// Our answer for a range whose fingerprints differ: our id list if small, else a
    /// split into [`BUCKETS`] fingerprints. All or nothing; false if it did not fit.
    fn differing(&mut self, lo: usize, hi: usize, upper: &Bound) -> bool {
        let items = &self.set.items;
        let count = hi - lo;
        let mut planned = Vec::new();
        if count <= ID_LIST_THRESHOLD {
            planned.push(Range {
                upper: upper.clone(),
                mode: Mode::IdList(items[lo..hi].iter().map(|item| item.id).collect()),
            });
        } else {
            let base = count / BUCKETS;
            let extra = count % BUCKETS;
            let mut start = lo;
            for bucket in 0..BUCKETS {
                let end = start + base + usize::from(bucket < extra);
                let bucket_upper = if bucket + 1 == BUCKETS {
                    upper.clone()
                } else {
                    separator(&items[end - 1], &items[end])
                };
                planned.push(Range {
                    upper: bucket_upper,
                    mode: Mode::Fingerprint(self.set.fingerprint(start, end)),
                });
                start = end;
            }
        }
        let cost: usize = planned.iter().map(range_len).sum();
        if !self.fits(cost) {
            return false;
        }
        for range in planned {
            self.push(range);
        }
        true
    }

    /// Our full id list for a range, in as many consecutive lists as the budget allows.
    /// On running out, returns the index of the first item not yet listed.
    fn id_lists(&mut self, lo: usize, hi: usize, upper: &Bound) -> Result<(), usize> {
        let items = &self.set.items;
        let mut start = lo;
        loop {
            let header = MAX_BOUND_BYTES + 1 + 3;
            let room = self
                .budget
                .saturating_sub(self.used + CLOSING_RESERVE + header)
                / 32;
            let take = room.min(hi - start);
            if take == 0 && (start < hi || !self.fits(header)) {
                return Err(start);
            }
            let end = start + take;
            let chunk_upper = if end == hi {
                upper.clone()
            } else {
                separator(&items[end - 1], &items[end])
            };
            self.push(Range {
                upper: chunk_upper,
                mode: Mode::IdList(items[start..end].iter().map(|item| item.id).collect()),
            });
            if end == hi {
                return Ok(());
            }
            start = end;
        }
    }

    /// Ends the message with one fingerprint over our items from `lo` to the end, so the
    /// peer revisits everything we did not get to.
    fn close_from(&mut self, lo: usize) {
        let fingerprint = self.set.fingerprint(lo, self.set.len());
        self.push(Range {
            upper: Bound::End,
            mode: Mode::Fingerprint(fingerprint),
        });
    }

    /// The message, without trailing skips (ranges after the last one count as settled).
    fn finish(mut self) -> SyncMessage {
        while self.ranges.last().is_some_and(|r| r.mode == Mode::Skip) {
            self.ranges.pop();
        }
        SyncMessage {
            ranges: self.ranges,
        }
    }
}

#[cfg(test)]
mod tests;
