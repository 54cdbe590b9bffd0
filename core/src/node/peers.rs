//! Who we know and who we are connected to: the address book, open connections, LAN peers
//! found by mDNS and their cards, strikes against peers that send garbage, and `connect`
//! calls waiting for their connection.
//!
//! `Peers` decides; the actor does what it asks ([`PeersOut`]): add an address to the
//! swarm, ask a LAN peer for its card, hang up, announce an event.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::{NearbyPeer, NodeError, PeerInfo, Reply};
use crate::event::{Event, Via};
use crate::identity::{ContactCard, SignedPrekey};
use crate::proto::rate::RateLimiter;
use crate::store::Store;

/// LAN peers remembered from mDNS.
const MAX_NEARBY: usize = 256;
/// Addresses remembered per peer.
pub(super) const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers in the address book.
const MAX_ADDR_BOOK_PEERS: usize = 4096;
/// Bad frames or envelopes a peer may send before we hang up on it.
const MAX_STRIKES: u32 = 16;
/// Peers whose strikes are counted; past this the count starts again.
const MAX_STRUCK_PEERS: usize = 4096;
/// Inbound requests (dm, mailbox) a peer may send in a burst (a dm request carries up to
/// 64 envelopes).
const INBOUND_BURST: u32 = 4096;
/// Inbound requests per second a peer may sustain.
const INBOUND_PER_SECOND: u32 = 2048;
/// Peers whose request rate is tracked.
const MAX_RATE_PEERS: usize = 4096;
/// Failed card requests to a LAN peer retried at once.
const CARD_RETRIES: u32 = 3;

/// A LAN peer found by mDNS.
#[derive(Debug, Default)]
struct NearbyEntry {
    card: Option<ContactCard>,
    /// Its signed prekey, if its build has sessions (goes into the contact code shown).
    prekey: Option<SignedPrekey>,
    card_requested: bool,
    /// Card requests that failed; a few are retried at once, then only when a connection
    /// to the peer opens (mDNS does not report a known peer again).
    card_failures: u32,
}

/// What `Peers` asks the actor to do.
#[derive(Debug)]
pub(super) enum PeersOut {
    /// Tell the swarm where `peer` can be dialled.
    AddAddress(PeerId, Multiaddr),
    /// Ask a LAN peer for its contact card.
    RequestCard(PeerId),
    /// Hang up on a peer that keeps misbehaving.
    Disconnect(PeerId),
    /// Announce to subscribers.
    Emit(Event),
}

/// Address book, connections, LAN peers and strikes.
#[derive(Debug)]
pub(super) struct Peers {
    /// Our own peer id: mDNS reports us too.
    me: PeerId,
    /// Open connections and their remote addresses.
    connected: BTreeMap<PeerId, BTreeMap<ConnectionId, Multiaddr>>,
    /// LAN peers from mDNS, with their cards once asked.
    nearby: BTreeMap<PeerId, NearbyEntry>,
    /// Where we listen (what `identity` reports).
    listen_addrs: BTreeSet<Multiaddr>,
    /// Misbehaviour per peer.
    strikes: HashMap<PeerId, u32>,
    /// Inbound requests per peer: a flood is answered with `Retry` and not processed.
    inbound: RateLimiter<PeerId>,
    /// Where each peer was last reachable (identify, mDNS, our own dials, earlier runs).
    /// Dials always offer these, so an address survives a failed dial attempt.
    addr_book: BTreeMap<PeerId, Vec<Multiaddr>>,
    /// `connect` calls waiting for the connection being dialled.
    pending_connect: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
}

impl Peers {
    /// No one known yet; `listen_addrs` are the addresses the listeners got.
    pub(super) fn new(me: PeerId, listen_addrs: BTreeSet<Multiaddr>) -> Self {
        Self {
            me,
            connected: BTreeMap::new(),
            nearby: BTreeMap::new(),
            listen_addrs,
            strikes: HashMap::new(),
            inbound: RateLimiter::new(INBOUND_BURST, INBOUND_PER_SECOND, MAX_RATE_PEERS),
            addr_book: BTreeMap::new(),
            pending_connect: HashMap::new(),
        }
    }

