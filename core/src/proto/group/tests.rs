use ed25519_dalek::SigningKey;

use super::*;

/// A tiny seeded generator (xorshift64*), so every run shuffles the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// People by index: 0 alice, 1 bob, 2 carol, 3 dave, 4 mallory, …
fn person(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i + 1; 32])
}

fn key(i: u8) -> [u8; 32] {
    person(i).verifying_key().to_bytes()
}

const ALICE: u8 = 0;
const BOB: u8 = 1;
const CAROL: u8 = 2;
const DAVE: u8 = 3;
const MALLORY: u8 = 4;

fn at(ms: u64) -> Hlc {
    Hlc { ms, counter: 0 }
}

/// Alice founds a group with bob and carol at t=10.
fn founded() -> (GroupId, SignedOp) {
    let salt = [42; 32];
    let group = GroupId::derive(&key(ALICE), &salt);
    let create = SignedOp::sign(
        &person(ALICE),
        group,
        at(10),
        Vec::new(),
        MembershipOp::Create {
            name: "Book club".into(),
            salt,
            members: vec![key(BOB), key(CAROL)],
        },
    );
    (group, create)
}

fn op(author: u8, group: GroupId, ms: u64, op: MembershipOp) -> SignedOp {
    SignedOp::sign(&person(author), group, at(ms), Vec::new(), op)
}

fn view(of: u8, group: GroupId) -> Membership {
    Membership::new(group, key(of))
}

fn keys(people: &[u8]) -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = people.iter().map(|p| key(*p)).collect();
    out.sort();
    out
}

#[test]
fn founding_starts_everyones_key() {
    let (group, create) = founded();
    let mut alice = view(ALICE, group);
    let change = alice.apply(create.clone()).unwrap();
    assert_eq!(change.added, keys(&[ALICE, BOB, CAROL]));
    assert_eq!(
        change.key,
        KeyAction::Start {
            to: keys(&[BOB, CAROL])
        }
    );
    assert_eq!(alice.state().name.as_deref(), Some("Book club"));
    assert_eq!(alice.state().creator, Some(key(ALICE)));
    let mut bob = view(BOB, group);
    assert_eq!(
        bob.apply(create.clone()).unwrap().key,
        KeyAction::Start {
            to: keys(&[ALICE, CAROL])
        }
    );
    assert_eq!(
        bob.apply(create).unwrap(),
        Change::none(),
        "a repeat is a no-op"
    );
}

#[test]
fn an_add_shares_keys_with_the_newcomer() {
    let (group, create) = founded();
    let add = op(BOB, group, 20, MembershipOp::Add { member: key(DAVE) });
    let mut carol = view(CAROL, group);
    carol.apply(create.clone()).unwrap();
    let change = carol.apply(add.clone()).unwrap();
    assert_eq!(change.added, keys(&[DAVE]));
    assert_eq!(change.key, KeyAction::Share { to: keys(&[DAVE]) });
    // Dave learns both ops from a distribution and starts his own key.
    let mut dave = view(DAVE, group);
    let change = dave.apply_all([add, create]).unwrap();
    assert_eq!(
        change.key,
        KeyAction::Start {
            to: keys(&[ALICE, BOB, CAROL])
        }
    );
}

#[test]
fn a_removal_rotates_the_others_and_stops_the_removed() {
    let (group, create) = founded();
    let remove = op(
        ALICE,
        group,
        20,
        MembershipOp::Remove { member: key(CAROL) },
    );
    let mut bob = view(BOB, group);
    bob.apply(create.clone()).unwrap();
    let change = bob.apply(remove.clone()).unwrap();
    assert_eq!(change.removed, keys(&[CAROL]));
    assert_eq!(change.key, KeyAction::Rotate { to: keys(&[ALICE]) });
    let mut carol = view(CAROL, group);
    carol.apply(create.clone()).unwrap();
    assert_eq!(carol.apply(remove.clone()).unwrap().key, KeyAction::Stop);

    // Carol's later ops change nothing.
    let revenge = op(
        CAROL,
        group,
        30,
        MembershipOp::Add {
            member: key(MALLORY),
        },
    );
    let kick = op(
        CAROL,
        group,
        31,
        MembershipOp::Remove { member: key(ALICE) },
    );
    assert_eq!(bob.apply(revenge).unwrap().key, KeyAction::None);
    assert_eq!(bob.apply(kick).unwrap().key, KeyAction::None);
    assert_eq!(
        bob.state().members,
        keys(&[ALICE, BOB]).into_iter().collect()
    );
}

