//! The task that owns the `Swarm` and the store. It runs one `select!` loop over commands
//! from handles, swarm events and the outbox's retry timer; nothing else touches either.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};
use libp2p::kad::Quorum;
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping};
use tokio::sync::{broadcast, mpsc};

use super::contacts;
use super::direct::{self, Direct, DirectIo, DirectOut};
use super::group::{GroupIo, GroupOut, Groups, Received};
use super::group_relay::GroupRelay;
use super::group_sync::{NodeView, SyncOut, SyncState};
use super::listen;
use super::mail_client::{MailClient, MailOut};
use super::mailbox_server::MailboxServer;
use super::peers::{self, Peers, PeersOut};
use super::reach::{self, Reach, ReachOut};
use super::sessions::Sessions;
use super::{Command, Config, NodeError, NodeResult, Reply, now_ms, relay_addrs};
use crate::crypto::group::{GroupId, topic_for};
use crate::event::Event;
use crate::identity::{self, ContactCard, Identity};
use crate::model::{ChatId, ContactState, HlcClock, MessageId, MessageStatus};
use crate::net::{self, Behaviour, BehaviourEvent, CardAnswer, CardRequest, MailboxFrame};
use crate::proto::group::session::Taken;
use crate::proto::outbox;
use crate::store::{Store, StoreError};
use crate::wire::group::SyncResponse;
use crate::wire::{DmRequest, DmResponse, MailboxRequest, MailboxResponse};

/// Swarm events handled in one round before group items are flushed once for all of them.
const MAX_EVENT_BATCH: usize = 64;
/// Commands handled in one round before the store is flushed once for all of them.
const MAX_COMMAND_BATCH: usize = 256;
/// How long a shutdown waits for deposits (messages, receipts) still on their way to a relay.
const SHUTDOWN_GRACE_MS: u64 = 10_000;
pub(super) struct Actor {
    swarm: Swarm<Behaviour>,
    store: Box<dyn Store>,
    identity: Identity,
    name: String,
    card: ContactCard,
    clock: HlcClock,
    /// Direct messages: the outbox and the requests in flight.
    direct: Direct,
    /// Our prekeys and pairwise sessions.
    sessions: Sessions,
    events: broadcast::Sender<Event>,
    commands: mpsc::Receiver<Command>,
    /// Address book, connections, LAN peers, strikes.
    peers: Peers,
    bootstrap: Vec<Multiaddr>,
    dial_on_start: bool,
    /// The mailbox we keep for others, on relay nodes only.
    mailbox: Option<MailboxServer>,
    /// The group topics we carry for clients, on relay nodes only.
    group_relay: Option<GroupRelay>,
    /// Deposits mail at relays under a throwaway identity.
    courier: net::Courier,
    /// Our relays, our fetches and deposits.
    mail: MailClient,
    /// Relay reservations, NAT status, DHT lookups.
    reach: Reach,
    /// Our groups.
    groups: Groups,
    /// Group history repair in progress.
    sync: SyncState,
    /// Shutting down: who to answer, and when to stop waiting for deposits in flight.
    stopping: Option<(Reply<()>, u64)>,
}

