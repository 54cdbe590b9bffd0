//! The task that owns the `Swarm` and the store. It runs one `select!` loop over commands
//! from handles, swarm events and the outbox's retry timer; nothing else touches either.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::kad::Quorum;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping};
use tokio::sync::{broadcast, mpsc};

use super::group::Groups;
use super::group_sync::SyncState;
use super::mail_client::MailClient;
use super::reach::{self, Reach, ReachOut};
use super::{Command, Config, NodeError, NodeResult, Reply, now_ms, relay_addrs};
use crate::event::{Event, Via};
use crate::identity::{self, ContactCard, Identity};
use crate::model::{ChatId, ContactState, HlcClock, MessageId};
use crate::net::{self, Behaviour, BehaviourEvent, CardRequest};
use crate::proto::mailbox::Mailbox;
use crate::proto::outbox::{self, Outbox};
use crate::proto::rate::RateLimiter;
use crate::store::{Store, StoreError};
use crate::wire::DmResponse;

/// Swarm events handled in one round before group items are flushed once for all of them.
const MAX_EVENT_BATCH: usize = 64;
/// Commands handled in one round before the store is flushed once for all of them.
const MAX_COMMAND_BATCH: usize = 256;
/// How long a shutdown waits for deposits (messages, receipts) still on their way to a relay.
const SHUTDOWN_GRACE_MS: u64 = 10_000;
/// LAN peers remembered from mDNS.
const MAX_NEARBY: usize = 256;
/// Addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Inbound dm requests a peer may send in a burst (each carries up to 64 envelopes).
const DM_BURST: u32 = 4096;
/// Inbound dm requests per second a peer may sustain.
const DM_PER_SECOND: u32 = 2048;
/// Peers whose request rate is tracked.
const MAX_RATE_PEERS: usize = 4096;
/// Peers in the address book.
const MAX_ADDR_BOOK_PEERS: usize = 4096;
/// Bad frames or envelopes a peer may send before we hang up on it.
const MAX_STRIKES: u32 = 16;
/// Clock skew we accept from a sender before ignoring its timestamp for our clock.
pub(super) const MAX_SKEW_MS: u64 = 10 * 60 * 1000;

/// A LAN peer found by mDNS.
#[derive(Debug, Default)]
struct NearbyEntry {
    card: Option<ContactCard>,
    card_requested: bool,
    /// Card requests that failed; a few are retried at once, then only when a connection
    /// to the peer opens (mDNS does not report a known peer again).
    card_failures: u32,
}

/// Failed card requests to a LAN peer retried at once.
const CARD_RETRIES: u32 = 3;

/// State of one connected peer.
#[derive(Debug, Default)]
struct Connected {
    addrs: BTreeMap<ConnectionId, Multiaddr>,
}

pub(super) struct Actor {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) store: Box<dyn Store>,
    pub(super) identity: Identity,
    pub(super) name: String,
    pub(super) card: ContactCard,
    pub(super) clock: HlcClock,
    pub(super) outbox: Outbox,
    pub(super) ttl_ms: u64,
    pub(super) events: broadcast::Sender<Event>,
    commands: mpsc::Receiver<Command>,
    /// Outstanding dm requests: which messages each carries, to whom.
    pub(super) pending_dm: HashMap<OutboundRequestId, (PeerId, Vec<MessageId>)>,
    pending_connect: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    connected: BTreeMap<PeerId, Connected>,
    nearby: BTreeMap<PeerId, NearbyEntry>,
    listen_addrs: BTreeSet<Multiaddr>,
    strikes: HashMap<PeerId, u32>,
    /// Inbound dm requests per peer: a flood is answered with `Retry` and not processed.
    pub(super) inbound_rate: RateLimiter<PeerId>,
    /// Where each peer was last reachable (identify, mDNS, our own dials, earlier runs).
    /// Dials always offer these, so an address survives a failed dial attempt.
    addr_book: BTreeMap<PeerId, Vec<Multiaddr>>,
    pub(super) bootstrap: Vec<Multiaddr>,
    dial_on_start: bool,
    /// The mailbox's bookkeeping, on relay nodes only.
    pub(super) mailbox: Option<Mailbox>,
    /// Deposits mail at relays under a throwaway identity.
    pub(super) courier: net::Courier,
    /// Our relays, our fetches and deposits.
    pub(super) mail: MailClient,
    /// Relay reservations, NAT status, DHT lookups.
    pub(super) reach: Reach,
    /// Our groups.
    pub(super) groups: Groups,
    /// Group history repair in progress.
    pub(super) sync: SyncState,
    /// Shutting down: who to answer, and when to stop waiting for deposits in flight.
    stopping: Option<(Reply<()>, u64)>,
}

