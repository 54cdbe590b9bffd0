//! `Reach` as a plain struct: reservations, lookups, dials and publications.

use libp2p::kad::store::MemoryStore;
use tokio::sync::oneshot;

use super::*;

/// Issues DHT query ids as the actor would (the behaviour is never polled).
struct Dht(kad::Behaviour<MemoryStore>);

impl Dht {
    fn new() -> Self {
        let me = PeerId::random();
        Self(kad::Behaviour::new(me, MemoryStore::new(me)))
    }

    /// Starts the queries `outs` ask for and hands their ids back to `reach`.
    fn start(&mut self, reach: &mut Reach, outs: &[ReachOut]) -> Vec<QueryId> {
        let mut queries = Vec::new();
        for out in outs {
            if let ReachOut::KadGet { peer, key } = out {
                let query = self.0.get_record(key.clone());
                reach.lookup_started(*peer, query);
                queries.push(query);
            }
        }
        queries
    }
}

fn relay_at(relay: PeerId, host: u8) -> (PeerId, Multiaddr) {
    let addr = format!("/ip4/192.0.2.{host}/tcp/4001/p2p/{relay}");
    (relay, addr.parse().unwrap())
}

/// The relays `outs` ask to listen through.
fn listens(outs: &[ReachOut]) -> Vec<PeerId> {
    outs.iter()
        .filter_map(|out| match out {
            ReachOut::ListenOnCircuit { relay, .. } => Some(*relay),
            _ => None,
        })
        .collect()
}