#[test]
fn leaving_removes_the_author() {
    let (group, create) = founded();
    let leave = op(BOB, group, 20, MembershipOp::Leave);
    let mut alice = view(ALICE, group);
    let mut bob = view(BOB, group);
    alice.apply(create.clone()).unwrap();
    bob.apply(create).unwrap();
    assert_eq!(
        alice.apply(leave.clone()).unwrap().key,
        KeyAction::Rotate { to: keys(&[CAROL]) }
    );
    assert_eq!(bob.apply(leave).unwrap().key, KeyAction::Stop);
    assert!(!alice.is_member(&key(BOB)));
}

#[test]
fn only_members_change_membership() {
    let (group, create) = founded();
    let mut alice = view(ALICE, group);
    // Before the group exists nothing counts, even from its future members.
    let early = op(BOB, group, 5, MembershipOp::Add { member: key(DAVE) });
    alice.apply(early).unwrap();
    alice.apply(create).unwrap();
    assert!(!alice.is_member(&key(DAVE)));
    let gatecrash = op(
        MALLORY,
        group,
        20,
        MembershipOp::Add {
            member: key(MALLORY),
        },
    );
    assert_eq!(alice.apply(gatecrash).unwrap().key, KeyAction::None);
    assert!(!alice.is_member(&key(MALLORY)));
    // A second Create, even by the creator, is ignored.
    let salt = [42; 32];
    let refound = op(
        ALICE,
        group,
        30,
        MembershipOp::Create {
            name: "Other".into(),
            salt,
            members: vec![key(MALLORY)],
        },
    );
    alice.apply(refound).unwrap();
    assert!(!alice.is_member(&key(MALLORY)));
    assert_eq!(alice.state().name.as_deref(), Some("Book club"));
}

#[test]
fn forged_and_foreign_ops_are_refused_all_or_nothing() {
    let (group, create) = founded();
    let mut alice = view(ALICE, group);
    let mut forged = op(BOB, group, 20, MembershipOp::Add { member: key(DAVE) });
    forged.op = MembershipOp::Add {
        member: key(MALLORY),
    };
    assert!(matches!(
        alice.apply_all([create.clone(), forged]),
        Err(MembershipError::Invalid(_))
    ));
    assert_eq!(alice.state(), &GroupState::default(), "nothing taken");
    let other = GroupId::derive(&key(BOB), &[1; 32]);
    let foreign = op(BOB, other, 20, MembershipOp::Leave);
    assert_eq!(alice.apply(foreign), Err(MembershipError::WrongGroup));
    // Mallory cannot found alice's group.
    let usurp = op(
        MALLORY,
        group,
        1,
        MembershipOp::Create {
            name: "Mine".into(),
            salt: [42; 32],
            members: vec![],
        },
    );
    assert!(alice.apply(usurp).is_err());
    alice.apply(create).unwrap();
    assert_eq!(alice.state().creator, Some(key(ALICE)));
}