    /// Whether we hold a connection to `peer`.
    pub(super) fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer)
    }

    /// Peers we hold a connection to.
    pub(super) fn connected(&self) -> Vec<PeerId> {
        self.connected.keys().copied().collect()
    }

    /// Our listen addresses.
    pub(super) fn listen_addrs(&self) -> impl Iterator<Item = &Multiaddr> {
        self.listen_addrs.iter()
    }

    /// A listener got an address.
    pub(super) fn listening(&mut self, addr: Multiaddr) {
        self.listen_addrs.insert(addr);
    }

    /// A listener lost an address.
    pub(super) fn not_listening(&mut self, addr: &Multiaddr) {
        self.listen_addrs.remove(addr);
    }

    /// Every address we know for `peer`, newest first.
    pub(super) fn dial_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addr_book.get(peer).cloned().unwrap_or_default()
    }

    /// Adds an address to the book (newest first, a few per peer, a bounded number of
    /// peers); the swarm learns it too.
    pub(super) fn learn_addr(&mut self, peer: PeerId, addr: Multiaddr, out: &mut Vec<PeersOut>) {
        if !self.addr_book.contains_key(&peer) && self.addr_book.len() >= MAX_ADDR_BOOK_PEERS {
            return;
        }
        let addrs = self.addr_book.entry(peer).or_default();
        addrs.retain(|a| *a != addr);
        addrs.insert(0, addr.clone());
        addrs.truncate(MAX_ADDRS_PER_PEER);
        out.push(PeersOut::AddAddress(peer, addr));
    }

    /// Answers `reply` when connection `id` (being dialled) opens or fails.
    pub(super) fn await_connection(
        &mut self,
        id: ConnectionId,
        waiter: (Multiaddr, Reply<PeerId>),
    ) {
        self.pending_connect.insert(id, waiter);
    }

    /// A connection opened; true if it is the first to `peer` (it is online now).
    pub(super) fn opened(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        addr: Multiaddr,
        dialer: bool,
        out: &mut Vec<PeersOut>,
    ) -> bool {
        if let Some((_, reply)) = self.pending_connect.remove(&connection) {
            let _ = reply.send(Ok(peer));
        }
        if dialer {
            self.learn_addr(peer, addr.clone(), out);
        }
        let relayed = addr.iter().any(|p| matches!(p, Protocol::P2pCircuit));
        let connections = self.connected.entry(peer).or_default();
        connections.insert(connection, addr);
        let first = connections.len() == 1;
        self.card_on_connect(peer, out);
        if first {
            tracing::info!(%peer, "connected");
            out.push(PeersOut::Emit(Event::PeerConnected {
                peer_id: peer.to_string(),
                via: if relayed { Via::Relay } else { Via::Direct },
            }));
        }
        first
    }

    /// A connection closed; true if it was the last one to `peer`.
    pub(super) fn closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        out: &mut Vec<PeersOut>,
    ) -> bool {
        let Some(connections) = self.connected.get_mut(&peer) else {
            return false;
        };
        connections.remove(&connection);
        if !connections.is_empty() {
            return false;
        }
        self.connected.remove(&peer);
        tracing::info!(%peer, "disconnected");
        out.push(PeersOut::Emit(Event::PeerDisconnected {
            peer_id: peer.to_string(),
        }));
        true
    }

    /// A dial failed: a `connect` waiting for it gets the error.
    pub(super) fn dial_failed(&mut self, connection: ConnectionId, detail: &str) -> bool {
        match self.pending_connect.remove(&connection) {
            Some((addr, reply)) => {
                let _ = reply.send(Err(NodeError::Dial {
                    addr: addr.to_string(),
                    detail: detail.to_owned(),
                }));
                true
            }
            None => false,
        }
    }

    /// Whether `peer` may make another request now (dm or mailbox).
    pub(super) fn allow(&mut self, peer: &PeerId, now: u64) -> bool {
        self.inbound.allow(peer, now)
    }

    /// Counts misbehaviour; a peer that keeps sending garbage is disconnected.
    pub(super) fn strike(&mut self, peer: PeerId, why: &str, out: &mut Vec<PeersOut>) {
        let strikes = self.strikes.entry(peer).or_insert(0);
        *strikes += 1;
        tracing::info!(%peer, strikes = *strikes, "{why}");
        if *strikes >= MAX_STRIKES {
            self.strikes.remove(&peer);
            out.push(PeersOut::Disconnect(peer));
        }
        if self.strikes.len() > MAX_STRUCK_PEERS {
            self.strikes.clear();
        }
    }

    /// mDNS found `peer` at `addr`: remember it and ask for its card.
    pub(super) fn discovered(&mut self, peer: PeerId, addr: Multiaddr, out: &mut Vec<PeersOut>) {
        if peer == self.me {
            return;
        }
        self.learn_addr(peer, addr, out);
        if !self.nearby.contains_key(&peer) {
            if self.nearby.len() >= MAX_NEARBY {
                return;
            }
            self.nearby.insert(peer, NearbyEntry::default());
        }
        if self.nearby.get(&peer).is_some_and(|e| !e.card_requested) {
            self.request_card(peer, out);
        }
    }

    /// mDNS no longer sees `peer` (`still_there`: on another interface it does).
    pub(super) fn expired(&mut self, peer: &PeerId, still_there: bool) {
        if !still_there {
            self.nearby.remove(peer);
        }
    }

    fn request_card(&mut self, peer: PeerId, out: &mut Vec<PeersOut>) {
        if let Some(entry) = self.nearby.get_mut(&peer) {
            entry.card_requested = true;
            out.push(PeersOut::RequestCard(peer));
        }
    }

    /// A connection to a LAN peer whose card we lack: ask again.
    fn card_on_connect(&mut self, peer: PeerId, out: &mut Vec<PeersOut>) {
        let wanted = self
            .nearby
            .get(&peer)
            .is_some_and(|e| e.card.is_none() && !e.card_requested);
        if wanted {
            self.request_card(peer, out);
        }
    }

    /// A LAN peer answered with its card.
    pub(super) fn card_received(
        &mut self,
        peer: PeerId,
        card: ContactCard,
        prekey: Option<SignedPrekey>,
        out: &mut Vec<PeersOut>,
    ) {
        if card.peer_id().ok() != Some(peer) {
            self.strike(peer, "card for another peer", out);
            return;
        }
        if let Some(entry) = self.nearby.get_mut(&peer) {
            let first = entry.card.is_none();
            entry.card = Some(card);
            entry.prekey = prekey;
            // Announced once the peer is known to be a Bonghwa node with a name, that is,
            // once it appears in `nearby`.
            if first {
                out.push(PeersOut::Emit(Event::PeerDiscovered {
                    peer_id: peer.to_string(),
                    source: "mdns",
                }));
            }
        }
    }

    /// A card request failed: retried at once a few times.
    pub(super) fn card_failed(&mut self, peer: PeerId, out: &mut Vec<PeersOut>) {
        let retry = match self.nearby.get_mut(&peer) {
            Some(entry) => {
                entry.card_requested = false;
                entry.card_failures = entry.card_failures.saturating_add(1);
                entry.card.is_none() && entry.card_failures <= CARD_RETRIES
            }
            None => false,
        };
        if retry {
            self.request_card(peer, out);
        }
    }

    /// `peers`: each connected peer, how, and its name if we know one.
    pub(super) fn list(&self, store: &dyn Store) -> Vec<PeerInfo> {
        self.connected
            .iter()
            .map(|(peer, connections)| {
                let relayed = connections
                    .values()
                    .all(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit)));
                PeerInfo {
                    peer_id: peer.to_string(),
                    addrs: connections.values().map(ToString::to_string).collect(),
                    via: if relayed { Via::Relay } else { Via::Direct },
                    name: self.name_of(peer, store),
                }
            })
            .collect()
    }

    fn name_of(&self, peer: &PeerId, store: &dyn Store) -> Option<String> {
        if let Ok(Some(contact)) = store.contact(&peer.to_string()) {
            return Some(contact.display_name().to_owned());
        }
        self.nearby
            .get(peer)
            .and_then(|n| n.card.as_ref())
            .map(|c| c.name.clone())
    }

    /// `nearby`: LAN peers whose card we have.
    pub(super) fn nearby(&self) -> Vec<NearbyPeer> {
        self.nearby
            .iter()
            .filter_map(|(peer, n)| {
                let card = n.card.as_ref()?;
                Some(NearbyPeer {
                    peer_id: peer.to_string(),
                    name: card.name.clone(),
                    contact_code: card.to_code_with(n.prekey.as_ref()),
                })
            })
            .collect()
    }

    /// Addresses we remembered for `peer` in an earlier run.
    pub(super) fn remembered_addrs(peer: &PeerId, store: &dyn Store) -> Vec<Multiaddr> {
        match store.peer_addrs(peer) {
            Ok(mut addrs) => {
                addrs.truncate(MAX_ADDRS_PER_PEER);
                addrs
            }
            Err(e) => {
                tracing::warn!("cannot read the addresses of {peer}: {e:#}");
                Vec::new()
            }
        }
    }

    /// Remembers a contact's current addresses (from identify) for the next run.
    pub(super) fn remember_addrs(&self, peer: &PeerId, store: &dyn Store) {
        let Some(addrs) = self.addr_book.get(peer) else {
            return;
        };
        let kept = &addrs[..addrs.len().min(MAX_ADDRS_PER_PEER)];
        if let Err(e) = store.set_peer_addrs(peer, kept) {
            tracing::warn!("cannot remember addresses of {peer}: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn the_address_book_keeps_the_newest_few_addresses_per_peer() {
        let mut peers = Peers::new(peer(), BTreeSet::new());
        let bob = peer();
        let mut out = Vec::new();
        for port in 1..=20 {
            peers.learn_addr(bob, addr(port), &mut out);
        }
        peers.learn_addr(bob, addr(15), &mut out);
        let addrs = peers.dial_addrs(&bob);
        assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(
            addrs[0],
            addr(15),
            "a seen-again address moves to the front"
        );
        assert_eq!(addrs[1], addr(20));
        assert_eq!(addrs.iter().filter(|a| **a == addr(15)).count(), 1);
        assert_eq!(out.len(), 21, "the swarm learns every address");
    }

    #[test]
    fn a_peer_that_keeps_sending_garbage_is_hung_up_on_once() {
        let mut peers = Peers::new(peer(), BTreeSet::new());
        let mallory = peer();
        let mut out = Vec::new();
        for _ in 0..MAX_STRIKES - 1 {
            peers.strike(mallory, "bad frame", &mut out);
        }
        assert!(out.is_empty());
        peers.strike(mallory, "bad frame", &mut out);
        assert!(matches!(out.as_slice(), [PeersOut::Disconnect(p)] if *p == mallory));
        out.clear();
        peers.strike(mallory, "bad frame", &mut out);
        assert!(out.is_empty(), "the count starts again after a hang-up");
    }

    #[test]
    fn online_means_at_least_one_connection_and_each_change_is_announced_once() {
        let mut peers = Peers::new(peer(), BTreeSet::new());
        let bob = peer();
        let (one, two) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        let mut out = Vec::new();
        assert!(peers.opened(bob, one, addr(1), true, &mut out));
        assert!(!peers.opened(bob, two, addr(2), false, &mut out));
        let connected = out
            .iter()
            .filter(|o| matches!(o, PeersOut::Emit(Event::PeerConnected { .. })))
            .count();
        assert_eq!(connected, 1);
        out.clear();
        assert!(!peers.closed(bob, one, &mut out));
        assert!(peers.is_connected(&bob));
        assert!(peers.closed(bob, two, &mut out));
        assert!(!peers.is_connected(&bob));
        assert!(matches!(
            out.as_slice(),
            [PeersOut::Emit(Event::PeerDisconnected { .. })]
        ));
    }

    #[test]
    fn a_lan_peer_is_listed_once_its_own_card_arrives_and_a_forged_card_is_a_strike() {
        let me = peer();
        let mut peers = Peers::new(me, BTreeSet::new());
        let bob = Identity::generate().unwrap();
        let carol = Identity::generate().unwrap();
        let mut out = Vec::new();
        peers.discovered(me, addr(1), &mut out);
        assert!(out.is_empty(), "mDNS reports us too; we are not nearby");
        peers.discovered(bob.peer_id(), addr(2), &mut out);
        assert!(
            out.iter()
                .any(|o| matches!(o, PeersOut::RequestCard(p) if *p == bob.peer_id()))
        );
        assert!(peers.nearby().is_empty(), "no card yet");
        out.clear();
        peers.card_received(
            bob.peer_id(),
            carol.card("carol", Vec::new(), 1),
            None,
            &mut out,
        );
        assert!(
            peers.nearby().is_empty(),
            "carol's card sent by bob is refused"
        );
        peers.card_received(
            bob.peer_id(),
            bob.card("bob", Vec::new(), 1),
            None,
            &mut out,
        );
        let nearby = peers.nearby();
        assert_eq!(nearby.len(), 1);
        assert_eq!(nearby[0].name, "bob");
    }

    #[test]
    fn a_failed_card_request_is_retried_a_few_times_only() {
        let mut peers = Peers::new(peer(), BTreeSet::new());
        let bob = peer();
        let mut out = Vec::new();
        peers.discovered(bob, addr(1), &mut out);
        out.clear();
        for _ in 0..CARD_RETRIES {
            peers.card_failed(bob, &mut out);
        }
        assert_eq!(out.len(), CARD_RETRIES as usize);
        out.clear();
        peers.card_failed(bob, &mut out);
        assert!(out.is_empty());
    }
}
