use std::collections::BTreeSet;

use super::*;

/// A tiny seeded generator (xorshift64*), so every run sees the same sets.
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

    fn item(&mut self) -> Item {
        let mut id = [0u8; 32];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        // Few distinct milliseconds, so many items share an HLC and bounds need prefixes.
        Item {
            hlc: Hlc {
                ms: 1_700_000_000_000 + self.below(500),
                counter: self.below(3) as u32,
            },
            id: MessageId(id),
        }
    }
}

/// Three piles: items both hold, items only alice holds, items only bob holds.
fn divergent(rng: &mut Rng, shared: usize, only_a: usize, only_b: usize) -> (SyncSet, SyncSet) {
    let common: Vec<Item> = (0..shared).map(|_| rng.item()).collect();
    let mut a = common.clone();
    a.extend((0..only_a).map(|_| rng.item()));
    let mut b = common;
    b.extend((0..only_b).map(|_| rng.item()));
    (SyncSet::new(a), SyncSet::new(b))
}

#[derive(Debug, Default)]
struct Outcome {
    rounds: u32,
    bytes: usize,
    have: Vec<MessageId>,
    need: Vec<MessageId>,
}

/// Runs a whole session, alice initiating, every message through postcard as on the wire,
/// and checks each message against the budget.
fn sync(alice: &SyncSet, bob: &SyncSet, limits: Limits) -> Result<Outcome, SyncError> {
    let mut outcome = Outcome::default();
    let mut session = Initiator::new(limits);
    let mut message = session.initiate(alice);
    loop {
        let request = wire_trip(&message, &limits, &mut outcome.bytes);
        let reply = respond(bob, &request, &limits)?;
        let reply = wire_trip(&reply, &limits, &mut outcome.bytes);
        let round = session.reconcile(alice, &reply)?;
        outcome.rounds = session.rounds();
        outcome.have.extend(round.have);
        outcome.need.extend(round.need);
        match round.next {
            Some(next) => message = next,
            None => return Ok(outcome),
        }
    }
}

fn wire_trip(message: &SyncMessage, limits: &Limits, bytes: &mut usize) -> SyncMessage {
    let encoded = postcard::to_stdvec(message).unwrap();
    assert!(
        encoded.len() <= limits.max_message_bytes.max(MIN_MESSAGE_BYTES),
        "message of {} bytes over the budget",
        encoded.len()
    );
    *bytes += encoded.len();
    let decoded: SyncMessage = postcard::from_bytes(&encoded).unwrap();
    decoded.validate().unwrap();
    decoded
}

fn ids(set: &SyncSet) -> BTreeSet<MessageId> {
    set.items().iter().map(|item| item.id).collect()
}

/// After the session alice pushes `have` to bob and fetches `need` from him; both must
/// then hold the union, and the lists must be exactly the differences, without repeats.
fn assert_converges(alice: &SyncSet, bob: &SyncSet, outcome: &Outcome) {
    let a = ids(alice);
    let b = ids(bob);
    let have: BTreeSet<MessageId> = outcome.have.iter().copied().collect();
    let need: BTreeSet<MessageId> = outcome.need.iter().copied().collect();
    assert_eq!(have.len(), outcome.have.len(), "have repeats an id");
    assert_eq!(need.len(), outcome.need.len(), "need repeats an id");
    assert_eq!(have, a.difference(&b).copied().collect::<BTreeSet<_>>());
    assert_eq!(need, b.difference(&a).copied().collect::<BTreeSet<_>>());
    let alice_after: BTreeSet<MessageId> = a.union(&need).copied().collect();
    let bob_after: BTreeSet<MessageId> = b.union(&have).copied().collect();
    assert_eq!(alice_after, bob_after);
    assert_eq!(alice_after, a.union(&b).copied().collect::<BTreeSet<_>>());
}

#[test]
fn identical_sets_settle_in_one_round() {
    let mut rng = Rng::new(7);
    for size in [0, 1, ID_LIST_THRESHOLD, ID_LIST_THRESHOLD + 1, 5_000] {
        let (alice, bob) = divergent(&mut rng, size, 0, 0);
        let outcome = sync(&alice, &bob, Limits::default()).unwrap();
        assert_eq!(outcome.rounds, 1, "size {size}");
        assert!(outcome.have.is_empty() && outcome.need.is_empty());
    }
}

