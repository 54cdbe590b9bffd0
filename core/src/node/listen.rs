//! Opening the listeners before the node runs.
//!
//! A port-0 address reuses the port it got last time, so contacts that remember our address
//! can reach us again after a restart; if that port is taken, any port. The node waits until
//! each listener has an address, so `identity` is right from its first answer.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};

use super::NodeResult;
use crate::net::{self, Behaviour, BehaviourEvent, NetError};
use crate::store::{Store, StoreError};

/// What the listeners got.
pub(super) struct Listening {
    /// Our listen addresses.
    pub(super) addrs: BTreeSet<Multiaddr>,
    /// Whatever else the swarm reported meanwhile (an mDNS discovery, an inbound
    /// connection), to be handled once the node runs: mDNS reports a peer only once.
    pub(super) early: Vec<SwarmEvent<BehaviourEvent>>,
    /// The port each configured port-0 address got, to remember for the next run.
    pub(super) ports: Vec<(Multiaddr, u16)>,
}

/// Opens a listener on each of `listen` (the defaults if empty), on the port it had last
/// time where the store remembers one; [`wait`] then waits for their addresses.
pub(super) fn open(
    swarm: &mut Swarm<Behaviour>,
    store: &dyn Store,
    listen: &[Multiaddr],
) -> NodeResult<HashMap<ListenerId, Multiaddr>> {
    let listen = if listen.is_empty() {
        net::default_listen_addrs()
    } else {
        listen.to_vec()
    };
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
        let id = match remembered.map(|again| swarm.listen_on(again)) {
            Some(Ok(id)) => id,
            _ => swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    detail: e.to_string(),
                })?,
        };
        listeners.insert(id, addr);
    }
    Ok(listeners)
}

/// Waits until each listener has an address, for at most [`super::LISTEN_TIMEOUT`]. Takes
/// no store: the future must stay `Send`; the caller remembers the ports.
pub(super) async fn wait(
    swarm: &mut Swarm<Behaviour>,
    mut listeners: HashMap<ListenerId, Multiaddr>,
) -> NodeResult<Listening> {
    let mut addrs = BTreeSet::new();
    let mut ports = Vec::new();
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
                    ports.push((configured, port));
                }
                addrs.insert(address);
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
                return Err(NetError::Listen {
                    addr: addresses.first().cloned().unwrap_or(Multiaddr::empty()),
                    detail: format!("listener {listener_id:?} {detail}"),
                }
                .into());
            }
            other => early.push(other),
        }
    }
    Ok(Listening {
        addrs,
        early,
        ports,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_port_replaces_port_zero_only() {
        let any: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().unwrap();
        let fixed: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        let quic: Multiaddr = "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap();
        assert_eq!(
            with_port(&any, 5000),
            Some("/ip4/0.0.0.0/tcp/5000".parse().unwrap())
        );
        assert_eq!(with_port(&fixed, 5000), None);
        assert_eq!(
            with_port(&quic, 5000),
            Some("/ip4/0.0.0.0/udp/5000/quic-v1".parse().unwrap())
        );
        assert_eq!(port_of(&fixed), Some(4001));
    }
}
