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

//!
//! [`Reach`] owns this state and never touches the swarm: its methods take an event or a
//! command, `now` and the facts they need from the rest of the node, and return the
//! effects as [`ReachOut`]s, which the actor applies in order. Where an effect yields an id
//! Reach must remember (a circuit listener, a DHT query, a direct dial), the actor hands
//! the id back with a follow-up call.

use std::collections::{BTreeSet, HashMap};

use libp2p::core::transport::ListenerId;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, QueryId, QueryResult, Record, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, autonat, dcutr, relay};

use super::{NodeError, NodeResult, Reply, relay_addrs};
use crate::event::{Event, Reachability};
use crate::identity::{AddrRecord, Identity, MAX_RECORD_ADDRS};

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

/// An effect of [`Reach`], for the actor to carry out (in order).
#[derive(Debug)]
pub(super) enum ReachOut {
    /// Tell the DHT where `peer` (a bootstrap peer, or a DHT server) is.
    KadAddress { peer: PeerId, addr: Multiaddr },
    /// Let bootstrap peer `peer` probe whether we are reachable (AutoNAT).
    NatServer { peer: PeerId, addr: Multiaddr },
    /// Bootstrap the DHT; say whether it started with [`Reach::bootstrap_started`].
    KadBootstrap,
    /// Look up `peer`'s address record under `key`; hand the query back with
    /// [`Reach::lookup_started`].
    KadGet { peer: PeerId, key: RecordKey },
    /// A lookup found what it wanted: stop its query.
    KadFinish(QueryId),
    /// Publish our address record.
    KadPut(Record),
    /// As a DHT server, keep this verified address record, issued at `issued_ms`, unless
    /// the one we hold is as new: see [`keep_if_newer`].
    KadKeep { record: Record, issued_ms: u64 },
    /// Listen through `relay` at `addr`, which reserves a slot there; say how it went with
    /// [`Reach::listening`] or [`Reach::listen_failed`].
    ListenOnCircuit { relay: PeerId, addr: Multiaddr },
    /// Dial `peer`. A direct dial that starts is handed back with [`Reach::dialling`], so
    /// that its failure falls back to relays and the DHT.
    Dial {
        peer: PeerId,
        opts: DialOpts,
        direct: bool,
    },
    /// `peer` cannot be dialled directly: read the relays its contact card lists and call
    /// [`Reach::via_relays`].
    ViaRelays(PeerId),
    /// Dial what a lookup found. The first `connect` caller gets the connection's outcome,
    /// the others are answered once the dial is under way; all of them get the error if it
    /// cannot start.
    Connect {
        peer: PeerId,
        opts: DialOpts,
        waiters: Vec<(Multiaddr, Reply<PeerId>)>,
    },
    /// Remember that `peer` is reachable at `addr`.
    LearnAddr { peer: PeerId, addr: Multiaddr },
    /// `peer` sent something bad.
    Strike { peer: PeerId, why: &'static str },
    /// Tell subscribers.
    Emit(Event),
    /// Answer a `find_peer` caller.
    AnswerFind(Reply<Vec<String>>, NodeResult<Vec<String>>),
    /// Answer a `connect` caller.
    AnswerConnect(Reply<PeerId>, NodeResult<PeerId>),
}

/// What AutoNAT last told us.
#[derive(Clone, Debug, Default)]
struct Nat {
    /// Public, private or not yet known.
    status: Reachability,
    /// The address confirmed reachable, when public.
    addr: Option<Multiaddr>,
}

/// Who waits for a DHT lookup.
#[derive(Debug, Default)]
struct Lookup {
    /// `find_peer` callers: they get the addresses.
    finders: Vec<Reply<Vec<String>>>,
    /// `connect` callers: they get the peer once connected.
    connectors: Vec<(Multiaddr, Reply<PeerId>)>,
    /// Dial the peer when found (a contact the outbox is trying to reach).
    dial: bool,
}

/// Reservation, NAT and DHT state.
#[derive(Debug)]
pub(super) struct Reach {
    /// Our own peer id: we never dial a contact through ourselves.
    me: PeerId,
    /// This node is a relay: it serves, it does not reserve.
    relay_role: bool,
    /// Our circuit listeners, one per relay.
    listeners: HashMap<ListenerId, PeerId>,
    /// Relays that hold a reservation for us.
    reserved: BTreeSet<PeerId>,
    /// Relays to try again: when, and the backoff that got us there.
    retry: HashMap<PeerId, (u64, u64)>,
    /// What AutoNAT last told us; it goes into `identity` and our address record.
    nat: Nat,
    /// DHT lookups in flight, one per peer, with who waits for them.
    lookups: HashMap<PeerId, Lookup>,
    /// The DHT query of each lookup, to find the lookup when the query reports.
    queries: HashMap<QueryId, PeerId>,
    /// When each peer was last looked up for a dial (at most once a minute).
    last_lookup: HashMap<PeerId, u64>,
    /// Direct dials to contacts: if one fails, the relays are tried.
    direct_dials: HashMap<ConnectionId, PeerId>,
    /// When our address record is to be published next.
    publish_due: Option<u64>,
    /// The addresses in the record being published.
    publishing: Vec<String>,
    /// Whether the DHT has been bootstrapped (once a DHT server is known).
    bootstrapped: bool,
}

impl Reach {
    /// State for the node `me`; a relay (`relay_role`) serves and does not reserve.
    pub(super) fn new(me: PeerId, relay_role: bool) -> Self {
        Self {
            me,
            relay_role,
            listeners: HashMap::new(),
            reserved: BTreeSet::new(),
            retry: HashMap::new(),
            nat: Nat {
                status: Reachability::Unknown,
                addr: None,
            },
            lookups: HashMap::new(),
            queries: HashMap::new(),
            last_lookup: HashMap::new(),
            direct_dials: HashMap::new(),
            publish_due: None,
            publishing: Vec::new(),
            bootstrapped: false,
        }
    }