#[test]
fn identical_large_sets_exchange_only_fingerprints() {
    let mut rng = Rng::new(8);
    let (alice, bob) = divergent(&mut rng, 5_000, 0, 0);
    let mut session = Initiator::new(Limits::default());
    let opening = session.initiate(&alice);
    assert_eq!(opening.ranges.len(), BUCKETS);
    let reply = respond(&bob, &opening, &Limits::default()).unwrap();
    assert!(reply.ranges.is_empty(), "bob should answer 'settled'");
    assert_eq!(session.reconcile(&alice, &reply).unwrap(), Round::default());
}

#[test]
fn random_divergent_sets_converge_to_the_union() {
    let mut rng = Rng::new(0x5eed);
    for trial in 0..60 {
        let shared = rng.below(3_000) as usize;
        let only_a = rng.below(if trial % 3 == 0 { 400 } else { 40 }) as usize;
        let only_b = rng.below(if trial % 4 == 0 { 400 } else { 40 }) as usize;
        let (alice, bob) = divergent(&mut rng, shared, only_a, only_b);
        // Small budgets force deferred ranges; the default exercises the common path.
        let limits = Limits {
            max_message_bytes: if trial % 2 == 0 {
                MIN_MESSAGE_BYTES
            } else {
                DEFAULT_MESSAGE_BYTES
            },
            ..Limits::default()
        };
        let outcome = sync(&alice, &bob, limits).unwrap();
        assert_converges(&alice, &bob, &outcome);
        // The other direction must agree too.
        let reverse = sync(&bob, &alice, limits).unwrap();
        assert_converges(&bob, &alice, &reverse);
    }
}

#[test]
fn one_empty_side_learns_everything() {
    let mut rng = Rng::new(3);
    let (full, empty) = divergent(&mut rng, 0, 2_000, 0);
    let outcome = sync(&empty, &full, Limits::default()).unwrap();
    assert_eq!(outcome.need.len(), 2_000);
    assert_converges(&empty, &full, &outcome);
    let outcome = sync(&full, &empty, Limits::default()).unwrap();
    assert_eq!(outcome.have.len(), 2_000);
    assert_converges(&full, &empty, &outcome);
}

#[test]
fn a_few_differences_in_a_large_set_take_few_rounds() {
    let mut rng = Rng::new(11);
    let (alice, bob) = divergent(&mut rng, 100_000, 3, 2);
    let outcome = sync(&alice, &bob, Limits::default()).unwrap();
    assert_converges(&alice, &bob, &outcome);
    // log16(100,000) ≈ 4.2: a handful of rounds, far below one id per item.
    assert!(outcome.rounds <= 6, "{} rounds", outcome.rounds);
    assert!(outcome.bytes < 100_000 * 32 / 10, "{} bytes", outcome.bytes);
}

#[test]
fn ten_thousand_item_divergence_converges() {
    let mut rng = Rng::new(10_000);
    let (alice, bob) = divergent(&mut rng, 20_000, 5_000, 5_000);
    let outcome = sync(&alice, &bob, Limits::default()).unwrap();
    println!(
        "10,000-item divergence over 20,000 shared: {} rounds, {} bytes of sync messages \
         ({} have, {} need)",
        outcome.rounds,
        outcome.bytes,
        outcome.have.len(),
        outcome.need.len()
    );
    assert_converges(&alice, &bob, &outcome);
}

#[test]
fn duplicate_ids_in_a_store_count_once() {
    let mut rng = Rng::new(5);
    let item = rng.item();
    let later = Item {
        hlc: Hlc {
            ms: item.hlc.ms + 1,
            counter: 0,
        },
        id: item.id,
    };
    let set = SyncSet::new([later, item, item]);
    assert_eq!(set.items(), &[item]);
}

#[test]
fn fingerprints_from_prefix_sums_match_a_direct_sum() {
    let mut rng = Rng::new(9);
    let set = SyncSet::new((0..200).map(|_| rng.item()));
    for _ in 0..100 {
        let lo = rng.below(200) as usize;
        let hi = lo + rng.below((200 - lo) as u64 + 1) as usize;
        let direct = SyncSet::new(set.items()[lo..hi].iter().copied());
        assert_eq!(set.fingerprint(lo, hi), direct.fingerprint(0, direct.len()));
    }
    // Different contents, different fingerprints; the count matters too.
    assert_ne!(set.fingerprint(0, 10), set.fingerprint(0, 11));
    assert_ne!(set.fingerprint(0, 0), set.fingerprint(5, 6));
}

