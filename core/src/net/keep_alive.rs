//! Keeps connections to contacts open.
//!
//! libp2p closes a connection once no protocol needs it (after the idle timeout). Chat
//! needs the opposite for the people you talk to: an open connection means a message
//! arrives at once and presence is known. This behaviour's handler asks to keep a
//! connection alive exactly when the actor has marked its peer as kept.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
    NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// Most peers kept alive at once (the contacts of a large address book).
pub(crate) const MAX_KEPT: usize = 4096;

/// The behaviour: which peers to keep, and their open connections.
#[derive(Default)]
pub(crate) struct Behaviour {
    kept: BTreeSet<PeerId>,
    connections: BTreeMap<PeerId, BTreeSet<ConnectionId>>,
    to_notify: VecDeque<(PeerId, ConnectionId, bool)>,
    waker: Option<Waker>,
}

impl Behaviour {
    /// Marks `peer` as kept alive (a contact) or not. Returns false if the set is full.
    pub(crate) fn set_kept(&mut self, peer: PeerId, keep: bool) -> bool {
        let changed = if keep {
            if self.kept.len() >= MAX_KEPT && !self.kept.contains(&peer) {
                return false;
            }
            self.kept.insert(peer)
        } else {
            self.kept.remove(&peer)
        };
        if changed {
            for connection in self.connections.get(&peer).into_iter().flatten() {
                self.to_notify.push_back((peer, *connection, keep));
            }
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
        true
    }

    fn handler_for(&mut self, peer: PeerId, connection: ConnectionId) -> Handler {
        let set = self.connections.entry(peer).or_default();
        set.insert(connection);
        Handler {
            keep_alive: self.kept.contains(&peer),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler_for(peer, connection))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler_for(peer, connection))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(closed) = event
            && let Some(set) = self.connections.get_mut(&closed.peer_id)
        {
            set.remove(&closed.connection_id);
            if set.is_empty() {
                self.connections.remove(&closed.peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection, keep)) = self.to_notify.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: keep,
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Per-connection half: no protocols, only the keep-alive flag.
pub(crate) struct Handler {
    keep_alive: bool,
}

impl libp2p::swarm::ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn on_behaviour_event(&mut self, keep: bool) {
        self.keep_alive = keep;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        // DeniedUpgrade negotiates nothing, so only address and protocol changes arrive.
        let _ = event;
    }
}