/// The peers `outs` start a DHT lookup for.
fn lookups(outs: &[ReachOut]) -> Vec<PeerId> {
    outs.iter()
        .filter_map(|out| match out {
            ReachOut::KadGet { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

/// Sends the answers among `outs`, as the actor does.
fn answer(outs: Vec<ReachOut>) {
    for out in outs {
        match out {
            ReachOut::AnswerFind(reply, result) => {
                let _ = reply.send(result);
            }
            ReachOut::AnswerConnect(reply, result) => {
                let _ = reply.send(result);
            }
            _ => {}
        }
    }
}

fn accepted(relay: PeerId) -> relay::client::Event {
    relay::client::Event::ReservationReqAccepted {
        relay_peer_id: relay,
        renewal: false,
        limit: None,
    }
}

fn signed_record(who: &Identity, addrs: &[Multiaddr], issued_ms: u64) -> Record {
    let key = RecordKey::new(&AddrRecord::key_for(&who.peer_id()));
    Record::new(key, who.addr_record(addrs, issued_ms).encode())
}

#[test]
fn a_lost_reservation_is_retried_with_a_backoff_that_doubles_up_to_a_cap() {
    let alice = Identity::generate().unwrap();
    let relay = PeerId::random();
    let relays = [relay_at(relay, 1)];
    let mut reach = Reach::new(alice.peer_id(), false);
    assert_eq!(listens(&reach.start(&[], &relays, true)), [relay]);
    let mut listener = ListenerId::next();
    reach.listening(relay, listener);

    let mut now = 5_000;
    let mut backoff = RESERVE_BACKOFF_MS;
    for _ in 0..10 {
        assert!(reach.listener_closed(listener, now).is_empty());
        assert_eq!(reach.next_wakeup(), Some(now + backoff));
        let early = reach.tick(now + backoff - 1, &relays, &alice, &[], &[]);
        assert!(listens(&early).is_empty());
        now += backoff;
        assert_eq!(
            listens(&reach.tick(now, &relays, &alice, &[], &[])),
            [relay]
        );
        listener = ListenerId::next();
        reach.listening(relay, listener);
        backoff = (backoff * 2).min(MAX_RESERVE_BACKOFF_MS);
    }
    assert_eq!(backoff, MAX_RESERVE_BACKOFF_MS);
    assert!(reach.listener_closed(listener, now).is_empty());
    assert_eq!(reach.next_wakeup(), Some(now + MAX_RESERVE_BACKOFF_MS));

    // Once the relay takes our reservation, a later loss starts from the first backoff.
    let listener = ListenerId::next();
    reach.listening(relay, listener);
    let outs = reach.on_relay_client_event(accepted(relay), now);
    assert!(matches!(
        outs.as_slice(),
        [ReachOut::Emit(Event::RelayReservation {
            reserved: true,
            ..
        })]
    ));
    assert!(reach.is_reserved(&relay));
    let outs = reach.listener_closed(listener, now);
    assert!(matches!(
        outs.as_slice(),
        [ReachOut::Emit(Event::RelayReservation {
            reserved: false,
            ..
        })]
    ));
    assert!(!reach.is_reserved(&relay));
    assert_eq!(
        reach.retry.get(&relay),
        Some(&(now + RESERVE_BACKOFF_MS, RESERVE_BACKOFF_MS))
    );
}

#[test]
fn a_relay_that_comes_back_is_reserved_at_once_and_a_relay_node_never_reserves() {
    let relay = PeerId::random();
    let relays = [relay_at(relay, 1), relay_at(relay, 2)];
    let mut reach = Reach::new(PeerId::random(), false);
    // Listed twice (say over TCP and QUIC): one circuit.
    assert_eq!(listens(&reach.start(&[], &relays, true)), [relay]);
    let listener = ListenerId::next();
    reach.listening(relay, listener);
    reach.listener_closed(listener, 0);
    let outs = reach.connected(relay, ConnectionId::new_unchecked(1), &relays);
    assert_eq!(listens(&outs), [relay]);
    assert_eq!(reach.next_wakeup(), None);

    let mut relay_node = Reach::new(PeerId::random(), true);
    assert!(listens(&relay_node.start(&[], &relays, true)).is_empty());
    let outs = relay_node.connected(relay, ConnectionId::new_unchecked(2), &relays);
    assert!(listens(&outs).is_empty());
}

#[test]
fn a_contact_is_looked_up_at_most_once_per_interval_and_never_dialled_through_us() {
    let alice = PeerId::random();
    let bob = PeerId::random();
    let relay = PeerId::random();
    let mut dht = Dht::new();
    let mut reach = Reach::new(alice, false);
    assert!(matches!(
        reach.dial(bob, Vec::new()).as_slice(),
        [ReachOut::ViaRelays(p)] if *p == bob
    ));

    let card = [relay_at(relay, 1).1, relay_at(alice, 2).1];
    let outs = reach.via_relays(bob, &card, 0);
    let dials: Vec<&ReachOut> = outs
        .iter()
        .filter(|o| matches!(o, ReachOut::Dial { direct: false, .. }))
        .collect();
    assert_eq!(dials.len(), 1);
    assert_eq!(lookups(&outs), [bob]);
    let queries = dht.start(&mut reach, &outs);
    assert!(reach.lookup_finished(queries[0]).is_empty());

    // Only through ourselves: no dial at all.
    let outs = reach.via_relays(bob, &[relay_at(alice, 2).1], LOOKUP_INTERVAL_MS - 1);
    assert!(outs.is_empty(), "{outs:?}");
    let outs = reach.via_relays(bob, &[], LOOKUP_INTERVAL_MS);
    assert_eq!(lookups(&outs), [bob]);
}

#[test]
fn a_failed_direct_dial_falls_back_unless_the_contact_connected_meanwhile() {
    let bob = PeerId::random();
    let mut reach = Reach::new(PeerId::random(), false);
    let addr: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
    for (n, connected) in [(1, false), (2, true)] {
        let outs = reach.dial(bob, vec![addr.clone()]);
        assert!(matches!(
            outs.as_slice(),
            [ReachOut::Dial { direct: true, .. }]
        ));
        let connection = ConnectionId::new_unchecked(n);
        reach.dialling(bob, connection);
        let outs = reach.dial_failed(connection, connected);
        assert_eq!(
            matches!(outs.as_slice(), [ReachOut::ViaRelays(p)] if *p == bob),
            !connected
        );
    }
    // A dial that was not a direct dial to a contact.
    assert!(
        reach
            .dial_failed(ConnectionId::new_unchecked(3), false)
            .is_empty()
    );
}

#[test]
fn waiters_are_answered_when_the_lookup_finds_nothing() {
    let bob = PeerId::random();
    let mut dht = Dht::new();
    let mut reach = Reach::new(PeerId::random(), false);
    let (find, mut found) = oneshot::channel();
    let outs = reach.find_peer(bob, find);
    let queries = dht.start(&mut reach, &outs);
    assert_eq!(queries.len(), 1);
    let addr = Multiaddr::empty().with(Protocol::P2p(bob));
    let (connect, mut connected) = oneshot::channel();
    // Joins the lookup under way.
    assert!(reach.connect_by_id(addr, bob, connect, false).is_empty());

    answer(reach.lookup_finished(queries[0]));
    assert!(matches!(found.try_recv(), Ok(Err(NodeError::NotFound(_)))));
    assert!(matches!(
        connected.try_recv(),
        Ok(Err(NodeError::Dial { .. }))
    ));
    assert!(reach.lookup_finished(queries[0]).is_empty());
}

#[test]
fn waiters_are_answered_and_the_contact_dialled_when_its_record_is_found() {
    let bob = Identity::generate().unwrap();
    let mallory = Identity::generate().unwrap();
    let mut dht = Dht::new();
    let mut reach = Reach::new(PeerId::random(), false);
    let (find, mut found) = oneshot::channel();
    let outs = reach.find_peer(bob.peer_id(), find);
    let queries = dht.start(&mut reach, &outs);
    let id_addr = Multiaddr::empty().with(Protocol::P2p(bob.peer_id()));
    let (c1, _r1) = oneshot::channel();
    let (c2, _r2) = oneshot::channel();
    reach.connect_by_id(id_addr.clone(), bob.peer_id(), c1, false);
    reach.connect_by_id(id_addr, bob.peer_id(), c2, false);

    let at: Multiaddr = "/ip4/192.0.2.9/tcp/4001".parse().unwrap();
    // Mallory's record under Bob's lookup does not count.
    let wrong = signed_record(&mallory, std::slice::from_ref(&at), 1);
    assert!(reach.record_found(queries[0], &wrong).is_empty());

    let outs = reach.record_found(
        queries[0],
        &signed_record(&bob, std::slice::from_ref(&at), 1),
    );
    assert!(matches!(&outs[0], ReachOut::LearnAddr { addr, .. } if *addr == at));
    assert!(matches!(&outs[1], ReachOut::KadFinish(q) if *q == queries[0]));
    let Some(ReachOut::Connect { peer, waiters, .. }) = outs.last() else {
        panic!("no dial: {outs:?}");
    };
    assert_eq!((*peer, waiters.len()), (bob.peer_id(), 2));
    answer(outs);
    assert_eq!(found.try_recv().unwrap().unwrap(), [at.to_string()]);
    // The lookup is over: the query's end changes nothing.
    assert!(reach.lookup_finished(queries[0]).is_empty());
}

#[test]
fn too_many_lookups_at_once_are_refused() {
    let mut reach = Reach::new(PeerId::random(), false);
    let mut receivers = Vec::new();
    for _ in 0..MAX_LOOKUPS {
        let (tx, rx) = oneshot::channel();
        assert_eq!(reach.find_peer(PeerId::random(), tx).len(), 1);
        receivers.push(rx);
    }
    let (tx, mut rx) = oneshot::channel();
    answer(reach.find_peer(PeerId::random(), tx));
    assert!(matches!(rx.try_recv(), Ok(Err(NodeError::Busy(_)))));
}

#[test]
fn our_record_lists_confirmed_external_circuit_and_listen_addresses() {
    let alice = Identity::generate().unwrap();
    let relay = PeerId::random();
    let relays = [relay_at(relay, 1)];
    let mut reach = Reach::new(alice.peer_id(), false);
    reach.on_relay_client_event(accepted(relay), 0);
    assert_eq!(reach.next_wakeup(), Some(PUBLISH_DELAY_MS));
    let external: Multiaddr = "/ip4/198.51.100.1/tcp/4001".parse().unwrap();
    let listen: Multiaddr = "/ip4/10.0.0.2/tcp/4001".parse().unwrap();
    let listen_circuit = relays[0].1.clone().with(Protocol::P2pCircuit);
    let outs = reach.tick(
        PUBLISH_DELAY_MS,
        &relays,
        &alice,
        std::slice::from_ref(&external),
        &[listen.clone(), listen_circuit.clone(), external.clone()],
    );
    let [ReachOut::KadPut(record)] = outs.as_slice() else {
        panic!("expected a publication: {outs:?}");
    };
    let published = AddrRecord::decode(record.key.as_ref(), &record.value).unwrap();
    assert_eq!(published.peer_id().unwrap(), alice.peer_id());
    assert_eq!(
        published.multiaddrs(),
        [external, listen_circuit, listen],
        "external, then the circuit through the reserving relay, then listen addresses"
    );
    assert_eq!(reach.next_wakeup(), None);
}

/// A DHT server handles a put of `record` from `source`, as the actor does.
fn put(store: &mut MemoryStore, source: PeerId, record: Record) -> Option<ReachOut> {
    match dht_record_put(source, record) {
        ReachOut::KadKeep { record, issued_ms } => {
            keep_if_newer(store, record, issued_ms);
            None
        }
        other => Some(other),
    }
}

/// When the address record `store` holds for `peer` was issued.
fn held(store: &MemoryStore, peer: &PeerId) -> Option<u64> {
    let record = store.get(&RecordKey::new(&AddrRecord::key_for(peer)))?;
    AddrRecord::decode(record.key.as_ref(), &record.value)
        .ok()
        .map(|r| r.issued_ms)
}

#[test]
fn a_dht_server_keeps_only_newer_records_that_verify() {
    let bob = Identity::generate().unwrap();
    let mallory = PeerId::random();
    let mut store = MemoryStore::new(PeerId::random());
    let at: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().unwrap();
    let at = std::slice::from_ref(&at);

    assert!(put(&mut store, bob.peer_id(), signed_record(&bob, at, 2)).is_none());
    assert!(put(&mut store, mallory, signed_record(&bob, at, 1)).is_none());
    assert_eq!(
        held(&store, &bob.peer_id()),
        Some(2),
        "an older record replaced a newer one"
    );

    let mut forged = signed_record(&bob, at, 3);
    let last = forged.value.len() - 1;
    forged.value[last] ^= 1;
    assert!(matches!(
        put(&mut store, mallory, forged),
        Some(ReachOut::Strike { peer, .. }) if peer == mallory
    ));
    assert_eq!(held(&store, &bob.peer_id()), Some(2));

    assert!(put(&mut store, bob.peer_id(), signed_record(&bob, at, 3)).is_none());
    assert_eq!(held(&store, &bob.peer_id()), Some(3));
}