#[test]
fn separators_split_neighbours_with_the_shortest_bound() {
    let mut rng = Rng::new(21);
    let set = SyncSet::new((0..2_000).map(|_| rng.item()));
    for pair in set.items().windows(2) {
        let bound = separator(&pair[0], &pair[1]);
        assert!(below(&pair[0], &bound));
        assert!(!below(&pair[1], &bound));
    }
    let a = Item {
        hlc: Hlc { ms: 5, counter: 0 },
        id: MessageId([1; 32]),
    };
    let mut next_id = [1u8; 32];
    next_id[3] = 2;
    let b = Item {
        id: MessageId(next_id),
        ..a
    };
    assert_eq!(
        separator(&a, &b),
        Bound::At {
            hlc: a.hlc,
            prefix: vec![1, 1, 1, 2]
        }
    );
    let c = Item {
        hlc: Hlc { ms: 6, counter: 0 },
        ..a
    };
    assert_eq!(
        separator(&a, &c),
        Bound::At {
            hlc: c.hlc,
            prefix: vec![]
        }
    );
}

#[test]
fn malformed_messages_are_refused() {
    let set = SyncSet::default();
    let limits = Limits::default();
    let at = |ms, prefix: Vec<u8>| Bound::At {
        hlc: Hlc { ms, counter: 0 },
        prefix,
    };
    let skip = |upper| Range {
        upper,
        mode: Mode::Skip,
    };
    let out_of_order = SyncMessage {
        ranges: vec![skip(at(5, vec![])), skip(at(4, vec![]))],
    };
    let repeated = SyncMessage {
        ranges: vec![skip(at(5, vec![1])), skip(at(5, vec![1, 0]))],
    };
    let after_end = SyncMessage {
        ranges: vec![skip(Bound::End), skip(at(5, vec![]))],
    };
    let long_prefix = SyncMessage {
        ranges: vec![skip(at(5, vec![0; 33]))],
    };
    let too_many_ids = SyncMessage {
        ranges: vec![Range {
            upper: Bound::End,
            mode: Mode::IdList(vec![MessageId([0; 32]); MAX_LISTED_IDS + 1]),
        }],
    };
    let too_many_ranges = SyncMessage {
        ranges: (0..=MAX_RANGES as u64)
            .map(|ms| skip(at(ms, vec![])))
            .collect(),
    };
    for bad in [
        out_of_order,
        repeated,
        after_end,
        long_prefix,
        too_many_ids,
        too_many_ranges,
    ] {
        assert!(matches!(
            respond(&set, &bad, &limits),
            Err(SyncError::Malformed(_))
        ));
        assert!(matches!(
            Initiator::new(limits).reconcile(&set, &bad),
            Err(SyncError::Malformed(_))
        ));
    }
}

#[test]
fn a_responder_that_never_agrees_is_cut_off() {
    let mut rng = Rng::new(13);
    let set = SyncSet::new((0..1_000).map(|_| rng.item()));
    let limits = Limits {
        max_rounds: 20,
        ..Limits::default()
    };
    let mut session = Initiator::new(limits);
    let liar = SyncMessage {
        ranges: vec![Range {
            upper: Bound::End,
            mode: Mode::Fingerprint([0xAB; FINGERPRINT_LEN]),
        }],
    };
    let mut result = Ok(Round::default());
    for _ in 0..=limits.max_rounds {
        result = session.reconcile(&set, &liar);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(SyncError::TooManyRounds(20)));
}

#[test]
fn a_responder_inventing_ids_is_bounded() {
    let limits = Limits {
        max_reported_ids: 100,
        ..Limits::default()
    };
    let mut session = Initiator::new(limits);
    let flood = SyncMessage {
        ranges: vec![Range {
            upper: Bound::End,
            mode: Mode::IdList((0..=100u8).map(|i| MessageId([i; 32])).collect()),
        }],
    };
    assert_eq!(
        session.reconcile(&SyncSet::default(), &flood),
        Err(SyncError::TooManyIds(100))
    );
}

#[test]
fn encoded_length_estimate_is_exact() {
    let mut rng = Rng::new(17);
    let (alice, bob) = divergent(&mut rng, 3_000, 100, 100);
    let opening = Initiator::new(Limits::default()).initiate(&alice);
    let reply = respond(&bob, &opening, &Limits::default()).unwrap();
    for message in [opening, reply] {
        let encoded: usize = message.ranges.iter().map(range_len).sum();
        let prefix = varint_len(message.ranges.len() as u64);
        assert_eq!(
            postcard::to_stdvec(&message).unwrap().len(),
            encoded + prefix
        );
    }
}
