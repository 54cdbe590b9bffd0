//! Reaching peers beyond the LAN: relay reservations, AutoNAT, DCUtR hole punching and the
//! Kademlia DHT.
//!
//! - Reservations: a client listens on `<relay>/p2p-circuit` at each of its relays, so
//!   others can reach it through them. A lost reservation (relay gone) is retried with
//!   backoff, and at once when a connection to the relay opens again.
//! - Dialling a contact: first the direct addresses we know; if that fails, through the
//!   relays its contact card lists (`<relay>/p2p-circuit/p2p/<contact>`), and a DHT lookup
//!   for fresher addresses. DCUtR then tries to turn a relayed connection into a direct one.
//! - DHT: relays serve `/bonghwa/kad/1.0.0`; clients publish a signed address record under
//!   a key derived from their peer id and look others up by peer id. DHT servers store only
//!   records that verify, and readers check them again.

use std::collections::{BTreeSet, HashMap};

use libp2p::core::transport::ListenerId;
use libp2p::kad::{self, QueryId, QueryResult, Quorum, Record, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, autonat, dcutr, relay};

use super::actor::Actor;
use super::mail_client::relay_addrs;
use super::{NodeError, Reply, now_ms};
use crate::event::{Event, Reachability};
use crate::identity::{AddrRecord, MAX_RECORD_ADDRS};

/// First wait before retrying a lost reservation; doubles up to [`MAX_RESERVE_BACKOFF_MS`].
const RESERVE_BACKOFF_MS: u64 = 1_000;
/// Longest wait between attempts to reach a relay that is gone.
const MAX_RESERVE_BACKOFF_MS: u64 = 60_000;
/// How long after a change our address record is published (changes come in bursts).
const PUBLISH_DELAY_MS: u64 = 1_000;
/// Wait before publishing again after a failed publication.
const PUBLISH_RETRY_MS: u64 = 30_000;
/// A contact is looked up in the DHT at most this often.
const LOOKUP_INTERVAL_MS: u64 = 60_000;
/// DHT lookups in flight at once.
const MAX_LOOKUPS: usize = 64;
/// Peers whose last lookup time is remembered.
const MAX_LOOKUP_MEMORY: usize = 4_096;
/// Callers waiting on one lookup.
const MAX_WAITERS: usize = 16;

/// What AutoNAT last told us.
#[derive(Clone, Debug, Default)]
pub(super) struct Nat {
    /// Public, private or not yet known.
    pub(super) status: Reachability,
    /// The address confirmed reachable, when public.
    pub(super) addr: Option<Multiaddr>,
}

/// Who waits for a DHT lookup.
#[derive(Debug)]
struct Lookup {
    peer: PeerId,
    /// `find_peer` callers: they get the addresses.
    finders: Vec<Reply<Vec<String>>>,
    /// `connect` callers: they get the peer once connected.
    connectors: Vec<(Multiaddr, Reply<PeerId>)>,
    /// Dial the peer when found (a contact the outbox is trying to reach).
    dial: bool,
}

/// Reservation, NAT and DHT state.
#[derive(Debug, Default)]
pub(super) struct Reach {
    /// This node is a relay: it serves, it does not reserve.
    relay_role: bool,
    /// Our circuit listeners, one per relay.
    listeners: HashMap<ListenerId, PeerId>,
    /// Relays that hold a reservation for us.
    reserved: BTreeSet<PeerId>,
    /// Relays to try again: when, and the backoff that got us there.
    retry: HashMap<PeerId, (u64, u64)>,
    pub(super) nat: Nat,
    lookups: HashMap<QueryId, Lookup>,
    last_lookup: HashMap<PeerId, u64>,
    /// Direct dials to contacts: if one fails, the relays are tried.
    direct_dials: HashMap<ConnectionId, PeerId>,
    publish_due: Option<u64>,
    /// The addresses in the record being published.
    publishing: Vec<String>,
    /// Whether the DHT has been bootstrapped (once a DHT server is known).
    bootstrapped: bool,
}