impl Actor {
    pub(super) async fn new(
        config: Config,
        identity: Identity,
        store: Box<dyn Store>,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<Event>,
    ) -> NodeResult<Self> {
        let roles = net::Roles {
            mdns: config.mdns,
            relay: config.relay.is_some(),
        };
        let mut swarm = net::build_swarm(&identity, roles)?;
        for addr in &config.external_addrs {
            swarm.add_external_address(addr.clone());
        }
        let name = match &config.name {
            Some(name) => {
                identity::check_name(name)?;
                store.set_name(name)?;
                name.clone()
            }
            None => match store.name() {
                Ok(Some(name)) => name,
                Ok(None) => default_name(&identity.peer_id()),
                // Only damage writes a name that is not UTF-8; a default beats refusing to start.
                Err(e @ StoreError::Decode { .. }) => {
                    tracing::warn!("{e:#}; using the default name");
                    default_name(&identity.peer_id())
                }
                Err(e) => return Err(e.into()),
            },
        };
        // Our mailboxes: the relays among the bootstrap peers, listed in our contact card.
        let relays = relay_addrs(&config.bootstrap);
        let card = identity.card(
            &name,
            relays.iter().map(|(_, addr)| addr.to_string()).collect(),
            now_ms(),
        );
        let listen = if config.listen.is_empty() {
            net::default_listen_addrs()
        } else {
            config.listen.clone()
        };
        // A port-0 address reuses the port it got last time, so contacts that remember
        // our address can reach us again after a restart; if that port is taken, any port.
        let mut listeners = HashMap::new();
        for addr in listen {
            let remembered = match store.listen_port(&addr) {
                Ok(port) => port,
                // A damaged record only costs the old port.
                Err(e @ StoreError::Decode { .. }) => {
                    tracing::warn!("{e:#}; listening on a new port");
                    None
                }
                Err(e) => return Err(e.into()),
            }
            .and_then(|port| with_port(&addr, port));
            let listen_err = |addr: &Multiaddr, e: &dyn std::fmt::Display| net::NetError::Listen {
                addr: addr.clone(),
                detail: e.to_string(),
            };
            let id = match remembered.map(|again| swarm.listen_on(again)) {
                Some(Ok(id)) => id,
                _ => swarm
                    .listen_on(addr.clone())
                    .map_err(|e| listen_err(&addr, &e))?,
            };
            listeners.insert(id, addr);
        }
        let mut listen_addrs = BTreeSet::new();
        // Wait until each listener has an address, so `identity` is right from the start.
        // Anything else that happens meanwhile (an mDNS discovery, an inbound connection)
        // is kept and handled once the actor exists: mDNS reports a peer only once.
        let mut early = Vec::new();
        let deadline = tokio::time::Instant::now() + super::LISTEN_TIMEOUT;
        while !listeners.is_empty() {
            let event = match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
                Ok(event) => event,
                Err(_) => break,
            };
            match event {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    if let Some(configured) = listeners.remove(&listener_id)
                        && let Some(port) = port_of(&address)
                    {
                        store.set_listen_port(&configured, port)?;
                    }
                    listen_addrs.insert(address);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    addresses,
                } => {
                    let detail = match reason {
                        Ok(()) => "closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    return Err(net::NetError::Listen {
                        addr: addresses.first().cloned().unwrap_or(Multiaddr::empty()),
                        detail: format!("listener {listener_id:?} {detail}"),
                    }
                    .into());
                }
                other => early.push(other),
            }
        }
        // A relay tells its clients where it is reachable; without --external-addr, its own
        // listen addresses (a relay does not probe itself through its clients: see
        // `net::autonat_config`).
        if roles.relay && config.external_addrs.is_empty() {
            for addr in &listen_addrs {
                swarm.add_external_address(addr.clone());
            }
        }
        let ttl_ms = u64::try_from(config.message_ttl.as_millis()).unwrap_or(u64::MAX);
        let groups = Groups::new(&identity)?;
        let reach = Reach::new(identity.peer_id(), roles.relay);
        let mut actor = Self {
            swarm,
            store,
            identity,
            name,
            card,
            clock: HlcClock::default(),
            outbox: Outbox::new(seed()),
            ttl_ms,
            events,
            commands,
            pending_dm: HashMap::new(),
            pending_connect: HashMap::new(),
            connected: BTreeMap::new(),
            nearby: BTreeMap::new(),
            listen_addrs,
            strikes: HashMap::new(),
            inbound_rate: RateLimiter::new(DM_BURST, DM_PER_SECOND, MAX_RATE_PEERS),
            addr_book: BTreeMap::new(),
            bootstrap: config.bootstrap,
            dial_on_start: config.dial_on_start,
            mailbox: config.relay.map(Mailbox::new),
            courier: net::build_courier()?,
            mail: MailClient::new(relays),
            stopping: None,
            reach,
            groups,
            sync: SyncState::default(),
        };
        actor.restore_groups()?;
        actor.restore_mailbox()?;
        actor.resume()?;
        for event in early {
            actor.handle_swarm_event(event);
        }
        actor.commit_groups()?;
        Ok(actor)
    }

    /// Loads contacts and the outbox from the store and dials what we know.
    fn resume(&mut self) -> NodeResult<()> {
        let now = now_ms();
        for contact in self.store.contacts()? {
            let Ok(peer) = contact.peer_id.parse::<PeerId>() else {
                continue;
            };
            for addr in self.known_addrs(&peer) {
                self.learn_addr(peer, addr);
            }
            if contact.state == ContactState::Accepted {
                self.swarm.behaviour_mut().keep_alive.set_kept(peer, true);
                if self.dial_on_start {
                    self.dial_peer(peer);
                }
            }
        }
        for addr in self.bootstrap.clone() {
            if !self.dial_on_start {
                break;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, "cannot dial bootstrap peer: {e:#}");
            }
        }
        // Messages sent in an earlier run keep their order and their ids.
        let entries = self.store.outbox()?;
        for entry in entries {
            self.clock.observe(
                crate::model::Hlc {
                    ms: entry.created_ms,
                    counter: 0,
                },
                now,
                MAX_SKEW_MS,
            );
            let outputs = self.outbox.handle(outbox::Input::Queued(entry), now);
            self.apply_outbox(outputs);
        }
        let outs = self
            .reach
            .start(&self.bootstrap, &self.mail.relays, self.dial_on_start);
        self.apply_reach(outs);
        Ok(())
    }

    /// Ends a batch of group work from the event loop; a store failure is logged (what
    /// is lost comes back by sync).
    fn commit_groups_logged(&mut self) {
        if let Err(e) = self.commit_groups() {
            tracing::error!("cannot make group items durable: {e:#}");
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            if let Some((_, deadline)) = &self.stopping
                && (self.deposits_in_flight() == 0 || now_ms() >= *deadline)
            {
                break;
            }
            let wake = [
                self.outbox.next_wakeup(),
                self.mailbox.as_ref().and_then(Mailbox::next_expiry),
                self.stopping.as_ref().map(|(_, deadline)| *deadline),
                self.reach.next_wakeup(),
                self.next_sync(),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match wake {
                    Some(at) => {
                        let delay = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    let mut batch = vec![command];
                    while batch.len() < MAX_COMMAND_BATCH {
                        match self.commands.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    self.handle_commands(batch);
                    self.commit_groups_logged();
                }
                event = self.swarm.select_next_some() => {
                    self.handle_swarm_event(event);
                    // Whatever else is ready now is handled before the one flush.
                    for _ in 0..MAX_EVENT_BATCH {
                        match self.swarm.select_next_some().now_or_never() {
                            Some(event) => self.handle_swarm_event(event),
                            None => break,
                        }
                    }
                    self.commit_groups_logged();
                }
                event = self.courier.select_next_some() => self.on_courier_event(event),
                () = sleep => {
                    let outputs = self.outbox.handle(outbox::Input::Tick, now_ms());
                    self.apply_outbox(outputs);
                    self.expire_mail();
                    self.reach_tick();
                    self.sync_tick();
                    self.commit_groups_logged();
                }
            }
        }
        let flushed = self.store.flush();
        if let Err(e) = &flushed {
            tracing::error!("final flush failed: {e:#}");
        }
        if let Some((reply, _)) = self.stopping.take() {
            let _ = reply.send(flushed.map_err(NodeError::from));
        }
        tracing::info!("node stopped");
    }

    /// Handles a batch of commands; sends are made durable with one flush. A shutdown lets
    /// deposits in flight finish (for at most [`SHUTDOWN_GRACE_MS`]), then flushes and stops.
    fn handle_commands(&mut self, batch: Vec<Command>) {
        let mut sends = Vec::new();
        let mut shutdown = None;
        for command in batch {
            match command {
                Command::Send {
                    to: ChatId::Group(id),
                    text,
                    reply,
                } => {
                    let _ = reply.send(self.group_send(&id, &text));
                }
                Command::Send {
                    to: ChatId::Peer(peer),
                    text,
                    reply,
                } => match self.prepare_send(peer, &text) {
                    Ok(prepared) => sends.push((prepared, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Command::Shutdown(reply) => shutdown = Some(reply),
                other => self.handle_query(other),
            }
        }
        if !sends.is_empty() {
            self.commit_sends(sends);
        }
        if let Some(reply) = shutdown {
            match self.stopping.take() {
                // Asked twice: the first caller is answered now, the second at the end.
                Some((first, deadline)) => {
                    let _ = first.send(Ok(()));
                    self.stopping = Some((reply, deadline));
                }
                None => self.stopping = Some((reply, now_ms().saturating_add(SHUTDOWN_GRACE_MS))),
            }
        }
    }

    fn handle_query(&mut self, command: Command) {
        match command {
            Command::Identity(reply) => {
                let _ = reply.send(Ok(self.identity_info()));
            }
            Command::SetName(name, reply) => {
                let _ = reply.send(self.set_name(name));
            }
            Command::Connect(addr, reply) => self.connect(addr, reply),
            Command::Peers(reply) => {
                let _ = reply.send(Ok(self.peers()));
            }
            Command::Relays(reply) => {
                let _ = reply.send(Ok(self.relays()));
            }
            Command::FindPeer(peer, reply) => {
                let outs = self.reach.find_peer(peer, reply);
                self.apply_reach(outs);
            }
            Command::Nearby(reply) => {
                let _ = reply.send(Ok(self.nearby_list()));
            }
            Command::ContactAdd { code, name, reply } => {
                let _ = reply.send(self.contact_add(&code, name));
            }
            Command::Contacts(reply) => {
                let _ = reply.send(self.contacts());
            }
            Command::ContactAccept(peer, reply) => {
                let _ = reply.send(self.contact_decide(&peer, ContactState::Accepted));
            }
            Command::ContactRefuse(peer, reply) => {
                let _ = reply.send(self.contact_decide(&peer, ContactState::Refused));
            }
            Command::SafetyNumber(peer, reply) => {
                let _ = reply.send(self.safety_number(&peer));
            }
            Command::ContactVerify(peer, reply) => {
                let _ = reply.send(self.contact_verify(&peer));
            }
            Command::Chats(reply) => {
                let _ = reply.send(self.chats());
            }
            Command::Messages {
                chat,
                limit,
                before,
                reply,
            } => {
                let _ = reply.send(self.messages(&chat.to_string(), limit, before));
            }
            Command::GroupCreate {
                name,
                members,
                reply,
            } => {
                let _ = reply.send(self.group_create(&name, &members));
            }
            Command::GroupAdd {
                group,
                member,
                reply,
            } => {
                let _ = reply.send(self.group_add(&group, &member));
            }
            Command::GroupRemove {
                group,
                member,
                reply,
            } => {
                let _ = reply.send(self.group_remove(&group, member.as_ref()));
            }
            Command::GroupMembers(group, reply) => {
                let _ = reply.send(self.group_members(&group));
            }
            Command::MarkRead(chat, reply) => {
                let result = self.store.mark_read(&chat.to_string());
                let _ = reply.send(result.map_err(NodeError::from));
            }
            Command::Send { reply, .. } => {
                // `handle_commands` takes every send before it gets here.
                let _ = reply.send(Err(NodeError::Internal(
                    "a send reached the query path".into(),
                )));
            }
            Command::Shutdown(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    pub(super) fn emit(&self, event: Event) {
        // No subscriber is fine: the store already holds what the event reports.
        let _ = self.events.send(event);
    }

    fn identity_info(&self) -> super::IdentityInfo {
        let me = self.identity.peer_id();
        super::IdentityInfo {
            peer_id: me.to_string(),
            name: self.name.clone(),
            contact_code: self.card.to_code(),
            addrs: self
                .listen_addrs
                .iter()
                .map(|a| a.clone().with(Protocol::P2p(me)).to_string())
                .collect(),
            reachability: self.reach.reachability(),
        }
    }

    fn set_name(&mut self, name: String) -> NodeResult<()> {
        identity::check_name(&name)?;
        self.store.set_name(&name)?;
        self.store.flush()?;
        self.card = self
            .identity
            .card(&name, self.card.relays.clone(), now_ms());
        self.name = name;
        Ok(())
    }

    fn connect(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
        if let (Some(Protocol::P2p(peer)), 1) = (addr.iter().last(), addr.iter().count()) {
            let connected = self.is_online(&peer);
            let outs = self.reach.connect_by_id(addr, peer, reply, connected);
            self.apply_reach(outs);
            return;
        }
        // From a new port, not the listening one: if the other side is dialling us at the
        // same moment from its listening port, the two TCP dials would meet as one
        // simultaneous open, both sides would start Noise as initiator, and the connect
        // would fail (seen in CI as "Handshake failed: input error").
        let opts = match addr.iter().last() {
            Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                .allocate_new_port()
                .build(),
            _ => DialOpts::unknown_peer_id()
                .address(addr.clone())
                .allocate_new_port()
                .build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_connect.insert(id, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Dial {
                    addr: addr.to_string(),
                    detail: e.to_string(),
                }));
            }
        }
    }

    fn peers(&self) -> Vec<super::PeerInfo> {
        self.connected
            .iter()
            .map(|(peer, c)| {
                let relayed = c
                    .addrs
                    .values()
                    .all(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit)));
                super::PeerInfo {
                    peer_id: peer.to_string(),
                    addrs: c.addrs.values().map(ToString::to_string).collect(),
                    via: if relayed { Via::Relay } else { Via::Direct },
                    name: self.peer_name(peer),
                }
            })
            .collect()
    }

    fn peer_name(&self, peer: &PeerId) -> Option<String> {
        if let Ok(Some(contact)) = self.store.contact(&peer.to_string()) {
            return Some(contact.display_name().to_owned());
        }
        self.nearby
            .get(peer)
            .and_then(|n| n.card.as_ref())
            .map(|c| c.name.clone())
    }

    fn nearby_list(&self) -> Vec<super::NearbyPeer> {
        self.nearby
            .iter()
            .filter_map(|(peer, n)| {
                let card = n.card.as_ref()?;
                Some(super::NearbyPeer {
                    peer_id: peer.to_string(),
                    name: card.name.clone(),
                    contact_code: card.to_code(),
                })
            })
            .collect()
    }

    pub(super) fn is_online(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer)
    }

    /// Addresses we remembered for `peer` in an earlier run.
    fn known_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        match self.store.peer_addrs(peer) {
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

    /// Remembers what identify told us about a new contact's addresses, if connected.
    pub(super) fn remember_current_addrs(&self, peer: &PeerId) {
        if let Some(addrs) = self.addr_book.get(peer) {
            self.remember_addrs(peer, addrs);
        }
    }

    /// Remembers a contact's addresses for the next run.
    fn remember_addrs(&self, peer: &PeerId, addrs: &[Multiaddr]) {
        let kept = &addrs[..addrs.len().min(MAX_ADDRS_PER_PEER)];
        if let Err(e) = self.store.set_peer_addrs(peer, kept) {
            tracing::warn!("cannot remember addresses of {peer}: {e:#}");
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Dm(event)) => self.on_dm_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Card(event)) => self.on_card_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mailbox(event)) => self.on_mailbox_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.on_mdns_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                let outs = self.reach.on_relay_client_event(event, now_ms());
                self.apply_reach(outs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => {
                let outs = self.reach.on_dcutr_event(event);
                self.apply_reach(outs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(event)) => {
                let outs = self.reach.on_autonat_event(event, now_ms());
                self.apply_reach(outs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => {
                let outs = self.reach.on_kad_event(event, now_ms());
                self.apply_reach(outs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping(event),
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "listening");
                self.listen_addrs.insert(address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                tracing::debug!(?listener_id, ?reason, "listener closed");
                let outs = self.reach.listener_closed(listener_id, now_ms());
                self.apply_reach(outs);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.remove(&address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                if let Some((_, reply)) = self.pending_connect.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if endpoint.is_dialer() {
                    self.learn_addr(peer_id, addr.clone());
                }
                let relayed = addr.iter().any(|p| matches!(p, Protocol::P2pCircuit));
                self.connected
                    .entry(peer_id)
                    .or_default()
                    .addrs
                    .insert(connection_id, addr);
                self.card_on_connect(peer_id);
                let outs = self
                    .reach
                    .connected(peer_id, connection_id, &self.mail.relays);
                self.apply_reach(outs);
                if num_established.get() == 1 {
                    tracing::info!(%peer_id, "connected");
                    self.emit(Event::PeerConnected {
                        peer_id: peer_id.to_string(),
                        via: if relayed { Via::Relay } else { Via::Direct },
                    });
                    let outputs = self
                        .outbox
                        .handle(outbox::Input::PeerUp(peer_id.to_string()), now_ms());
                    self.apply_outbox(outputs);
                    self.sync_on_connect(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(c) = self.connected.get_mut(&peer_id) {
                    c.addrs.remove(&connection_id);
                }
                if num_established == 0 {
                    self.connected.remove(&peer_id);
                    tracing::info!(%peer_id, "disconnected");
                    self.emit(Event::PeerDisconnected {
                        peer_id: peer_id.to_string(),
                    });
                    let outputs = self
                        .outbox
                        .handle(outbox::Input::PeerDown(peer_id.to_string()), now_ms());
                    self.apply_outbox(outputs);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some((addr, reply)) = self.pending_connect.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial {
                        addr: addr.to_string(),
                        detail: error.to_string(),
                    }));
                } else {
                    tracing::debug!(?peer_id, "dial failed: {error}");
                }
                let connected = peer_id.is_some_and(|p| self.is_online(&p));
                let outs = self.reach.dial_failed(connection_id, connected);
                self.apply_reach(outs);
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!("incoming connection failed: {error}");
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    /// Dials `peer` directly at the addresses we know; a failure falls back to relays.
    pub(super) fn dial_peer(&mut self, peer: PeerId) {
        let outs = self.reach.dial(peer, self.known_dial_addrs(&peer));
        self.apply_reach(outs);
    }

    /// Due reservation retries and publications.
    fn reach_tick(&mut self) {
        let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let listen: Vec<Multiaddr> = self.listen_addrs().cloned().collect();
        let outs = self.reach.tick(
            now_ms(),
            &self.mail.relays,
            &self.identity,
            &external,
            &listen,
        );
        self.apply_reach(outs);
    }

    /// Carries out what [`Reach`] asked for, in order, and hands back the ids it tracks.
    fn apply_reach(&mut self, outs: Vec<ReachOut>) {
        let mut queue = VecDeque::from(outs);
        while let Some(out) = queue.pop_front() {
            match out {
                ReachOut::KadAddress { peer, addr } => {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
                ReachOut::NatServer { peer, addr } => {
                    self.swarm
                        .behaviour_mut()
                        .autonat
                        .add_server(peer, Some(addr));
                }
                ReachOut::KadBootstrap => {
                    let started = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                    self.reach.bootstrap_started(started);
                }
                ReachOut::KadGet { peer, key } => {
                    let query = self.swarm.behaviour_mut().kad.get_record(key);
                    self.reach.lookup_started(peer, query);
                }
                ReachOut::KadFinish(query) => {
                    if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&query) {
                        query.finish();
                    }
                }
                ReachOut::KadPut(record) => {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    if let Err(e) = kad.put_record(record, Quorum::One) {
                        tracing::info!("cannot publish our address record: {e}");
                    }
                }
                ReachOut::KadKeep { record, issued_ms } => {
                    let store = self.swarm.behaviour_mut().kad.store_mut();
                    reach::keep_if_newer(store, record, issued_ms);
                }
                ReachOut::ListenOnCircuit { relay, addr } => match self.swarm.listen_on(addr) {
                    Ok(listener) => self.reach.listening(relay, listener),
                    Err(e) => {
                        tracing::debug!(%relay, "cannot listen through relay: {e}");
                        self.reach.listen_failed(relay, now_ms());
                    }
                },
                ReachOut::Dial { peer, opts, direct } => {
                    let connection = opts.connection_id();
                    match self.swarm.dial(opts) {
                        Ok(()) if direct => self.reach.dialling(peer, connection),
                        Ok(()) => {}
                        Err(e) if direct => tracing::debug!(%peer, "cannot dial: {e}"),
                        Err(e) => tracing::debug!(%peer, "cannot dial through relays: {e}"),
                    }
                }
                ReachOut::ViaRelays(peer) => {
                    let card_relays = match self.store.contact(&peer.to_string()) {
                        Ok(Some(contact)) => contact.card.relay_multiaddrs(),
                        _ => Vec::new(),
                    };
                    queue.extend(self.reach.via_relays(peer, &card_relays, now_ms()));
                }
                ReachOut::Connect {
                    peer,
                    opts,
                    waiters,
                } => {
                    let connection = opts.connection_id();
                    match self.swarm.dial(opts) {
                        Ok(()) => {
                            let mut waiters = waiters.into_iter();
                            if let Some(first) = waiters.next() {
                                self.await_connection(connection, first);
                            }
                            for (_, reply) in waiters {
                                let _ = reply.send(Ok(peer));
                            }
                        }
                        Err(e) => {
                            for (addr, reply) in waiters {
                                let _ = reply.send(Err(NodeError::Dial {
                                    addr: addr.to_string(),
                                    detail: e.to_string(),
                                }));
                            }
                        }
                    }
                }
                ReachOut::LearnAddr { peer, addr } => self.learn_addr(peer, addr),
                ReachOut::Strike { peer, why } => self.strike(peer, why),
                ReachOut::Emit(event) => self.emit(event),
                ReachOut::AnswerFind(reply, result) => {
                    let _ = reply.send(result);
                }
                ReachOut::AnswerConnect(reply, result) => {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// A ping that timed out or failed means the link is dead (libp2p-ping only reports
    /// it): close the connection, so that the peer shows as disconnected, the outbox and
    /// gossip stop writing into it, and a new connection can be made when the link returns
    /// (a partition otherwise lasts until TCP gives up, many minutes later).
    fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(_) | Err(ping::Failure::Unsupported) => {}
            Err(failure) => {
                tracing::info!(peer = %event.peer, "link dead ({failure}): closing it");
                self.swarm.close_connection(event.connection);
            }
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if info.protocol_version != net::IDENTIFY_PROTOCOL {
            tracing::debug!(%peer_id, version = %info.protocol_version, "not a Bonghwa peer");
            return;
        }
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
            .take(MAX_ADDRS_PER_PEER)
            .collect();
        for addr in &addrs {
            self.learn_addr(peer_id, addr.clone());
        }
        if info.protocols.contains(&net::KAD_PROTOCOL) {
            let outs = self.reach.dht_server(peer_id, &addrs, now_ms());
            self.apply_reach(outs);
        }
        let serves_mailbox = info.protocols.contains(&net::MAILBOX_PROTOCOL);
        self.maybe_fetch_mail(peer_id, serves_mailbox);
        if matches!(self.store.contact(&peer_id.to_string()), Ok(Some(_))) {
            self.remember_current_addrs(&peer_id);
        }
    }

    fn on_mdns_event(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                for (peer, addr) in found {
                    if peer == self.identity.peer_id() {
                        continue;
                    }
                    self.learn_addr(peer, addr);
                    if !self.nearby.contains_key(&peer) {
                        if self.nearby.len() >= MAX_NEARBY {
                            continue;
                        }
                        self.nearby.insert(peer, NearbyEntry::default());
                    }
                    let Some(entry) = self.nearby.get_mut(&peer) else {
                        continue;
                    };
                    if !entry.card_requested {
                        self.request_card(peer);
                    }
                }
            }
            mdns::Event::Expired(gone) => {
                for (peer, _) in gone {
                    let still_there = self
                        .swarm
                        .behaviour()
                        .mdns
                        .as_ref()
                        .is_some_and(|m| m.discovered_nodes().any(|p| *p == peer));
                    if !still_there {
                        self.nearby.remove(&peer);
                    }
                }
            }
        }
    }

    /// Asks a LAN peer for its card (it shows in `nearby` once the card is in).
    fn request_card(&mut self, peer: PeerId) {
        if let Some(entry) = self.nearby.get_mut(&peer) {
            entry.card_requested = true;
            self.swarm
                .behaviour_mut()
                .card
                .send_request(&peer, CardRequest);
        }
    }

    /// A connection to a LAN peer whose card we lack: ask again.
    fn card_on_connect(&mut self, peer: PeerId) {
        let wanted = self
            .nearby
            .get(&peer)
            .is_some_and(|e| e.card.is_none() && !e.card_requested);
        if wanted {
            self.request_card(peer);
        }
    }

    fn on_card_event(&mut self, event: request_response::Event<CardRequest, ContactCard>) {
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { channel, .. },
                ..
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .card
                    .send_response(channel, self.card.clone());
                let _ = peer;
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                if response.peer_id().ok() != Some(peer) {
                    self.strike(peer, "card for another peer");
                    return;
                }
                if let Some(entry) = self.nearby.get_mut(&peer) {
                    let first = entry.card.is_none();
                    entry.card = Some(response);
                    // Announced once the peer is known to be a Bonghwa node with a name,
                    // that is, once it appears in `nearby`.
                    if first {
                        self.emit(Event::PeerDiscovered {
                            peer_id: peer.to_string(),
                            source: "mdns",
                        });
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "card request failed: {error}");
                let retry = match self.nearby.get_mut(&peer) {
                    Some(entry) => {
                        entry.card_requested = false;
                        entry.card_failures = entry.card_failures.saturating_add(1);
                        entry.card.is_none() && entry.card_failures <= CARD_RETRIES
                    }
                    None => false,
                };
                if retry {
                    self.request_card(peer);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "card request from peer failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_dm_event(&mut self, event: request_response::Event<net::DmFrame, DmResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = match request {
                    Ok(request) if !self.inbound_rate.allow(&peer, now_ms()) => {
                        tracing::info!(%peer, "dm requests over the rate limit; asking to retry");
                        DmResponse {
                            acks: vec![crate::wire::Ack::Retry; request.envelopes.len()],
                        }
                    }
                    Ok(request) => self.receive_envelopes(peer, request),
                    Err(why) => {
                        self.strike(peer, &format!("malformed dm frame: {why}"));
                        DmResponse { acks: Vec::new() }
                    }
                };
                if self
                    .swarm
                    .behaviour_mut()
                    .dm
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!(%peer, "dm response channel closed; the sender will retry");
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_dm_response(peer, request_id, response),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, "dm request failed: {error}");
                if let Some((_, ids)) = self.pending_dm.remove(&request_id) {
                    let now = now_ms();
                    for id in ids {
                        let outputs = self.outbox.handle(outbox::Input::Failed(id), now);
                        self.apply_outbox(outputs);
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::info!(%peer, "bad dm request: {error}");
                if matches!(error, request_response::InboundFailure::Io(_)) {
                    self.strike(peer, "malformed dm frame");
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Counts misbehaviour; a peer that keeps sending garbage is disconnected.
    pub(super) fn strike(&mut self, peer: PeerId, why: &str) {
        let strikes = self.strikes.entry(peer).or_insert(0);
        *strikes += 1;
        tracing::info!(%peer, strikes = *strikes, "{why}");
        if *strikes >= MAX_STRIKES {
            self.strikes.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        if self.strikes.len() > 4096 {
            self.strikes.clear();
        }
    }

    /// Adds an address to the book (newest first, a few per peer, a bounded number of peers).
    pub(super) fn learn_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        if !self.addr_book.contains_key(&peer) && self.addr_book.len() >= MAX_ADDR_BOOK_PEERS {
            return;
        }
        let addrs = self.addr_book.entry(peer).or_default();
        addrs.retain(|a| *a != addr);
        addrs.insert(0, addr.clone());
        addrs.truncate(MAX_ADDRS_PER_PEER);
        self.swarm.add_peer_address(peer, addr);
    }

    /// Peers we hold a connection to.
    pub(super) fn connected_peers(&self) -> Vec<PeerId> {
        self.connected.keys().copied().collect()
    }

    pub(super) fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer)
    }

    /// Every address we know for `peer`, newest first.
    pub(super) fn known_dial_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addr_book.get(peer).cloned().unwrap_or_default()
    }

    /// Our listen addresses.
    pub(super) fn listen_addrs(&self) -> impl Iterator<Item = &Multiaddr> {
        self.listen_addrs.iter()
    }

    /// Answers `reply` when connection `id` (being dialled) opens or fails.
    pub(super) fn await_connection(
        &mut self,
        id: ConnectionId,
        waiter: (Multiaddr, Reply<PeerId>),
    ) {
        self.pending_connect.insert(id, waiter);
    }

    /// Keeps a contact's connections open (or stops doing so).
    pub(super) fn keep(&mut self, peer: PeerId, keep: bool) {
        if !self.swarm.behaviour_mut().keep_alive.set_kept(peer, keep) {
            tracing::warn!(%peer, "keep-alive set is full");
        }
    }
}

/// `addr` with its port-0 TCP or UDP component set to `port`; `None` if it has no port 0.
fn with_port(addr: &Multiaddr, port: u16) -> Option<Multiaddr> {
    let mut changed = false;
    let out = addr
        .iter()
        .map(|p| match p {
            Protocol::Tcp(0) => {
                changed = true;
                Protocol::Tcp(port)
            }
            Protocol::Udp(0) => {
                changed = true;
                Protocol::Udp(port)
            }
            other => other,
        })
        .collect();
    changed.then_some(out)
}

/// The TCP or UDP port of an address.
fn port_of(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) | Protocol::Udp(port) => Some(port),
        _ => None,
    })
}

fn default_name(peer: &PeerId) -> String {
    let text = peer.to_string();
    let tail = &text[text.len().saturating_sub(6)..];
    format!("bonghwa-{tail}")
}

/// A seed for backoff jitter; it needs to differ between nodes, not to be secret.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        return now_ms();
    }
    u64::from_le_bytes(bytes)
}

/// Makes the outbox reachable from direct.rs without exposing Actor's fields twice.
pub(super) fn ttl_expiry(created_ms: u64, ttl_ms: u64) -> u64 {
    created_ms.saturating_add(ttl_ms)
}