    /// Whether `relay` holds a reservation for us.
    pub(super) fn is_reserved(&self, relay: &PeerId) -> bool {
        self.reserved.contains(relay)
    }

    /// Whether others can reach us directly, as AutoNAT last said.
    pub(super) fn reachability(&self) -> Reachability {
        self.nat.status
    }

    /// When the actor must wake for reservation retries or a publication.
    pub(super) fn next_wakeup(&self) -> Option<u64> {
        self.retry
            .values()
            .map(|(due, _)| *due)
            .chain(self.publish_due)
            .min()
    }

    /// At start: the bootstrap peers seed the DHT and AutoNAT, and a client reserves a
    /// slot at each of its `relays` (if `reserve`).
    pub(super) fn start(
        &mut self,
        bootstrap: &[Multiaddr],
        relays: &[(PeerId, Multiaddr)],
        reserve: bool,
    ) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        for (peer, addr) in relay_addrs(bootstrap) {
            let bare = without_peer(&addr);
            outs.push(ReachOut::KadAddress {
                peer,
                addr: bare.clone(),
            });
            outs.push(ReachOut::NatServer { peer, addr: bare });
        }
        if reserve && !self.relay_role {
            for (relay, _) in relays {
                self.reserve(*relay, relays, &mut outs);
            }
        }
        outs
    }