impl Actor {
    pub(super) async fn new(
        config: Config,
        identity: Identity,
        rest: Option<identity::RestKey>,
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
        let listeners = listen::open(&mut swarm, store.as_ref(), &config.listen)?;
        let listen::Listening {
            addrs: listen_addrs,
            early,
            ports,
        } = listen::wait(&mut swarm, listeners).await?;
        for (configured, port) in &ports {
            store.set_listen_port(configured, *port)?;
        }
        // A relay tells its clients where it is reachable; without --external-addr, its own
        // listen addresses (a relay does not probe itself through its clients: see
        // `net::autonat_config`).
        if roles.relay && config.external_addrs.is_empty() {
            for addr in &listen_addrs {
                swarm.add_external_address(addr.clone());
            }
        }
        let me = identity.peer_id();
        let ttl_ms = u64::try_from(config.message_ttl.as_millis()).unwrap_or(u64::MAX);
        let groups = Groups::new(&identity, ttl_ms)?;
        let sessions = Sessions::load(store.as_ref(), &identity, rest, now_ms())?;
        store.flush()?;
        let reach = Reach::new(identity.peer_id(), roles.relay);
        let mut actor = Self {
            swarm,
            store,
            identity,
            name,
            card,
            clock: HlcClock::default(),
            direct: Direct::new(ttl_ms, seed()),
            sessions,
            events,
            commands,
            peers: Peers::new(me, listen_addrs),
            bootstrap: config.bootstrap,
            dial_on_start: config.dial_on_start,
            mailbox: config.relay.map(MailboxServer::new),
            group_relay: roles.relay.then(GroupRelay::default),
            courier: net::build_courier()?,
            mail: MailClient::new(relays),
            stopping: None,
            reach,
            groups,
            sync: SyncState::default(),
        };
        actor.restore_groups()?;
        if let Some(server) = actor.mailbox.as_mut() {
            server.restore(&*actor.store, now_ms())?;
        }
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
            for addr in Peers::remembered_addrs(&peer, self.store.as_ref()) {
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
                direct::MAX_SKEW_MS,
            );
            self.outbox_input(outbox::Input::Queued(entry));
        }
        let outs = self
            .reach
            .start(&self.bootstrap, self.mail.relays(), self.dial_on_start);
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
                && (self.mail.deposits_in_flight() == 0 || now_ms() >= *deadline)
            {
                break;
            }
            let wake = [
                self.direct.next_wakeup(),
                self.mailbox.as_ref().and_then(MailboxServer::next_expiry),
                self.stopping.as_ref().map(|(_, deadline)| *deadline),
                self.reach.next_wakeup(),
                self.sync.next_round(!self.groups.sessions().is_empty()),
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
                    self.outbox_input(outbox::Input::Tick);
                    if let Some(server) = self.mailbox.as_mut() {
                        server.expire(&*self.store, now_ms());
                    }
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
                    let result =
                        self.with_groups(|groups, io, out| groups.send(io, &id, &text, out));
                    let _ = reply.send(result);
                }
                Command::Send {
                    to: ChatId::Peer(peer),
                    text,
                    reply,
                } => match self.with_direct(|direct, io, _| direct.prepare_send(io, peer, &text)) {
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
            self.with_direct(|direct, io, out| direct.commit_sends(io, sends, out));
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
                let _ = reply.send(Ok(self.peers.list(self.store.as_ref())));
            }
            Command::Relays(reply) => {
                let _ = reply.send(Ok(self.relays()));
            }
            Command::FindPeer(peer, reply) => {
                let outs = self.reach.find_peer(peer, reply);
                self.apply_reach(outs);
            }
            Command::Nearby(reply) => {
                let _ = reply.send(Ok(self.peers.nearby()));
            }
            Command::ContactAdd { code, name, reply } => {
                let _ = reply.send(self.contact_add(&code, name));
            }
            Command::Contacts(reply) => {
                let peers = &self.peers;
                let result = contacts::list(self.store.as_ref(), |p| peers.is_connected(p));
                let _ = reply.send(result);
            }
            Command::ContactAccept(peer, reply) => {
                let _ = reply.send(self.contact_decide(&peer, ContactState::Accepted));
            }
            Command::ContactRefuse(peer, reply) => {
                let _ = reply.send(self.contact_decide(&peer, ContactState::Refused));
            }
            Command::SafetyNumber(peer, reply) => {
                let result = contacts::safety_number(self.store.as_ref(), &self.identity, &peer);
                let _ = reply.send(result);
            }
            Command::ContactVerify(peer, reply) => {
                let _ = reply.send(contacts::verify(self.store.as_ref(), &peer));
            }
            Command::Chats(reply) => {
                let result = contacts::chats(self.store.as_ref(), self.groups.names());
                let _ = reply.send(result);
            }
            Command::Messages {
                chat,
                limit,
                before,
                reply,
            } => {
                let result =
                    contacts::messages(self.store.as_ref(), &chat.to_string(), limit, before);
                let _ = reply.send(result);
            }
            Command::GroupCreate {
                name,
                members,
                reply,
            } => {
                let card = self.card.clone();
                let result = self
                    .with_groups(|groups, io, out| groups.create(io, &card, &name, &members, out));
                let _ = reply.send(result);
            }
            Command::GroupAdd {
                group,
                member,
                reply,
            } => {
                let result =
                    self.with_groups(|groups, io, out| groups.add(io, &group, &member, out));
                let _ = reply.send(result);
            }
            Command::GroupRemove {
                group,
                member,
                reply,
            } => {
                let result = self
                    .with_groups(|groups, io, out| groups.remove(io, &group, member.as_ref(), out));
                let _ = reply.send(result);
            }
            Command::GroupMembers(group, reply) => {
                let _ = reply.send(self.groups.members(&group));
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

    fn emit(&self, event: Event) {
        // No subscriber is fine: the store already holds what the event reports.
        let _ = self.events.send(event);
    }

    fn identity_info(&self) -> super::IdentityInfo {
        let me = self.identity.peer_id();
        super::IdentityInfo {
            peer_id: me.to_string(),
            name: self.name.clone(),
            contact_code: self.card.to_code_with(self.sessions.prekey()),
            addrs: self
                .peers
                .listen_addrs()
                .map(|a| a.clone().with(Protocol::P2p(me)).to_string())
                .collect(),
            reachability: self.reach.reachability(),
            keys_protected: self.sessions.protected(),
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
            Ok(()) => self.peers.await_connection(id, (addr, reply)),
            Err(e) => {
                let _ = reply.send(Err(NodeError::Dial {
                    addr: addr.to_string(),
                    detail: e.to_string(),
                }));
            }
        }
    }

    fn is_online(&self, peer: &PeerId) -> bool {
        self.peers.is_connected(peer)
    }

    /// Remembers what identify told us about a new contact's addresses, if connected.
    fn remember_current_addrs(&self, peer: &PeerId) {
        self.peers.remember_addrs(peer, self.store.as_ref());
    }

    fn apply_peers(&mut self, outs: Vec<PeersOut>) {
        for out in outs {
            match out {
                PeersOut::AddAddress(peer, addr) => self.swarm.add_peer_address(peer, addr),
                PeersOut::RequestCard(peer) => {
                    self.swarm
                        .behaviour_mut()
                        .card
                        .send_request(&peer, CardRequest);
                }
                PeersOut::Disconnect(peer) => {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                PeersOut::Emit(event) => self.emit(event),
            }
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
                self.peers.listening(address);
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
                self.peers.not_listening(&address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let mut outs = Vec::new();
                let opened = self.peers.opened(
                    peer_id,
                    connection_id,
                    addr,
                    endpoint.is_dialer(),
                    &mut outs,
                );
                self.apply_peers(outs);
                let outs = self
                    .reach
                    .connected(peer_id, connection_id, self.mail.relays());
                self.apply_reach(outs);
                if opened {
                    self.outbox_input(outbox::Input::PeerUp(peer_id.to_string()));
                    self.sync_on_connect(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                let mut outs = Vec::new();
                let last = self.peers.closed(peer_id, connection_id, &mut outs);
                self.apply_peers(outs);
                if last {
                    self.outbox_input(outbox::Input::PeerDown(peer_id.to_string()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if !self.peers.dial_failed(connection_id, &error.to_string()) {
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
    fn dial_peer(&mut self, peer: PeerId) {
        let outs = self.reach.dial(peer, self.known_dial_addrs(&peer));
        self.apply_reach(outs);
    }

    /// Due reservation retries and publications.
    fn reach_tick(&mut self) {
        let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let listen: Vec<Multiaddr> = self.listen_addrs().cloned().collect();
        let outs = self.reach.tick(
            now_ms(),
            self.mail.relays(),
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
            .take(peers::MAX_ADDRS_PER_PEER)
            .collect();
        for addr in &addrs {
            self.learn_addr(peer_id, addr.clone());
        }
        if info.protocols.contains(&net::KAD_PROTOCOL) {
            let outs = self.reach.dht_server(peer_id, &addrs, now_ms());
            self.apply_reach(outs);
        }
        let serves_mailbox = info.protocols.contains(&net::MAILBOX_PROTOCOL);
        let outs = self.mail.on_identified(peer_id, serves_mailbox);
        self.apply_mail(outs);
        if matches!(self.store.contact(&peer_id.to_string()), Ok(Some(_))) {
            self.remember_current_addrs(&peer_id);
        }
    }

    fn on_mdns_event(&mut self, event: mdns::Event) {
        let mut outs = Vec::new();
        match event {
            mdns::Event::Discovered(found) => {
                for (peer, addr) in found {
                    self.peers.discovered(peer, addr, &mut outs);
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
                    self.peers.expired(&peer, still_there);
                }
            }
        }
        self.apply_peers(outs);
    }

    fn on_card_event(&mut self, event: request_response::Event<CardRequest, CardAnswer>) {
        let mut outs = Vec::new();
        match event {
            request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            } => {
                let _ = self.swarm.behaviour_mut().card.send_response(
                    channel,
                    CardAnswer {
                        card: self.card.clone(),
                        prekey: self.sessions.prekey().cloned(),
                    },
                );
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => self
                .peers
                .card_received(peer, response.card, response.prekey, &mut outs),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "card request failed: {error}");
                self.peers.card_failed(peer, &mut outs);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "card request from peer failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
        self.apply_peers(outs);
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
                    Ok(request) if !self.peers.allow(&peer, now_ms()) => {
                        tracing::info!(%peer, "dm requests over the rate limit; asking to retry");
                        DmResponse {
                            acks: vec![crate::wire::Ack::Retry; request.envelopes.len()],
                        }
                    }
                    Ok(request) => DmResponse {
                        acks: self.store_envelopes(Some(peer), &request.envelopes),
                    },
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
            } => self.with_direct(|direct, io, out| {
                direct.on_response(io, peer, request_id, response, out);
            }),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, "dm request failed: {error}");
                self.with_direct(|direct, io, out| direct.on_failure(io, request_id, out));
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
    fn strike(&mut self, peer: PeerId, why: &str) {
        let mut outs = Vec::new();
        self.peers.strike(peer, why, &mut outs);
        self.apply_peers(outs);
    }

    /// Adds an address to the book and the swarm.
    fn learn_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        let mut outs = Vec::new();
        self.peers.learn_addr(peer, addr, &mut outs);
        self.apply_peers(outs);
    }

    /// Peers we hold a connection to.
    fn connected_peers(&self) -> Vec<PeerId> {
        self.peers.connected()
    }

    /// Every address we know for `peer`, newest first.
    fn known_dial_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers.dial_addrs(peer)
    }

    /// Our listen addresses.
    fn listen_addrs(&self) -> impl Iterator<Item = &Multiaddr> {
        self.peers.listen_addrs()
    }

    /// Answers `reply` when connection `id` (being dialled) opens or fails.
    fn await_connection(&mut self, id: ConnectionId, waiter: (Multiaddr, Reply<PeerId>)) {
        self.peers.await_connection(id, waiter);
    }

    /// Keeps a contact's connections open (or stops doing so).
    fn keep(&mut self, peer: PeerId, keep: bool) {
        if !self.swarm.behaviour_mut().keep_alive.set_kept(peer, keep) {
            tracing::warn!(%peer, "keep-alive set is full");
        }
    }
}

/// Groups: the actor's side of [`Groups`] (it moves bytes, the sessions decide).
impl Actor {
    /// Runs `f` on the groups with the store and clock, then applies what they ask.
    fn with_groups<T>(
        &mut self,
        f: impl FnOnce(&mut Groups, &mut GroupIo<'_>, &mut Vec<GroupOut>) -> T,
    ) -> T {
        let mut out = Vec::new();
        let mut io = GroupIo {
            store: self.store.as_ref(),
            clock: &mut self.clock,
            now: now_ms(),
        };
        let result = f(&mut self.groups, &mut io, &mut out);
        self.apply_groups(out);
        result
    }

    fn apply_groups(&mut self, outs: Vec<GroupOut>) {
        for out in outs {
            match out {
                GroupOut::Subscribe(id) => {
                    let topic = IdentTopic::new(topic_for(&id));
                    self.groups.joined(id, topic.hash());
                    if let Err(e) = self.subscribe_scored(topic) {
                        tracing::warn!("cannot join the topic of group {}: {e}", id.to_hex());
                    }
                }
                GroupOut::Unsubscribe(id) => {
                    let topic = IdentTopic::new(topic_for(&id));
                    self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                }
                GroupOut::Publish(id) => self.flush_unpublished(&id),
                GroupOut::Emit(event) => self.emit(event),
                GroupOut::Queue(entry) => {
                    self.outbox_input(outbox::Input::Queued(entry));
                }
                GroupOut::Sync(id, peer) => self.start_sync(&id, peer),
                GroupOut::LogChanged(id) => self.sync.log_changed(&id),
            }
        }
    }

    /// Loads our groups at start and joins their topics.
    fn restore_groups(&mut self) -> NodeResult<()> {
        let mut out = Vec::new();
        let restored = self.groups.restore(self.store.as_ref(), &mut out);
        self.apply_groups(out);
        restored
    }

    /// Ends a batch of group work (see [`Groups::commit`]).
    fn commit_groups(&mut self) -> NodeResult<()> {
        let relayed = self
            .group_relay
            .as_mut()
            .map(GroupRelay::take_unflushed)
            .unwrap_or_default();
        for group in &relayed {
            self.sync.log_changed(group);
        }
        self.with_groups(|groups, io, out| groups.commit(io, !relayed.is_empty(), out))
    }

    /// Joins a group topic with the group scoring (see [`net::group_topic_score`]).
    fn subscribe_scored(&mut self, topic: IdentTopic) -> Result<bool, String> {
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        gossipsub.set_topic_params(topic.clone(), net::group_topic_score())?;
        gossipsub.subscribe(&topic).map_err(|e| e.to_string())
    }

    /// Publishes what waits for gossip in group `id`, oldest first, until gossipsub
    /// refuses (nobody on the topic yet: tried again when a peer subscribes or at the next
    /// tick).
    fn flush_unpublished(&mut self, id: &GroupId) {
        let topic = IdentTopic::new(topic_for(id));
        while let Some(bytes) = self.groups.next_unpublished(id).map(<[u8]>::to_vec) {
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes)
            {
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => {
                    if let Some(message) = self.groups.published(id) {
                        self.update_status(&message, MessageStatus::Sent);
                    }
                }
                Err(e) => {
                    tracing::debug!(group = %id.to_hex(), "not published yet: {e}");
                    return;
                }
            }
        }
    }

    /// Retries every group's unpublished items (at a tick).
    fn flush_all_unpublished(&mut self) {
        for id in self.groups.waiting() {
            self.flush_unpublished(&id);
        }
    }

    /// One of our items reached a member by sync: our message is `sent` if it was pending.
    fn handed_over(&mut self, item_id: &MessageId) {
        if let Some(message) = self.groups.handed_over(item_id) {
            self.update_status(&message, MessageStatus::Sent);
        }
    }

    /// Items from a sync peer: taken like gossip and made durable at once; how many were new.
    fn take_synced(&mut self, items: &[Vec<u8>]) -> usize {
        self.with_groups(|groups, io, out| groups.take_synced(io, items, out))
    }

    fn on_gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let known = self.groups.group_of(&message.topic).is_some();
                let taken = known.then(|| {
                    self.with_groups(|groups, io, out| groups.take_bytes(io, &message.data, out))
                });
                let acceptance = match taken {
                    // A relay carrying a topic for its clients: it holds no keys and no
                    // membership, so it forwards what is well formed and signed.
                    None if self.relays_topic(&message.topic) => {
                        self.relay_item(&message.topic, &message.data)
                    }
                    Some(Received::Taken(Taken::New)) => MessageAcceptance::Accept,
                    Some(Received::Taken(Taken::Rejected(why))) => {
                        tracing::info!(peer = %propagation_source, "group item rejected: {why}");
                        MessageAcceptance::Reject
                    }
                    _ => MessageAcceptance::Ignore,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::Subscribed { topic, peer_id } => {
                if let Some(id) = self.groups.group_of(&topic) {
                    self.flush_unpublished(&id);
                }
                self.relay_topic(&topic, peer_id);
            }
            _ => {}
        }
    }
}

/// Direct messages and contacts: the actor's side of [`Direct`] and `contacts`.
impl Actor {
    /// Runs `f` on the direct-message owner with the store, identity and clock, then
    /// applies what it asks.
    fn with_direct<T>(
        &mut self,
        f: impl FnOnce(&mut Direct, &mut DirectIo<'_>, &mut Vec<DirectOut>) -> T,
    ) -> T {
        let mut out = Vec::new();
        let mut io = DirectIo {
            store: self.store.as_ref(),
            identity: &self.identity,
            card: &self.card,
            sessions: &mut self.sessions,
            clock: &mut self.clock,
            now: now_ms(),
        };
        let result = f(&mut self.direct, &mut io, &mut out);
        self.apply_direct(out);
        result
    }

    fn apply_direct(&mut self, outs: Vec<DirectOut>) {
        for out in outs {
            match out {
                DirectOut::Transmit {
                    peer,
                    envelopes,
                    ids,
                } => {
                    let request = self
                        .swarm
                        .behaviour_mut()
                        .dm
                        .send_request(&peer, Ok(DmRequest { envelopes }));
                    self.direct.sent(request, peer, ids);
                }
                DirectOut::Reach(peer) => {
                    if let Ok(peer_id) = peer.parse() {
                        self.dial_peer(peer_id);
                    }
                    // Not connected: meanwhile, leave the messages at its mailboxes.
                    self.deposit_for(&peer);
                }
                DirectOut::Receipt { to, card, envelope } => {
                    if self.peers.is_connected(&to) {
                        // Not tracked: its answer needs no action.
                        self.swarm.behaviour_mut().dm.send_request(
                            &to,
                            Ok(DmRequest {
                                envelopes: vec![envelope],
                            }),
                        );
                    } else {
                        self.deposit_receipt(&card, &to.to_string(), envelope);
                    }
                }
                DirectOut::Invite { from, items } => {
                    self.with_groups(|groups, io, out| groups.take_invite(io, &from, &items, out));
                }
                DirectOut::Strike(peer) => self.strike(peer, "bad envelope"),
                DirectOut::Emit(event) => self.emit(event),
            }
        }
    }

    /// Feeds the outbox and carries out what it decides.
    fn outbox_input(&mut self, input: outbox::Input) {
        self.with_direct(|direct, io, out| direct.handle(io, input, out));
    }

    /// Opens, checks, dedups and stores envelopes (see [`Direct::store_envelopes`]); what
    /// they cause (an invite taken, receipts) is done before the acks are returned.
    fn store_envelopes(
        &mut self,
        sender: Option<PeerId>,
        envelopes: &[Vec<u8>],
    ) -> Vec<crate::wire::Ack> {
        self.with_direct(|direct, io, out| direct.store_envelopes(io, sender, envelopes, out))
    }

    /// Seals one of our messages for the owner of `card` (a mailbox deposit).
    fn seal_for(&mut self, card: &ContactCard, id: &MessageId) -> NodeResult<Vec<u8>> {
        self.with_direct(|_, io, _| {
            let (envelope, sealed_now) = direct::envelope_for(io, card, id)?;
            if sealed_now {
                io.store.flush()?;
                io.sessions.flushed();
            }
            Ok(envelope)
        })
    }

    /// Sets a message's status and announces it.
    fn update_status(&mut self, id: &MessageId, status: MessageStatus) {
        if let Some(event) = direct::update_status(self.store.as_ref(), id, status) {
            self.emit(event);
        }
    }

    /// `contact_add`: stored and flushed; then its connections are kept and it is dialled.
    fn contact_add(&mut self, code: &str, alias: Option<String>) -> NodeResult<PeerId> {
        let peer = contacts::add(self.store.as_ref(), &self.identity.peer_id(), code, alias)?;
        self.remember_current_addrs(&peer);
        self.store.flush()?;
        self.keep(peer, true);
        if !self.is_online(&peer) {
            self.dial_peer(peer);
        }
        Ok(peer)
    }

    /// Accepts or refuses a pending request.
    fn contact_decide(&mut self, peer: &PeerId, state: ContactState) -> NodeResult<()> {
        if !contacts::decide(self.store.as_ref(), peer, state)? {
            return Ok(());
        }
        if state == ContactState::Accepted {
            self.remember_current_addrs(peer);
        }
        self.store.flush()?;
        self.keep(*peer, state == ContactState::Accepted);
        Ok(())
    }
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

/// Group history repair: the actor's side of [`SyncState`] (it sends, sync decides).
impl Actor {
    /// Starts reconciling `group` with `peer` unless a session is running.
    fn start_sync(&mut self, group: &GroupId, peer: PeerId) {
        let mut out = Vec::new();
        let view = NodeView::new(&*self.store, self.groups.sessions(), &self.identity);
        self.sync.start(*group, peer, &view, &mut out);
        self.apply_sync(out);
    }

    /// A connection to `peer` opened: reconcile every group it shares with us.
    fn sync_on_connect(&mut self, peer: PeerId) {
        let mut out = Vec::new();
        let view = NodeView::new(&*self.store, self.groups.sessions(), &self.identity);
        self.sync
            .on_connect(peer, self.mail.relays(), &view, &mut out);
        self.apply_sync(out);
    }

    /// A sync round, if one is due.
    fn sync_tick(&mut self) {
        let connected = self.connected_peers();
        let mut out = Vec::new();
        let view = NodeView::new(&*self.store, self.groups.sessions(), &self.identity);
        self.sync
            .tick(now_ms(), &connected, self.mail.relays(), &view, &mut out);
        self.apply_sync(out);
    }

    fn on_sync_event(&mut self, event: request_response::Event<net::SyncFrame, SyncResponse>) {
        let mut out = Vec::new();
        let mut answer = None;
        let view = NodeView::new(&*self.store, self.groups.sessions(), &self.identity);
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let relay = self.group_relay.as_ref();
                let relays_group = |g: &_| relay.is_some_and(|r| r.carries_group(g));
                let response = self
                    .sync
                    .answer(peer, request, &view, relays_group, &mut out);
                answer = Some((channel, response));
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self
                .sync
                .on_response(peer, request_id, response, &view, &mut out),
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                tracing::debug!(%peer, "sync request failed: {error}");
                self.sync.on_failure(request_id, &view, &mut out);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "sync request from peer failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
        // What answering asked for (items taken, items handed over) is done first.
        self.apply_sync(out);
        if let Some((channel, response)) = answer {
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, response);
        }
    }

    /// Does what sync asks, in order.
    fn apply_sync(&mut self, outs: Vec<SyncOut>) {
        for out in outs {
            match out {
                SyncOut::Request {
                    peer,
                    request,
                    pending,
                } => {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer, Ok(request));
                    self.sync.sent(id, pending);
                }
                SyncOut::Take { from, items } => {
                    let new = self.take_synced(&items);
                    tracing::debug!(peer = %from, new, "group items taken by sync");
                }
                SyncOut::KeepRelayed { group, items } => {
                    self.take_relayed(&group, &items);
                }
                SyncOut::HandedOver(item) => self.handed_over(&item),
                SyncOut::Strike { peer, why } => self.strike(peer, &why),
                SyncOut::Dial(peer) => self.dial_peer(peer),
                SyncOut::Republish => self.flush_all_unpublished(),
            }
        }
    }
}

/// Mailboxes (ours at our relays, and the one a relay keeps) and group relaying: the
/// owners decide, these carry out what they return.
impl Actor {
    /// Carries out what the mail client asked for.
    fn apply_mail(&mut self, outs: Vec<MailOut>) {
        for out in outs {
            match out {
                MailOut::Ask { relay, request, op } => {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .mailbox
                        .send_request(&relay, Ok(request));
                    self.mail.asked(id, op);
                }
                MailOut::Deposit { to, ids, relays } => self.deposit_sealed(&to, ids, &relays),
                MailOut::StoreFetched {
                    relay,
                    seqs,
                    envelopes,
                    more,
                } => {
                    let acks = self.store_envelopes(None, &envelopes);
                    let outs = self.mail.page_stored(relay, &seqs, &acks, more);
                    self.apply_mail(outs);
                }
                MailOut::MarkSent(id) => {
                    let pending = self.direct.outbox().contains(&id)
                        && matches!(self.store.message(&id),
                            Ok(Some(m)) if m.status == MessageStatus::Pending);
                    if pending {
                        self.update_status(&id, MessageStatus::Sent);
                    }
                }
                MailOut::DepositNext(to) => self.deposit_for(&to),
            }
        }
    }

    /// `peer` is unreachable: deposit its unsent messages at the relays its card lists.
    fn deposit_for(&mut self, peer: &str) {
        let Ok(Some(contact)) = self.store.contact(peer) else {
            return;
        };
        let relays = self.courier_relays(&contact.card.relay_multiaddrs());
        let outs = self.mail.deposit_for(peer, &relays, self.direct.outbox());
        self.apply_mail(outs);
    }

    /// Seals each message for contact `to` and deposits it at each relay (courier).
    fn deposit_sealed(&mut self, to: &str, ids: Vec<MessageId>, relays: &[PeerId]) {
        let Ok(Some(contact)) = self.store.contact(to) else {
            return;
        };
        for id in ids {
            let envelope = match self.seal_for(&contact.card, &id) {
                Ok(envelope) => envelope,
                Err(e) => {
                    tracing::warn!("cannot seal {id:?} for a mailbox: {e:#}");
                    continue;
                }
            };
            for relay in relays {
                let request = self.courier.behaviour_mut().send_request(
                    relay,
                    Ok(MailboxRequest::Deposit {
                        recipient: to.to_owned(),
                        envelope: envelope.clone(),
                    }),
                );
                self.mail.message_deposit_sent(request, id, to);
            }
        }
    }

    /// Leaves a receipt for `to` at the relays its card lists.
    fn deposit_receipt(&mut self, card: &ContactCard, to: &str, envelope: Vec<u8>) {
        for relay in self.courier_relays(&card.relay_multiaddrs()) {
            let request = self.courier.behaviour_mut().send_request(
                &relay,
                Ok(MailboxRequest::Deposit {
                    recipient: to.to_owned(),
                    envelope: envelope.clone(),
                }),
            );
            self.mail.receipt_deposit_sent(request);
        }
    }

    /// The distinct relays among a card's relay addresses, each with all its addresses
    /// given to the courier (a relay listed over TCP and QUIC gets one deposit, not two).
    fn courier_relays(&mut self, addrs: &[Multiaddr]) -> Vec<PeerId> {
        let mut relays: Vec<PeerId> = Vec::new();
        for (relay, addr) in relay_addrs(addrs) {
            self.courier.add_peer_address(relay, addr);
            if !relays.contains(&relay) {
                relays.push(relay);
            }
        }
        relays
    }

    fn on_courier_event(
        &mut self,
        event: SwarmEvent<request_response::Event<MailboxFrame, MailboxResponse>>,
    ) {
        let SwarmEvent::Behaviour(event) = event else {
            return;
        };
        let peers = &self.peers;
        let outs = self
            .mail
            .on_courier_event(event, |peer| peers.is_connected(peer));
        self.apply_mail(outs);
    }

    /// `relays`: each of our relays with its state.
    fn relays(&self) -> Vec<super::RelayInfo> {
        self.mail.relay_info(
            |peer| self.is_online(peer),
            |peer| self.reach.is_reserved(peer),
        )
    }

    /// The main swarm's mailbox protocol: requests to our mailbox (on a relay), answers
    /// to our fetches and acks.
    fn on_mailbox_event(&mut self, event: request_response::Event<MailboxFrame, MailboxResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = self.serve_mailbox(peer, request);
                if self
                    .swarm
                    .behaviour_mut()
                    .mailbox
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!(%peer, "mailbox response not delivered: stream closed");
                }
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let outs = self.mail.on_answer(request_id, Some(response));
                self.apply_mail(outs);
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                tracing::debug!("mailbox request failed: {error}");
                let outs = self.mail.on_answer(request_id, None);
                self.apply_mail(outs);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "mailbox inbound failure: {error}");
            }
            other => tracing::debug!(?other, "mailbox event"),
        }
    }

    /// Answers a request to our mailbox: a malformed frame, a node that is not a relay
    /// and a peer over the request rate (shared with dm) are refused before the mailbox
    /// sees it.
    fn serve_mailbox(&mut self, peer: PeerId, request: MailboxFrame) -> MailboxResponse {
        let request = match request {
            Ok(request) => request,
            Err(why) => return MailboxResponse::Refused(format!("malformed request: {why}")),
        };
        let Some(server) = self.mailbox.as_mut() else {
            return MailboxResponse::Refused("this node is not a relay".into());
        };
        let now = now_ms();
        if !self.peers.allow(&peer, now) {
            return MailboxResponse::Refused("too many requests; slow down".into());
        }
        server.serve(&*self.store, peer, request, now)
    }

    /// A client joined a group topic, so a relay joins it too and carries its traffic
    /// between members that reach each other only through the relay (see `group_relay`).
    fn relay_topic(&mut self, topic: &TopicHash, client: PeerId) {
        let Some(join) = self
            .group_relay
            .as_ref()
            .and_then(|r| r.on_subscribed(topic))
        else {
            return;
        };
        match self.subscribe_scored(join) {
            Ok(_) => {
                tracing::info!(%client, %topic, "relaying a group topic");
                if let Some(relay) = self.group_relay.as_mut() {
                    relay.joined(topic.clone());
                }
            }
            Err(e) => tracing::warn!("cannot join group topic {topic}: {e}"),
        }
    }

    /// Whether we carry `topic` for clients, as a relay.
    fn relays_topic(&self, topic: &TopicHash) -> bool {
        self.group_relay.as_ref().is_some_and(|r| r.carries(topic))
    }

    /// A gossip item on a topic we carry for clients: the verdict to report.
    fn relay_item(&mut self, topic: &TopicHash, bytes: &[u8]) -> MessageAcceptance {
        match self.group_relay.as_mut() {
            Some(relay) => relay.on_gossip(&*self.store, topic, bytes),
            None => MessageAcceptance::Ignore,
        }
    }

    /// Items a member pushed to us as the group's relay; how many were new.
    fn take_relayed(&mut self, group: &crate::crypto::group::GroupId, items: &[Vec<u8>]) -> usize {
        let new = self
            .group_relay
            .as_ref()
            .map_or(0, |r| r.take_pushed(&*self.store, group, items));
        if new > 0 {
            self.sync.log_changed(group);
        }
        new
    }
}