#[test]
fn members_and_ops_are_bounded() {
    let salt = [7; 32];
    let group = GroupId::derive(&key(ALICE), &salt);
    let crowd: Vec<[u8; 32]> = (0..MAX_MEMBERS as u16 - 1)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..2].copy_from_slice(&i.to_be_bytes());
            k
        })
        .collect();
    let create = op(
        ALICE,
        group,
        10,
        MembershipOp::Create {
            name: "Full".into(),
            salt,
            members: crowd,
        },
    );
    let mut alice = view(ALICE, group);
    alice.apply(create).unwrap();
    assert_eq!(alice.state().members.len(), MAX_MEMBERS);
    let one_more = op(ALICE, group, 20, MembershipOp::Add { member: key(BOB) });
    assert_eq!(alice.apply(one_more).unwrap().added, Vec::<[u8; 32]>::new());

    let (group, create) = founded();
    let mut bob = view(BOB, group);
    bob.apply(create).unwrap();
    let flood: Vec<SignedOp> = (0..MAX_OPS as u64)
        .map(|i| {
            op(
                ALICE,
                group,
                100 + i,
                MembershipOp::Add { member: key(DAVE) },
            )
        })
        .collect();
    assert_eq!(bob.apply_all(flood), Err(MembershipError::TooManyOps));
    assert_eq!(bob.ops().count(), 1);
}

/// A random history: alice founds the group, then people (members or not) add, remove
/// and leave, some at the same millisecond so op ids break ties, each naming a few random
/// earlier ops (so removals cancel some ops and keep others), some naming none.
fn random_history(rng: &mut Rng, length: usize) -> (GroupId, Vec<SignedOp>) {
    let (group, create) = founded();
    let mut ops = vec![create];
    let mut ms = 10;
    for _ in 0..length {
        ms += rng.below(3) as u64;
        let author = rng.below(8) as u8;
        let target = key(rng.below(8) as u8);
        let change = match rng.below(5) {
            0 | 1 => MembershipOp::Add { member: target },
            2 | 3 => MembershipOp::Remove { member: target },
            _ => MembershipOp::Leave,
        };
        let deps: Vec<OpId> = (0..rng.below(3))
            .map(|_| ops[rng.below(ops.len())].id())
            .collect();
        ops.push(SignedOp::sign(&person(author), group, at(ms), deps, change));
    }
    (group, ops)
}

#[test]
fn any_arrival_order_gives_the_same_members() {
    let mut rng = Rng(0x6d65_6d62_6572);
    let mut sizes = BTreeSet::new();
    for trial in 0..25 {
        let (group, ops) = random_history(&mut rng, 10 + trial * 3);
        let mut reference = view(ALICE, group);
        reference.apply_all(ops.clone()).unwrap();
        sizes.insert(reference.state().members.len());
        for _ in 0..8 {
            let mut shuffled = ops.clone();
            rng.shuffle(&mut shuffled);
            // Repeats happen in real life (gossip, distribution and sync all carry ops).
            let repeats = rng.below(4);
            for i in 0..repeats {
                shuffled.push(ops[i % ops.len()].clone());
            }
            let mut member = view(BOB, group);
            for op in shuffled {
                member.apply(op).unwrap();
            }
            assert_eq!(member.state(), reference.state(), "trial {trial}");
            let order: Vec<OpId> = member.ops().map(SignedOp::id).collect();
            let expected: Vec<OpId> = reference.ops().map(SignedOp::id).collect();
            assert_eq!(order, expected);
        }
    }
    // The histories must be varied enough to mean something.
    assert!(sizes.len() >= 3, "member counts seen: {sizes:?}");
}

#[test]
fn incremental_changes_add_up_to_the_final_membership() {
    // Whatever order ops arrive in, replaying the reported changes on the first member
    // list ends at the folded list, and rotation is asked for whenever someone went.
    let mut rng = Rng(99);
    for _ in 0..20 {
        let (group, ops) = random_history(&mut rng, 30);
        let mut shuffled = ops;
        rng.shuffle(&mut shuffled);
        let mut carol = view(CAROL, group);
        let mut tracked: BTreeSet<[u8; 32]> = BTreeSet::new();
        for op in shuffled {
            let was_member = carol.is_member(&key(CAROL));
            let change = carol.apply(op).unwrap();
            for gone in &change.removed {
                assert!(tracked.remove(gone));
            }
            for new in &change.added {
                assert!(tracked.insert(*new));
            }
            let is_member = carol.is_member(&key(CAROL));
            if was_member && is_member && !change.removed.is_empty() {
                assert!(matches!(change.key, KeyAction::Rotate { .. }));
            }
            if was_member && !is_member {
                assert_eq!(change.key, KeyAction::Stop);
            }
            if let KeyAction::Rotate { to } | KeyAction::Start { to } = &change.key {
                let others: Vec<[u8; 32]> = tracked
                    .iter()
                    .filter(|k| **k != key(CAROL))
                    .copied()
                    .collect();
                assert_eq!(to, &others);
            }
        }
        assert_eq!(&tracked, &carol.state().members);
    }
}

