//! `SyncState` as a plain struct: ticks and connections, two nodes repairing a group
//! through its answers, and what a former member gets.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use libp2p::request_response::{self, ProtocolSupport};

use super::*;
use crate::model::Hlc;
use crate::net::{SYNC_PROTOCOL, SyncCodec};
use crate::wire::group::{MembershipOp, SignedOp};

/// One group as a node sees it.
#[derive(Default)]
struct Group {
    /// The log: id → (time, encoded item).
    log: BTreeMap<MessageId, (Hlc, Vec<u8>)>,
    /// Current members other than the node itself.
    members: Vec<PeerId>,
    /// Members that left or were removed.
    former: Vec<PeerId>,
}

/// A node's groups, all of which it is a member of.
#[derive(Default)]
struct Node {
    groups: BTreeMap<GroupId, Group>,
}

impl Node {
    fn with(group: GroupId, members: &[PeerId], former: &[PeerId]) -> Self {
        let mut node = Self::default();
        node.groups.insert(
            group,
            Group {
                members: members.to_vec(),
                former: former.to_vec(),
                ..Group::default()
            },
        );
        node
    }

    fn put(&mut self, group: GroupId, (id, entry): (MessageId, (Hlc, Vec<u8>))) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.log.insert(id, entry);
        }
    }

    fn ids(&self, group: GroupId) -> Vec<MessageId> {
        self.groups[&group].log.keys().copied().collect()
    }
}