    /// Due reservation retries, and our address record when its publication is due. The
    /// record lists the address AutoNAT confirmed, our `external` addresses, a circuit
    /// through each of our `relays` that holds a reservation for us, and our `listen`
    /// addresses; it is signed by `identity`.
    pub(super) fn tick(
        &mut self,
        now: u64,
        relays: &[(PeerId, Multiaddr)],
        identity: &Identity,
        external: &[Multiaddr],
        listen: &[Multiaddr],
    ) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        let due: Vec<PeerId> = self
            .retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(relay, _)| *relay)
            .collect();
        for relay in due {
            // Keep the backoff until a reservation succeeds; only the due time moves.
            if let Some(entry) = self.retry.get_mut(&relay) {
                entry.0 = now.saturating_add(entry.1);
            }
            self.reserve(relay, relays, &mut outs);
        }
        if self.publish_due.is_some_and(|at| at <= now) {
            self.publish_due = None;
            self.publish(now, relays, identity, external, listen, &mut outs);
        }
        outs
    }

    /// Listens through `relay` (which reserves a slot there), unless already doing so.
    fn reserve(&mut self, relay: PeerId, relays: &[(PeerId, Multiaddr)], outs: &mut Vec<ReachOut>) {
        // Also asked for already in this batch: a relay listed twice (over TCP and QUIC).
        let asked = outs.iter().any(|out| match out {
            ReachOut::ListenOnCircuit { relay: r, .. } => *r == relay,
            _ => false,
        });
        if self.relay_role || asked || self.listeners.values().any(|r| *r == relay) {
            return;
        }
        let Some((_, addr)) = relays.iter().find(|(p, _)| *p == relay) else {
            return;
        };
        outs.push(ReachOut::ListenOnCircuit {
            relay,
            addr: addr.clone().with(Protocol::P2pCircuit),
        });
    }

    /// The actor listens through `relay` as asked, on `listener`.
    pub(super) fn listening(&mut self, relay: PeerId, listener: ListenerId) {
        self.listeners.insert(listener, relay);
    }

    /// The actor could not listen through `relay`: try again later.
    pub(super) fn listen_failed(&mut self, relay: PeerId, now: u64) {
        self.retry_reservation(relay, now);
    }

    fn retry_reservation(&mut self, relay: PeerId, now: u64) {
        let backoff = self.retry.get(&relay).map_or(RESERVE_BACKOFF_MS, |(_, b)| {
            b.saturating_mul(2).min(MAX_RESERVE_BACKOFF_MS)
        });
        self.retry
            .insert(relay, (now.saturating_add(backoff), backoff));
    }

    fn schedule_publish(&mut self, at: u64) {
        if self.relay_role {
            return;
        }
        self.publish_due = Some(self.publish_due.map_or(at, |due| due.min(at)));
    }

    /// A listener closed: if it was a relay circuit, the reservation is gone.
    pub(super) fn listener_closed(&mut self, listener: ListenerId, now: u64) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        let Some(relay) = self.listeners.remove(&listener) else {
            return outs;
        };
        if self.reserved.remove(&relay) {
            tracing::info!(%relay, "relay reservation lost");
            outs.push(ReachOut::Emit(Event::RelayReservation {
                peer_id: relay.to_string(),
                reserved: false,
            }));
        }
        self.retry_reservation(relay, now);
        outs
    }

    /// A connection opened: a relay among our `relays` that came back gets our
    /// reservation again at once.
    pub(super) fn connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        relays: &[(PeerId, Multiaddr)],
    ) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        self.direct_dials.remove(&connection);
        if relays.iter().any(|(p, _)| *p == peer) {
            self.retry.remove(&peer);
            self.reserve(peer, relays, &mut outs);
        }
        outs
    }

    /// Dials `peer` directly at `addrs`, the addresses we know for it; with none, through
    /// its relays and the DHT.
    pub(super) fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Vec<ReachOut> {
        if addrs.is_empty() {
            return vec![ReachOut::ViaRelays(peer)];
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        vec![ReachOut::Dial {
            peer,
            opts,
            direct: true,
        }]
    }

    /// The actor started the direct dial to `peer` asked for, as `connection`.
    pub(super) fn dialling(&mut self, peer: PeerId, connection: ConnectionId) {
        if self.direct_dials.len() < MAX_LOOKUP_MEMORY {
            self.direct_dials.insert(connection, peer);
        }
    }

    /// A dial failed: if it was a direct dial to a contact and the contact is not
    /// `connected` by now (another dial may have won), try its relays and the DHT.
    pub(super) fn dial_failed(
        &mut self,
        connection: ConnectionId,
        connected: bool,
    ) -> Vec<ReachOut> {
        match self.direct_dials.remove(&connection) {
            Some(peer) if !connected => vec![ReachOut::ViaRelays(peer)],
            _ => Vec::new(),
        }
    }

    /// Dials `peer` through `card_relays`, the relays its contact card lists, and looks it
    /// up in the DHT (at most once a minute) to dial what is found.
    pub(super) fn via_relays(
        &mut self,
        peer: PeerId,
        card_relays: &[Multiaddr],
        now: u64,
    ) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        let circuits: Vec<Multiaddr> = relay_addrs(card_relays)
            .into_iter()
            .filter(|(relay, _)| *relay != self.me)
            .map(|(_, addr)| addr.with(Protocol::P2pCircuit).with(Protocol::P2p(peer)))
            .collect();
        if !circuits.is_empty() {
            tracing::debug!(%peer, "dialling through its relays");
            outs.push(ReachOut::Dial {
                peer,
                opts: DialOpts::peer_id(peer).addresses(circuits).build(),
                direct: false,
            });
        }
        self.lookup_for_dial(peer, now, &mut outs);
        outs
    }

    /// Looks a contact up in the DHT (at most once a minute) and dials what is found.
    fn lookup_for_dial(&mut self, peer: PeerId, now: u64, outs: &mut Vec<ReachOut>) {
        if self
            .last_lookup
            .get(&peer)
            .is_some_and(|at| now.saturating_sub(*at) < LOOKUP_INTERVAL_MS)
        {
            return;
        }
        if self.last_lookup.len() >= MAX_LOOKUP_MEMORY {
            self.last_lookup.clear();
        }
        self.last_lookup.insert(peer, now);
        if let Some(lookup) = self.lookup(peer, outs) {
            lookup.dial = true;
        }
    }

    /// Starts (or joins) a DHT lookup of `peer`'s address record; `None` when too many
    /// are under way.
    fn lookup(&mut self, peer: PeerId, outs: &mut Vec<ReachOut>) -> Option<&mut Lookup> {
        if !self.lookups.contains_key(&peer) {
            if self.lookups.len() >= MAX_LOOKUPS {
                return None;
            }
            self.lookups.insert(peer, Lookup::default());
            let key = RecordKey::new(&AddrRecord::key_for(&peer));
            outs.push(ReachOut::KadGet { peer, key });
        }
        self.lookups.get_mut(&peer)
    }

    /// The actor started the DHT query for `peer`'s lookup, as `query`.
    pub(super) fn lookup_started(&mut self, peer: PeerId, query: QueryId) {
        if self.lookups.contains_key(&peer) {
            self.queries.insert(query, peer);
        }
    }

    /// `find_peer`: the addresses `peer` published in the DHT.
    pub(super) fn find_peer(&mut self, peer: PeerId, reply: Reply<Vec<String>>) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        match self.lookup(peer, &mut outs) {
            Some(lookup) if lookup.finders.len() < MAX_WAITERS => lookup.finders.push(reply),
            _ => outs.push(ReachOut::AnswerFind(reply, Err(busy()))),
        }
        outs
    }

    /// `connect` with only a peer id (`addr` is `/p2p/<peer>`): unless already
    /// `connected`, look it up, then dial it.
    pub(super) fn connect_by_id(
        &mut self,
        addr: Multiaddr,
        peer: PeerId,
        reply: Reply<PeerId>,
        connected: bool,
    ) -> Vec<ReachOut> {
        if connected {
            return vec![ReachOut::AnswerConnect(reply, Ok(peer))];
        }
        let mut outs = Vec::new();
        match self.lookup(peer, &mut outs) {
            Some(lookup) if lookup.connectors.len() < MAX_WAITERS => {
                lookup.connectors.push((addr, reply));
            }
            _ => outs.push(ReachOut::AnswerConnect(reply, Err(busy()))),
        }
        outs
    }

    /// A relay accepted (or renewed) our reservation.
    pub(super) fn on_relay_client_event(
        &mut self,
        event: relay::client::Event,
        now: u64,
    ) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                self.retry.remove(&relay_peer_id);
                if self.reserved.insert(relay_peer_id) && !renewal {
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                    outs.push(ReachOut::Emit(Event::RelayReservation {
                        peer_id: relay_peer_id.to_string(),
                        reserved: true,
                    }));
                }
                self.schedule_publish(now.saturating_add(PUBLISH_DELAY_MS));
            }
            other => tracing::debug!(?other, "relay client"),
        }
        outs
    }

    /// AutoNAT changed its mind about whether we are reachable.
    pub(super) fn on_autonat_event(&mut self, event: autonat::Event, now: u64) -> Vec<ReachOut> {
        let autonat::Event::StatusChanged { new, .. } = event else {
            return Vec::new();
        };
        let (status, addr) = match new {
            autonat::NatStatus::Public(addr) => (Reachability::Public, Some(addr)),
            autonat::NatStatus::Private => (Reachability::Private, None),
            autonat::NatStatus::Unknown => (Reachability::Unknown, None),
        };
        tracing::info!(?status, ?addr, "reachability");
        self.nat = Nat {
            status,
            addr: addr.clone(),
        };
        self.schedule_publish(now.saturating_add(PUBLISH_DELAY_MS));
        vec![ReachOut::Emit(Event::Reachability {
            status,
            addr: addr.map(|a| a.to_string()),
        })]
    }

    /// A hole punch succeeded or failed.
    pub(super) fn on_dcutr_event(&self, event: dcutr::Event) -> Vec<ReachOut> {
        let direct = event.result.is_ok();
        match &event.result {
            Ok(_) => tracing::info!(peer = %event.remote_peer_id, "hole punch: now direct"),
            Err(e) => tracing::info!(peer = %event.remote_peer_id, "hole punch failed: {e}"),
        }
        vec![ReachOut::Emit(Event::HolePunch {
            peer_id: event.remote_peer_id.to_string(),
            direct,
        })]
    }

    /// A peer told us (identify) that it serves the DHT at `addrs`: add it, and bootstrap
    /// once.
    pub(super) fn dht_server(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        now: u64,
    ) -> Vec<ReachOut> {
        let mut outs: Vec<ReachOut> = addrs
            .iter()
            .map(|addr| ReachOut::KadAddress {
                peer,
                addr: addr.clone(),
            })
            .collect();
        if !self.bootstrapped {
            outs.push(ReachOut::KadBootstrap);
        }
        self.schedule_publish(now.saturating_add(PUBLISH_DELAY_MS));
        outs
    }

    /// The actor asked the DHT to bootstrap: `started` says whether it could.
    pub(super) fn bootstrap_started(&mut self, started: bool) {
        self.bootstrapped = started;
    }

    /// Records served to us, lookups answered, our publications.
    pub(super) fn on_kad_event(&mut self, event: kad::Event, now: u64) -> Vec<ReachOut> {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => vec![dht_record_put(source, record)],
            kad::Event::OutboundQueryProgressed { id, result, .. } => match result {
                QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                    self.record_found(id, &found.record)
                }
                QueryResult::GetRecord(_) => self.lookup_finished(id),
                QueryResult::PutRecord(Ok(_)) => {
                    tracing::info!("address record published");
                    vec![ReachOut::Emit(Event::AddressesPublished {
                        addrs: self.publishing.clone(),
                    })]
                }
                QueryResult::PutRecord(Err(e)) => {
                    tracing::info!("address record not published: {e}");
                    self.schedule_publish(now.saturating_add(PUBLISH_RETRY_MS));
                    Vec::new()
                }
                QueryResult::Bootstrap(Err(e)) => {
                    tracing::debug!("dht bootstrap: {e}");
                    Vec::new()
                }
                _ => Vec::new(),
            },
            other => {
                tracing::trace!(?other, "kad");
                Vec::new()
            }
        }
    }

    /// Lookup `query` found `record`: if it verifies, answer and dial.
    fn record_found(&mut self, query: QueryId, record: &Record) -> Vec<ReachOut> {
        let mut outs = Vec::new();
        let Some(&peer) = self.queries.get(&query) else {
            return outs;
        };
        let valid = AddrRecord::decode(record.key.as_ref(), &record.value)
            .ok()
            .filter(|r| r.peer_id().ok() == Some(peer));
        let Some(found) = valid else {
            tracing::info!(%peer, "dht returned a record that does not verify");
            return outs;
        };
        let addrs = found.multiaddrs();
        for addr in &addrs {
            outs.push(ReachOut::LearnAddr {
                peer,
                addr: without_peer(addr),
            });
        }
        outs.push(ReachOut::KadFinish(query));
        self.queries.remove(&query);
        let Some(lookup) = self.lookups.remove(&peer) else {
            return outs;
        };
        let texts: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        for reply in lookup.finders {
            outs.push(ReachOut::AnswerFind(reply, Ok(texts.clone())));
        }
        if !lookup.connectors.is_empty() || lookup.dial {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs.iter().map(without_peer).collect())
                .build();
            outs.push(ReachOut::Connect {
                peer,
                opts,
                waiters: lookup.connectors,
            });
        }
        outs
    }

    /// Lookup `query` ended without a valid record.
    fn lookup_finished(&mut self, query: QueryId) -> Vec<ReachOut> {
        // A lookup that found a record was removed when it did.
        let Some(lookup) = self
            .queries
            .remove(&query)
            .and_then(|peer| self.lookups.remove(&peer).map(|l| (peer, l)))
        else {
            return Vec::new();
        };
        let (peer, lookup) = lookup;
        let why = format!(
            "{peer} has no address record in the DHT (not online, or not connected to any relay)"
        );
        let mut outs = Vec::new();
        for reply in lookup.finders {
            outs.push(ReachOut::AnswerFind(
                reply,
                Err(NodeError::NotFound(why.clone())),
            ));
        }
        for (addr, reply) in lookup.connectors {
            outs.push(ReachOut::AnswerConnect(
                reply,
                Err(NodeError::Dial {
                    addr: addr.to_string(),
                    detail: why.clone(),
                }),
            ));
        }
        outs
    }

    /// Our address record: the confirmed and `external` addresses, a circuit through
    /// every relay that holds a reservation for us, our `listen` addresses.
    fn publish(
        &mut self,
        now: u64,
        relays: &[(PeerId, Multiaddr)],
        identity: &Identity,
        external: &[Multiaddr],
        listen: &[Multiaddr],
        outs: &mut Vec<ReachOut>,
    ) {
        let mut addrs: Vec<Multiaddr> = self.nat.addr.iter().cloned().collect();
        addrs.extend(external.iter().cloned());
        for (relay, addr) in relays {
            if self.reserved.contains(relay) {
                addrs.push(addr.clone().with(Protocol::P2pCircuit));
            }
        }
        addrs.extend(
            listen
                .iter()
                .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
                .cloned(),
        );
        let mut seen = BTreeSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        addrs.truncate(MAX_RECORD_ADDRS);
        if addrs.is_empty() {
            return;
        }
        let record = identity.addr_record(&addrs, now);
        self.publishing = record.addrs.clone();
        let key = RecordKey::new(&AddrRecord::key_for(&self.me));
        outs.push(ReachOut::KadPut(Record::new(key, record.encode())));
    }
}

fn busy() -> NodeError {
    NodeError::Busy("too many lookups at once".into())
}

/// A peer asks us, a DHT server, to store `record`: only address records that verify.
fn dht_record_put(source: PeerId, record: Record) -> ReachOut {
    match AddrRecord::decode(record.key.as_ref(), &record.value) {
        Ok(new) => ReachOut::KadKeep {
            issued_ms: new.issued_ms,
            record,
        },
        Err(_) => ReachOut::Strike {
            peer: source,
            why: "bad dht record",
        },
    }
}

/// Keeps `record`, an address record that verified and was issued at `issued_ms`, in a
/// DHT server's `store`, unless the one there is as new.
pub(super) fn keep_if_newer(store: &mut impl RecordStore, record: Record, issued_ms: u64) {
    let newer = match store.get(&record.key) {
        Some(old) => AddrRecord::decode(old.key.as_ref(), &old.value)
            .map_or(true, |old| issued_ms > old.issued_ms),
        None => true,
    };
    if newer && let Err(e) = store.put(record) {
        tracing::info!("dht record not stored: {e}");
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

#[cfg(test)]
mod tests;