fn op_after(
    author: u8,
    group: GroupId,
    ms: u64,
    deps: &[&SignedOp],
    change: MembershipOp,
) -> SignedOp {
    let deps = deps.iter().map(|d| d.id()).collect();
    SignedOp::sign(&person(author), group, at(ms), deps, change)
}

fn members_after(group: GroupId, ops: &[&SignedOp]) -> BTreeSet<[u8; 32]> {
    let mut bob = view(BOB, group);
    bob.apply_all(ops.iter().map(|o| (*o).clone())).unwrap();
    bob.state().members.clone()
}

#[test]
fn a_removed_member_cannot_backdate_its_way_back() {
    let (group, create) = founded();
    let remove = op_after(
        ALICE,
        group,
        20,
        &[&create],
        MembershipOp::Remove { member: key(CAROL) },
    );
    let add_mallory = MembershipOp::Add {
        member: key(MALLORY),
    };
    // Signed after the removal, dated before it, not naming it: unknown to the removal,
    // so cancelled by it.
    let backdated = op_after(CAROL, group, 15, &[&create], add_mallory.clone());
    assert_eq!(
        members_after(group, &[&create, &remove, &backdated]),
        keys(&[ALICE, BOB]).into_iter().collect()
    );
    // Naming the removal but dated before it: an op must come after what it names.
    let naming = op_after(CAROL, group, 15, &[&remove], add_mallory.clone());
    assert_eq!(
        members_after(group, &[&create, &remove, &naming]),
        keys(&[ALICE, BOB]).into_iter().collect()
    );
    // And dated after it: carol is out by then.
    let late = op_after(CAROL, group, 25, &[&remove], add_mallory);
    assert_eq!(
        members_after(group, &[&create, &remove, &late]),
        keys(&[ALICE, BOB]).into_iter().collect()
    );
}

#[test]
fn a_removal_keeps_what_it_knew_of_and_cancels_what_it_did_not() {
    let (group, create) = founded();
    let add_dave = op_after(
        CAROL,
        group,
        15,
        &[&create],
        MembershipOp::Add { member: key(DAVE) },
    );
    // Alice saw carol add dave, then removed carol: dave stays.
    let informed = op_after(
        ALICE,
        group,
        20,
        &[&add_dave],
        MembershipOp::Remove { member: key(CAROL) },
    );
    assert_eq!(
        members_after(group, &[&create, &add_dave, &informed]),
        keys(&[ALICE, BOB, DAVE]).into_iter().collect()
    );
    // Alice removed carol without having seen it (a partition): the removal wins.
    let unaware = op_after(
        ALICE,
        group,
        20,
        &[&create],
        MembershipOp::Remove { member: key(CAROL) },
    );
    assert_eq!(
        members_after(group, &[&create, &add_dave, &unaware]),
        keys(&[ALICE, BOB]).into_iter().collect()
    );
}

#[test]
fn heads_are_the_ops_nothing_names_newest_first() {
    let (group, create) = founded();
    let first = op_after(ALICE, group, 20, &[&create], MembershipOp::Leave);
    let second = op_after(
        BOB,
        group,
        21,
        &[&create],
        MembershipOp::Add { member: key(DAVE) },
    );
    let mut dave = view(DAVE, group);
    dave.apply_all([create.clone()]).unwrap();
    assert_eq!(dave.heads(), vec![create.id()]);
    dave.apply_all([first.clone(), second.clone()]).unwrap();
    assert_eq!(dave.heads(), vec![second.id(), first.id()]);
}