impl SyncView for Node {
    fn our_groups(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    fn fellows(&self, group: &GroupId) -> Vec<PeerId> {
        self.groups
            .get(group)
            .map(|g| g.members.clone())
            .unwrap_or_default()
    }

    fn access(&self, group: &GroupId, peer: &PeerId) -> Access {
        match self.groups.get(group) {
            Some(g) if g.members.contains(peer) => Access::Member,
            Some(g) if g.former.contains(peer) => Access::Former,
            _ => Access::None,
        }
    }

    fn log(&self, group: &GroupId) -> SyncSet {
        let items = self.groups.get(group).into_iter().flat_map(|g| {
            g.log
                .iter()
                .map(|(id, (hlc, _))| Item { hlc: *hlc, id: *id })
        });
        SyncSet::new(items)
    }

    fn item(&self, group: &GroupId, id: &MessageId) -> Option<Vec<u8>> {
        Some(self.groups.get(group)?.log.get(id)?.1.clone())
    }
}

/// Item `n` of a log: its id orders like `n`, its time is `n`, its bytes are its id.
fn item(n: u16) -> (MessageId, (Hlc, Vec<u8>)) {
    let mut id = [0; 32];
    id[..2].copy_from_slice(&n.to_be_bytes());
    let hlc = Hlc {
        ms: u64::from(n),
        counter: 0,
    };
    (MessageId(id), (hlc, id.to_vec()))
}

/// The item whose bytes are `bytes` (see [`item`]).
fn item_of(bytes: &[u8]) -> (MessageId, (Hlc, Vec<u8>)) {
    item(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// A membership op and a key item of `group`, signed and encoded.
fn op_and_keys(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let hlc = Hlc { ms: 1, counter: 0 };
    let op = SignedOp::sign(&key, group, hlc, Vec::new(), MembershipOp::Leave);
    let op = LogItem::sign(&key, group, hlc, LogBody::Op(op)).encode();
    let hlc = Hlc { ms: 2, counter: 0 };
    let keys = LogItem::sign(&key, group, hlc, LogBody::Keys(Vec::new())).encode();
    (op, keys)
}

fn entry(bytes: &[u8]) -> (MessageId, (Hlc, Vec<u8>)) {
    let hlc = LogItem::decode(bytes).map(|i| i.hlc).unwrap_or_default();
    (LogItem::id_of(bytes), (hlc, bytes.to_vec()))
}

/// A request the "actor" sent: its id, to whom, what.
type Sent = (OutboundRequestId, PeerId, SyncRequest);

/// Sends requests like the actor does (libp2p hands out the ids).
struct Wire(request_response::Behaviour<SyncCodec>);

impl Wire {
    fn new() -> Self {
        Self(request_response::Behaviour::new(
            [(SYNC_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ))
    }

    /// Sends the requests among `outs`, handing each id back to `sync`; returns them and
    /// the other outputs.
    fn send(&mut self, sync: &mut SyncState, outs: Vec<SyncOut>) -> (Vec<Sent>, Vec<SyncOut>) {
        let mut sent = Vec::new();
        let mut rest = Vec::new();
        for out in outs {
            match out {
                SyncOut::Request {
                    peer,
                    request,
                    pending,
                } => {
                    let id = self.0.send_request(&peer, Ok(request.clone()));
                    sync.sent(id, pending);
                    sent.push((id, peer, request));
                }
                other => rest.push(other),
            }
        }
        (sent, rest)
    }
}

fn group_of(request: &SyncRequest) -> GroupId {
    match request {
        SyncRequest::Reconcile { group_id, .. }
        | SyncRequest::Fetch { group_id, .. }
        | SyncRequest::Push { group_id, .. } => *group_id,
    }
}

fn dials(outs: &[SyncOut]) -> Vec<PeerId> {
    outs.iter()
        .filter_map(|o| match o {
            SyncOut::Dial(peer) => Some(*peer),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tick_starts_at_most_one_sync_per_group_and_peer() {
    let (hikers, cooks) = (GroupId([1; 32]), GroupId([2; 32]));
    let (bob, carol, dave) = (PeerId::random(), PeerId::random(), PeerId::random());
    let mut alice = Node::with(hikers, &[bob, carol], &[]);
    alice.groups.insert(
        cooks,
        Group {
            members: vec![bob],
            ..Group::default()
        },
    );
    let connected = [bob, carol, dave];
    let mut sync = SyncState::default();
    let mut wire = Wire::new();

    let mut out = Vec::new();
    sync.tick(SYNC_INTERVAL_MS, &connected, &[], &alice, &mut out);
    let (sent, rest) = wire.send(&mut sync, out);
    let mut sessions: Vec<(GroupId, PeerId)> = sent
        .iter()
        .map(|(_, peer, request)| {
            assert!(matches!(request, SyncRequest::Reconcile { .. }));
            (group_of(request), *peer)
        })
        .collect();
    sessions.sort();
    let mut expected = vec![(hikers, bob), (hikers, carol), (cooks, bob)];
    expected.sort();
    // Dave shares no group with us; every member is connected, so nobody is dialled.
    assert_eq!(sessions, expected);
    assert!(matches!(rest.as_slice(), [SyncOut::Republish]));

    // Bob connecting again, or the next round, starts nothing while those run.
    let mut out = Vec::new();
    sync.on_connect(bob, &[], &alice, &mut out);
    assert!(out.is_empty());
    sync.tick(2 * SYNC_INTERVAL_MS, &connected, &[], &alice, &mut out);
    assert!(matches!(out.as_slice(), [SyncOut::Republish]));
    // Before the interval is over, a tick does nothing.
    let mut out = Vec::new();
    sync.tick(2 * SYNC_INTERVAL_MS + 1, &connected, &[], &alice, &mut out);
    assert!(out.is_empty());
    assert_eq!(sync.next_round(true), Some(3 * SYNC_INTERVAL_MS));
    assert_eq!(sync.next_round(false), None);

    // Bob settles the cooks' session (both logs are empty); the next round starts it again,
    // and only it.
    let (id, _, request) = sent
        .iter()
        .find(|(_, peer, request)| *peer == bob && group_of(request) == cooks)
        .cloned()
        .unwrap();
    let SyncRequest::Reconcile { message, .. } = request else {
        unreachable!()
    };
    let reply = respond(&SyncSet::default(), &message, &Limits::default()).unwrap();
    let mut out = Vec::new();
    sync.on_response(bob, id, SyncResponse::Reconcile(reply), &alice, &mut out);
    assert!(out.is_empty());
    sync.tick(3 * SYNC_INTERVAL_MS, &connected, &[], &alice, &mut out);
    let (sent, _) = wire.send(&mut sync, out);
    let sessions: Vec<(GroupId, PeerId)> = sent
        .iter()
        .map(|(_, peer, request)| (group_of(request), *peer))
        .collect();
    assert_eq!(sessions, [(cooks, bob)]);
}

#[test]
fn our_relay_syncs_every_group_and_a_failed_session_can_start_again() {
    let (hikers, cooks) = (GroupId([1; 32]), GroupId([2; 32]));
    let (bob, relay) = (PeerId::random(), PeerId::random());
    let mut alice = Node::with(hikers, &[bob], &[]);
    alice.groups.insert(cooks, Group::default());
    let relays = [(relay, "/ip4/10.0.0.1/tcp/4001".parse().unwrap())];
    let mut sync = SyncState::default();
    let mut wire = Wire::new();

    let mut out = Vec::new();
    sync.on_connect(relay, &relays, &alice, &mut out);
    let (sent, _) = wire.send(&mut sync, out);
    assert_eq!(sent.len(), 2);

    let mut out = Vec::new();
    for (id, _, _) in &sent {
        sync.on_failure(*id, &alice, &mut out);
    }
    sync.on_connect(relay, &relays, &alice, &mut out);
    assert_eq!(wire.send(&mut sync, out).0.len(), 2);
}

#[test]
fn a_tick_dials_members_of_an_unlinked_group_longest_untried_first() {
    let hikers = GroupId([1; 32]);
    let members: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
    let alice = Node::with(hikers, &members, &[]);
    let mut sync = SyncState::default();

    let mut out = Vec::new();
    sync.tick(SYNC_INTERVAL_MS, &[], &[], &alice, &mut out);
    let first = dials(&out);
    assert_eq!(first.len(), GROUP_LINKS);

    // Still nobody reached: the two never tried go first.
    let mut out = Vec::new();
    sync.tick(2 * SYNC_INTERVAL_MS, &[], &[], &alice, &mut out);
    let second = dials(&out);
    assert_eq!(second.len(), GROUP_LINKS);
    let untried: Vec<&PeerId> = members.iter().filter(|m| !first.contains(m)).collect();
    assert!(untried.iter().all(|m| second.contains(m)));

    // Linked to three: no dials.
    let mut out = Vec::new();
    sync.tick(3 * SYNC_INTERVAL_MS, &members[..3], &[], &alice, &mut out);
    assert!(dials(&out).is_empty());
}

#[test]
fn a_transfer_queue_drains_in_order_and_both_logs_converge() {
    let hikers = GroupId([1; 32]);
    let (alice_id, bob_id) = (PeerId::random(), PeerId::random());
    let mut alice = Node::with(hikers, &[bob_id], &[]);
    let mut bob = Node::with(hikers, &[alice_id], &[]);
    for n in 0..300 {
        alice.put(hikers, item(n));
    }
    for n in 1_000..1_100 {
        bob.put(hikers, item(n));
    }
    let (mut sync, mut bob_sync) = (SyncState::default(), SyncState::default());
    let mut wire = Wire::new();

    let mut out = Vec::new();
    sync.start(hikers, bob_id, &alice, &mut out);
    let (sent, _) = wire.send(&mut sync, out);
    let mut on_wire: VecDeque<Sent> = sent.into();
    let (mut pushed, mut handed_over) = (Vec::new(), Vec::new());
    let mut most_transfers = 0;
    // Bob answers our requests one at a time, oldest first.
    while let Some((id, peer, request)) = on_wire.pop_front() {
        let transfers = on_wire
            .iter()
            .chain([&(id, peer, request.clone())])
            .filter(|(_, _, r)| !matches!(r, SyncRequest::Reconcile { .. }))
            .count();
        assert!(transfers <= TRANSFERS_IN_FLIGHT);
        most_transfers = most_transfers.max(transfers);

        let mut bob_out = Vec::new();
        let response = bob_sync.answer(alice_id, Ok(request), &bob, |_| false, &mut bob_out);
        for o in bob_out {
            if let SyncOut::Take { from, items } = o {
                assert_eq!(from, alice_id);
                for bytes in items {
                    bob.put(hikers, item_of(&bytes));
                    pushed.push(bytes);
                }
            }
        }
        let mut out = Vec::new();
        sync.on_response(bob_id, id, response, &alice, &mut out);
        let (sent, rest) = wire.send(&mut sync, out);
        on_wire.extend(sent);
        for o in rest {
            match o {
                SyncOut::Take { items, .. } => {
                    for bytes in items {
                        alice.put(hikers, item_of(&bytes));
                    }
                }
                SyncOut::HandedOver(id) => handed_over.push(id),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // A steady stream: several transfers on the wire at once, never more than the limit.
    assert_eq!(most_transfers, TRANSFERS_IN_FLIGHT);
    // Five pushes of at most 64 items, in the order they were queued.
    let ours: Vec<Vec<u8>> = (0..300).map(|n| item(n).1.1).collect();
    assert_eq!(pushed, ours);
    let ours: Vec<MessageId> = (0..300).map(|n| item(n).0).collect();
    assert_eq!(handed_over, ours);
    assert_eq!(alice.ids(hikers), bob.ids(hikers));
    assert_eq!(alice.ids(hikers).len(), 400);
    assert!(sync.ops.is_empty() && sync.running.is_empty() && sync.queued.is_empty());
    assert!(sync.in_flight.is_empty());
}

#[test]
fn a_former_member_gets_only_the_membership_ops() {
    let hikers = GroupId([1; 32]);
    let (bob, carol, dave) = (PeerId::random(), PeerId::random(), PeerId::random());
    let mut alice = Node::with(hikers, &[bob], &[carol]);
    let (op, keys) = op_and_keys(hikers);
    alice.put(hikers, entry(&op));
    alice.put(hikers, entry(&keys));
    let (op_id, keys_id) = (LogItem::id_of(&op), LogItem::id_of(&keys));
    let mut sync = SyncState::default();
    let fetch = || {
        Ok(SyncRequest::Fetch {
            group_id: hikers,
            ids: vec![op_id, keys_id],
        })
    };

    // Carol asks for both: she gets the op, and only the op is handed over.
    let mut out = Vec::new();
    let response = sync.answer(carol, fetch(), &alice, |_| false, &mut out);
    assert_eq!(response, SyncResponse::Envelopes(vec![op.clone()]));
    assert!(matches!(out.as_slice(), [SyncOut::HandedOver(id)] if *id == op_id));
    // Bob, a member, gets both.
    let mut out = Vec::new();
    let response = sync.answer(bob, fetch(), &alice, |_| false, &mut out);
    assert_eq!(
        response,
        SyncResponse::Envelopes(vec![op.clone(), keys.clone()])
    );
    // Dave, who never was one, gets nothing.
    let mut out = Vec::new();
    let response = sync.answer(dave, fetch(), &alice, |_| false, &mut out);
    assert!(matches!(response, SyncResponse::Refused(_)));
    assert!(out.is_empty());

    // Syncing with carol, who lacks both, pushes her the op only.
    let mut sync = SyncState::default();
    let mut wire = Wire::new();
    let mut out = Vec::new();
    sync.start(hikers, carol, &alice, &mut out);
    let (sent, _) = wire.send(&mut sync, out);
    let [(id, _, SyncRequest::Reconcile { message, .. })] = sent.as_slice() else {
        panic!("expected one reconcile request, got {sent:?}");
    };
    let reply = respond(&SyncSet::default(), message, &Limits::default()).unwrap();
    let mut out = Vec::new();
    sync.on_response(carol, *id, SyncResponse::Reconcile(reply), &alice, &mut out);
    let (sent, rest) = wire.send(&mut sync, out);
    let pushes: Vec<&Vec<Vec<u8>>> = sent
        .iter()
        .filter_map(|(_, _, r)| match r {
            SyncRequest::Push { envelopes, .. } => Some(envelopes),
            _ => None,
        })
        .collect();
    assert_eq!(pushes, [&vec![op]]);
    assert!(matches!(rest.as_slice(), [SyncOut::HandedOver(id)] if *id == op_id));
}

#[test]
fn a_relay_answers_strangers_for_the_groups_it_carries() {
    let hikers = GroupId([1; 32]);
    let member = PeerId::random();
    let mut relay = Node::default();
    relay.groups.insert(hikers, Group::default());
    relay.put(hikers, item(1));
    let mut sync = SyncState::default();
    let push = || {
        Ok(SyncRequest::Push {
            group_id: hikers,
            envelopes: vec![item(2).1.1],
        })
    };

    let mut out = Vec::new();
    let response = sync.answer(member, push(), &relay, |g| *g == hikers, &mut out);
    assert_eq!(response, SyncResponse::Accepted);
    assert!(matches!(
        out.as_slice(),
        [SyncOut::KeepRelayed { group, items }] if *group == hikers && items.len() == 1
    ));
    let mut out = Vec::new();
    let response = sync.answer(member, push(), &relay, |_| false, &mut out);
    assert!(matches!(response, SyncResponse::Refused(_)));
    assert!(out.is_empty());

    // A frame that did not decode: refused, and counted against the peer.
    let mut out = Vec::new();
    let response = sync.answer(member, Err("garbage".into()), &relay, |_| true, &mut out);
    assert_eq!(response, SyncResponse::Refused("garbage".into()));
    assert!(matches!(out.as_slice(), [SyncOut::Strike { peer, .. }] if *peer == member));
}

#[test]
fn a_log_is_read_once_and_again_only_after_an_item_is_stored() {
    let hikers = GroupId([1; 32]);
    let mut alice = Node::with(hikers, &[PeerId::random()], &[]);
    alice.put(hikers, item(1));
    let mut sync = SyncState::default();
    assert_eq!(sync.log(&alice, &hikers).len(), 1);
    alice.put(hikers, item(2));
    assert_eq!(
        sync.log(&alice, &hikers).len(),
        1,
        "the set is kept until told"
    );
    sync.log_changed(&hikers);
    assert_eq!(sync.log(&alice, &hikers).len(), 2, "read again once told");
}