impl Reach {
    pub(super) fn new(relay_role: bool) -> Self {
        Self {
            relay_role,
            nat: Nat {
                status: Reachability::Unknown,
                addr: None,
            },
            ..Self::default()
        }
    }

    /// Whether `relay` holds a reservation for us.
    pub(super) fn is_reserved(&self, relay: &PeerId) -> bool {
        self.reserved.contains(relay)
    }

    /// When the actor must wake for reservation retries or a publication.
    pub(super) fn next_wakeup(&self) -> Option<u64> {
        self.retry
            .values()
            .map(|(due, _)| *due)
            .chain(self.publish_due)
            .min()
    }

    fn schedule_publish(&mut self, at: u64) {
        if self.relay_role {
            return;
        }
        self.publish_due = Some(self.publish_due.map_or(at, |due| due.min(at)));
    }
}

/// `addr` without a trailing `/p2p/<id>`.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

impl Actor {
    /// At start: the bootstrap peers seed the DHT and AutoNAT, and a client reserves a
    /// slot at each of its relays.
    pub(super) fn start_reach(&mut self, dial: bool) {
        for (peer, addr) in relay_addrs(&self.bootstrap) {
            let bare = without_peer(&addr);
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, bare.clone());
            self.swarm
                .behaviour_mut()
                .autonat
                .add_server(peer, Some(bare));
        }
        if dial && !self.reach.relay_role {
            let relays: Vec<PeerId> = self.mail.relays().iter().map(|(p, _)| *p).collect();
            for relay in relays {
                self.reserve(relay);
            }
        }
    }

    /// Listens through `relay` (which reserves a slot there), unless already doing so.
    fn reserve(&mut self, relay: PeerId) {
        if self.reach.relay_role || self.reach.listeners.values().any(|r| *r == relay) {
            return;
        }
        let Some((_, addr)) = self.mail.relays().iter().find(|(p, _)| *p == relay) else {
            return;
        };
        let circuit = addr.clone().with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit) {
            Ok(id) => {
                self.reach.listeners.insert(id, relay);
            }
            Err(e) => {
                tracing::debug!(%relay, "cannot listen through relay: {e}");
                self.retry_reservation(relay);
            }
        }
    }

    fn retry_reservation(&mut self, relay: PeerId) {
        let backoff = self
            .reach
            .retry
            .get(&relay)
            .map_or(RESERVE_BACKOFF_MS, |(_, b)| {
                b.saturating_mul(2).min(MAX_RESERVE_BACKOFF_MS)
            });
        self.reach
            .retry
            .insert(relay, (now_ms().saturating_add(backoff), backoff));
    }

    /// Due reservation retries and publications.
    pub(super) fn reach_tick(&mut self) {
        let now = now_ms();
        let due: Vec<PeerId> = self
            .reach
            .retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(relay, _)| *relay)
            .collect();
        for relay in due {
            // Keep the backoff until a reservation succeeds; only the due time moves.
            if let Some(entry) = self.reach.retry.get_mut(&relay) {
                entry.0 = now.saturating_add(entry.1);
            }
            self.reserve(relay);
        }
        if self.reach.publish_due.is_some_and(|at| at <= now) {
            self.reach.publish_due = None;
            self.publish_addrs();
        }
    }

    /// A listener closed: if it was a relay circuit, the reservation is gone.
    pub(super) fn on_listener_closed(&mut self, listener: ListenerId) {
        let Some(relay) = self.reach.listeners.remove(&listener) else {
            return;
        };
        if self.reach.reserved.remove(&relay) {
            tracing::info!(%relay, "relay reservation lost");
            self.emit(Event::RelayReservation {
                peer_id: relay.to_string(),
                reserved: false,
            });
        }
        self.retry_reservation(relay);
    }

    /// A connection opened: a relay that came back gets our reservation again at once.
    pub(super) fn reach_on_connect(&mut self, peer: PeerId, connection: ConnectionId) {
        self.reach.direct_dials.remove(&connection);
        if self.mail.is_relay(&peer) {
            self.reach.retry.remove(&peer);
            self.reserve(peer);
        }
    }

    /// A dial failed: if it was a direct dial to a contact, try its relays and the DHT.
    pub(super) fn reach_on_dial_failure(&mut self, connection: ConnectionId) {
        if let Some(peer) = self.reach.direct_dials.remove(&connection)
            && !self.is_online(&peer)
        {
            self.dial_via_relays(peer);
            self.lookup_for_dial(peer);
        }
    }

    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                self.reach.retry.remove(&relay_peer_id);
                if self.reach.reserved.insert(relay_peer_id) && !renewal {
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                    self.emit(Event::RelayReservation {
                        peer_id: relay_peer_id.to_string(),
                        reserved: true,
                    });
                }
                self.reach
                    .schedule_publish(now_ms().saturating_add(PUBLISH_DELAY_MS));
            }
            other => tracing::debug!(?other, "relay client"),
        }
    }

    pub(super) fn on_autonat_event(&mut self, event: autonat::Event) {
        let autonat::Event::StatusChanged { new, .. } = event else {
            return;
        };
        let (status, addr) = match new {
            autonat::NatStatus::Public(addr) => (Reachability::Public, Some(addr)),
            autonat::NatStatus::Private => (Reachability::Private, None),
            autonat::NatStatus::Unknown => (Reachability::Unknown, None),
        };
        tracing::info!(?status, ?addr, "reachability");
        self.reach.nat = Nat {
            status,
            addr: addr.clone(),
        };
        self.emit(Event::Reachability {
            status,
            addr: addr.map(|a| a.to_string()),
        });
        self.reach
            .schedule_publish(now_ms().saturating_add(PUBLISH_DELAY_MS));
    }

    pub(super) fn on_dcutr_event(&mut self, event: dcutr::Event) {
        let direct = event.result.is_ok();
        match &event.result {
            Ok(_) => tracing::info!(peer = %event.remote_peer_id, "hole punch: now direct"),
            Err(e) => tracing::info!(peer = %event.remote_peer_id, "hole punch failed: {e}"),
        }
        self.emit(Event::HolePunch {
            peer_id: event.remote_peer_id.to_string(),
            direct,
        });
    }

    /// A peer told us (identify) that it serves the DHT: add it, and bootstrap once.
    pub(super) fn learn_dht_server(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        for addr in addrs {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        if !self.reach.bootstrapped {
            self.reach.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
        }
        self.reach
            .schedule_publish(now_ms().saturating_add(PUBLISH_DELAY_MS));
    }

    /// Dials `peer` directly at the addresses we know; a failure falls back to relays.
    pub(super) fn dial_peer(&mut self, peer: PeerId) {
        let addrs = self.known_dial_addrs(&peer);
        if addrs.is_empty() {
            self.dial_via_relays(peer);
            self.lookup_for_dial(peer);
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                if self.reach.direct_dials.len() < MAX_LOOKUP_MEMORY {
                    self.reach.direct_dials.insert(id, peer);
                }
            }
            Err(e) => tracing::debug!(%peer, "cannot dial: {e}"),
        }
    }

    /// Dials `peer` through the relays its contact card lists.
    fn dial_via_relays(&mut self, peer: PeerId) {
        let Ok(Some(contact)) = self.store.contact(&peer.to_string()) else {
            return;
        };
        let circuits: Vec<Multiaddr> = relay_addrs(&contact.card.relay_multiaddrs())
            .into_iter()
            .filter(|(relay, _)| *relay != self.identity.peer_id())
            .map(|(_, addr)| addr.with(Protocol::P2pCircuit).with(Protocol::P2p(peer)))
            .collect();
        if circuits.is_empty() {
            return;
        }
        tracing::debug!(%peer, "dialling through its relays");
        if let Err(e) = self
            .swarm
            .dial(DialOpts::peer_id(peer).addresses(circuits).build())
        {
            tracing::debug!(%peer, "cannot dial through relays: {e}");
        }
    }

    /// Looks a contact up in the DHT (at most once a minute) and dials what is found.
    fn lookup_for_dial(&mut self, peer: PeerId) {
        let now = now_ms();
        if self
            .reach
            .last_lookup
            .get(&peer)
            .is_some_and(|at| now.saturating_sub(*at) < LOOKUP_INTERVAL_MS)
        {
            return;
        }
        if self.reach.last_lookup.len() >= MAX_LOOKUP_MEMORY {
            self.reach.last_lookup.clear();
        }
        self.reach.last_lookup.insert(peer, now);
        if let Some(lookup) = self.lookup(peer) {
            lookup.dial = true;
        }
    }

    /// Starts (or joins) a DHT lookup of `peer`'s address record.
    fn lookup(&mut self, peer: PeerId) -> Option<&mut Lookup> {
        let existing = self
            .reach
            .lookups
            .iter()
            .find(|(_, l)| l.peer == peer)
            .map(|(id, _)| *id);
        let id = match existing {
            Some(id) => id,
            None => {
                if self.reach.lookups.len() >= MAX_LOOKUPS {
                    return None;
                }
                let key = RecordKey::new(&AddrRecord::key_for(&peer));
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.reach.lookups.insert(
                    id,
                    Lookup {
                        peer,
                        finders: Vec::new(),
                        connectors: Vec::new(),
                        dial: false,
                    },
                );
                id
            }
        };
        self.reach.lookups.get_mut(&id)
    }

    /// `find_peer`: the addresses `peer` published in the DHT.
    pub(super) fn find_peer(&mut self, peer: PeerId, reply: Reply<Vec<String>>) {
        match self.lookup(peer) {
            Some(lookup) if lookup.finders.len() < MAX_WAITERS => lookup.finders.push(reply),
            _ => {
                let _ = reply.send(Err(NodeError::Busy("too many lookups at once".into())));
            }
        }
    }

    /// `connect` with only a peer id: look it up, then dial it.
    pub(super) fn connect_by_id(&mut self, addr: Multiaddr, peer: PeerId, reply: Reply<PeerId>) {
        if self.is_online(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        match self.lookup(peer) {
            Some(lookup) if lookup.connectors.len() < MAX_WAITERS => {
                lookup.connectors.push((addr, reply));
            }
            _ => {
                let _ = reply.send(Err(NodeError::Busy("too many lookups at once".into())));
            }
        }
    }

    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.store_dht_record(source, record),
            kad::Event::OutboundQueryProgressed { id, result, .. } => match result {
                QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                    self.on_record_found(id, &found.record);
                }
                QueryResult::GetRecord(_) => self.finish_lookup(id),
                QueryResult::PutRecord(Ok(_)) => {
                    tracing::info!("address record published");
                    self.emit(Event::AddressesPublished {
                        addrs: self.reach.publishing.clone(),
                    });
                }
                QueryResult::PutRecord(Err(e)) => {
                    tracing::info!("address record not published: {e}");
                    self.reach
                        .schedule_publish(now_ms().saturating_add(PUBLISH_RETRY_MS));
                }
                QueryResult::Bootstrap(Err(e)) => tracing::debug!("dht bootstrap: {e}"),
                _ => {}
            },
            other => tracing::trace!(?other, "kad"),
        }
    }

    /// A DHT server keeps only address records that verify, and only newer ones.
    fn store_dht_record(&mut self, source: PeerId, record: Record) {
        let Ok(new) = AddrRecord::decode(record.key.as_ref(), &record.value) else {
            self.strike(source, "bad dht record");
            return;
        };
        let kad = &mut self.swarm.behaviour_mut().kad;
        let newer = match kad::store::RecordStore::get(kad.store_mut(), &record.key) {
            Some(old) => AddrRecord::decode(old.key.as_ref(), &old.value)
                .map_or(true, |old| new.issued_ms > old.issued_ms),
            None => true,
        };
        if newer && let Err(e) = kad::store::RecordStore::put(kad.store_mut(), record) {
            tracing::info!("dht record not stored: {e}");
        }
    }

    fn on_record_found(&mut self, id: QueryId, record: &Record) {
        let Some(lookup) = self.reach.lookups.get(&id) else {
            return;
        };
        let peer = lookup.peer;
        let valid = AddrRecord::decode(record.key.as_ref(), &record.value)
            .ok()
            .filter(|r| r.peer_id().ok() == Some(peer));
        let Some(found) = valid else {
            tracing::info!(%peer, "dht returned a record that does not verify");
            return;
        };
        let addrs = found.multiaddrs();
        for addr in &addrs {
            self.learn_addr(peer, without_peer(addr));
        }
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
        let Some(mut lookup) = self.reach.lookups.remove(&id) else {
            return;
        };
        let texts: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        for reply in lookup.finders.drain(..) {
            let _ = reply.send(Ok(texts.clone()));
        }
        if !lookup.connectors.is_empty() || lookup.dial {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs.iter().map(without_peer).collect())
                .build();
            let connection = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    // The first waiter gets the connection's outcome; others are told at once
                    // that the dial is under way through the first.
                    let mut connectors = lookup.connectors.into_iter();
                    if let Some(first) = connectors.next() {
                        self.await_connection(connection, first);
                    }
                    for (_, reply) in connectors {
                        let _ = reply.send(Ok(peer));
                    }
                }
                Err(e) => {
                    for (addr, reply) in lookup.connectors {
                        let _ = reply.send(Err(NodeError::Dial {
                            addr: addr.to_string(),
                            detail: e.to_string(),
                        }));
                    }
                }
            }
        }
    }

    /// A lookup ended without a valid record.
    fn finish_lookup(&mut self, id: QueryId) {
        // A lookup that found a record was removed when it did.
        let Some(lookup) = self.reach.lookups.remove(&id) else {
            return;
        };
        let why = format!(
            "{} has no address record in the DHT (not online, or not connected to any relay)",
            lookup.peer
        );
        for reply in lookup.finders {
            let _ = reply.send(Err(NodeError::NotFound(why.clone())));
        }
        for (addr, reply) in lookup.connectors {
            let _ = reply.send(Err(NodeError::Dial {
                addr: addr.to_string(),
                detail: why.clone(),
            }));
        }
    }

    /// Publishes our address record: listen and confirmed external addresses, and a
    /// circuit through every relay that holds a reservation for us.
    fn publish_addrs(&mut self) {
        let me = self.identity.peer_id();
        let mut addrs: Vec<Multiaddr> = self.reach.nat.addr.iter().cloned().collect();
        addrs.extend(self.swarm.external_addresses().cloned());
        for (relay, addr) in self.mail.relays() {
            if self.reach.reserved.contains(relay) {
                addrs.push(addr.clone().with(Protocol::P2pCircuit));
            }
        }
        addrs.extend(
            self.listen_addrs()
                .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
                .cloned(),
        );
        let mut seen = BTreeSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        addrs.truncate(MAX_RECORD_ADDRS);
        if addrs.is_empty() {
            return;
        }
        let record = self.identity.addr_record(&addrs, now_ms());
        self.reach.publishing = record.addrs.clone();
        let record = Record::new(RecordKey::new(&AddrRecord::key_for(&me)), record.encode());
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)
        {
            tracing::info!("cannot publish our address record: {e}");
        }
    }
}
