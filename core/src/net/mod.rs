//! The libp2p side: behaviours, transports and the framing of Bonghwa's protocols.
//!
//! One `Behaviour` composes everything a node speaks. The actor in `node` owns the
//! `Swarm` built here and is the only code that drives it.

mod codec;
mod keep_alive;

use std::num::NonZeroU32;
use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, autonat, connection_limits, dcutr, gossipsub, identify, kad,
    mdns, memory_connection_limits, noise, ping, relay, request_response, tcp, yamux,
};

pub(crate) use codec::{
    CardAnswer, CardCodec, CardRequest, DmCodec, DmFrame, MailboxCodec, MailboxFrame, SyncCodec,
    SyncFrame,
};

use crate::identity::Identity;

/// The direct-message protocol: push sealed envelopes, get per-envelope acks.
pub const DM_PROTOCOL: StreamProtocol = StreamProtocol::new("/bonghwa/dm/1");
/// Asks a peer for its signed contact card (used for LAN peers found by mDNS).
pub const CARD_PROTOCOL: StreamProtocol = StreamProtocol::new("/bonghwa/card/2");
/// The card protocol of builds before sessions (a card without a prekey), still served.
pub const CARD_PROTOCOL_V1: StreamProtocol = StreamProtocol::new("/bonghwa/card/1");
/// A relay's mailbox: deposit sealed envelopes for offline recipients, fetch and ack one's own.
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/bonghwa/mailbox/1");
/// Group history repair: reconcile the sets of log items, fetch and push what differs.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/bonghwa/sync/1");
/// Topics one peer may subscribe to (and in one request) before gossipsub ignores the rest
/// (libp2p's `MaxCountSubscriptionFilter` default is 100: too few for a relay or for
/// someone in many groups).
pub const MAX_TOPICS_PER_PEER: usize = 4_096;
/// Bytes of one gossip message: a group log item plus framing.
pub const MAX_GOSSIP_BYTES: usize = 64 * 1024 + 1024;
/// Bonghwa's private Kademlia DHT (relays serve it; clients publish and look up addresses).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/bonghwa/kad/1.0.0");
/// The identify protocol version string: peers with another value are not Bonghwa nodes.
pub const IDENTIFY_PROTOCOL: &str = "/bonghwa/1.0.0";

/// Connections in total, and per peer.
pub const MAX_CONNECTIONS: u32 = 512;
/// Connections in total on a relay node (each client holding a reservation keeps one).
pub const RELAY_MAX_CONNECTIONS: u32 = 8_192;
/// Connections to one peer (TCP + QUIC + a spare while redialling).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Connections still handshaking, each way.
pub const MAX_PENDING_CONNECTIONS: u32 = 128;
/// New connections are refused once the process uses this share of system memory.
pub const MAX_MEMORY_FRACTION: f64 = 0.9;
/// Concurrent streams per request-response protocol per connection.
pub const MAX_CONCURRENT_STREAMS: usize = 32;
/// How long a request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unused connection to a non-contact stays open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Relay reservations a relay node holds at once (libp2p's default is 128).
pub const RELAY_MAX_RESERVATIONS: usize = 8_192;
/// Relay reservations per peer.
pub const RELAY_MAX_RESERVATIONS_PER_PEER: usize = 4;
/// How long a reservation lasts before the client renews it.
pub const RELAY_RESERVATION_DURATION: Duration = Duration::from_secs(60 * 60);
/// Relayed connections at once, and per peer.
pub const RELAY_MAX_CIRCUITS: usize = 1_024;
/// Relayed connections per peer.
pub const RELAY_MAX_CIRCUITS_PER_PEER: usize = 8;
/// A circuit lasts long enough for a conversation (libp2p's default is 2 minutes) ...
pub const RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(60 * 60);
/// ... and carries at most this many bytes each way (chat, not video).
pub const RELAY_MAX_CIRCUIT_BYTES: u64 = 64 << 20;
/// Reservations (new or renewed) one peer may make in a burst ...
pub const RELAY_RESERVATIONS_PER_PEER_BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(29);
/// ... then one per this interval (libp2p's default).
pub const RELAY_RESERVATION_PEER_INTERVAL: Duration = Duration::from_secs(120);
/// Reservations one source IP may make in a burst: high, because many phones share one
/// carrier-grade NAT address and all come back at once after a relay restart (libp2p's
/// default, 60, refused 440 of 500 such clients in the capacity benchmark) ...
pub const RELAY_RESERVATIONS_PER_IP_BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(1023);
/// ... then one per this interval (10 a second).
pub const RELAY_RESERVATION_IP_INTERVAL: Duration = Duration::from_millis(100);
/// Address records a DHT server keeps (each at most [`MAX_DHT_RECORD_BYTES`]).
pub const MAX_DHT_RECORDS: usize = 65_536;
/// The largest DHT record value accepted: a signed list of a few addresses.
pub const MAX_DHT_RECORD_BYTES: usize = 2_048;
/// How long an address record lives in the DHT without being republished.
pub const DHT_RECORD_TTL: Duration = Duration::from_secs(2 * 3_600);
/// How often the DHT republishes our own address record.
pub const DHT_REPUBLISH: Duration = Duration::from_secs(30 * 60);
/// How long a DHT query may take.
pub const DHT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a node speaks, composed.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) dm: request_response::Behaviour<DmCodec>,
    pub(crate) card: request_response::Behaviour<CardCodec>,
    pub(crate) mailbox: request_response::Behaviour<MailboxCodec>,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: Gossipsub,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    pub(crate) keep_alive: keep_alive::Behaviour,
}

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A transport could not be built.
    #[error("could not set up the network transports: {0}")]
    Transport(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {detail}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        detail: String,
    },
}

/// What a node serves besides chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Roles {
    /// Find peers on the LAN.
    pub(crate) mdns: bool,
    /// Be a relay: relay v2 server, mailbox and DHT server.
    pub(crate) relay: bool,
}

/// Timeouts and stream limits shared by every request-response protocol.
fn rr_config() -> request_response::Config {
    request_response::Config::default()
        .with_request_timeout(REQUEST_TIMEOUT)
        .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS)
}

/// The relay server's limits, sized for chat.
fn relay_config() -> relay::Config {
    relay::Config {
        max_reservations: RELAY_MAX_RESERVATIONS,
        max_reservations_per_peer: RELAY_MAX_RESERVATIONS_PER_PEER,
        reservation_duration: RELAY_RESERVATION_DURATION,
        max_circuits: RELAY_MAX_CIRCUITS,
        max_circuits_per_peer: RELAY_MAX_CIRCUITS_PER_PEER,
        max_circuit_duration: RELAY_MAX_CIRCUIT_DURATION,
        max_circuit_bytes: RELAY_MAX_CIRCUIT_BYTES,
        reservation_rate_limiters: Vec::new(),
        ..relay::Config::default()
    }
    .reservation_rate_per_peer(
        RELAY_RESERVATIONS_PER_PEER_BURST,
        RELAY_RESERVATION_PEER_INTERVAL,
    )
    .reservation_rate_per_ip(
        RELAY_RESERVATIONS_PER_IP_BURST,
        RELAY_RESERVATION_IP_INTERVAL,
    )
}

/// AutoNAT: probes start soon after start and repeat while the answer is unsure.
/// Private addresses are allowed, so that a relay on a LAN or in a test network can
/// answer (libp2p's default trusts only global addresses). A relay only answers probes:
/// probing its own reachability through thousands of connected clients pinned a core in
/// the capacity benchmark (each failed probe moves straight on to the next client).
fn autonat_config(relay: bool) -> autonat::Config {
    autonat::Config {
        use_connected: !relay,
        boot_delay: Duration::from_secs(5),
        retry_interval: Duration::from_secs(30),
        refresh_interval: Duration::from_secs(15 * 60),
        throttle_server_period: Duration::from_secs(15),
        only_global_ips: false,
        ..autonat::Config::default()
    }
}

/// Kademlia on [`KAD_PROTOCOL`]: records are filtered (a DHT server stores only signed
/// address records that verify), sized, and expire unless republished.
fn kad_behaviour(peer_id: libp2p::PeerId, server: bool) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config
        .set_record_ttl(Some(DHT_RECORD_TTL))
        .set_publication_interval(Some(DHT_REPUBLISH))
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        .set_query_timeout(DHT_QUERY_TIMEOUT);
    let store = kad::store::MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_records: MAX_DHT_RECORDS,
            max_value_bytes: MAX_DHT_RECORD_BYTES,
            max_providers_per_key: 0,
            max_provided_keys: 0,
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, config);
    // Relays always serve; clients serve only once AutoNAT confirms a public address.
    if server {
        kad.set_mode(Some(kad::Mode::Server));
    }
    kad
}

/// Gossipsub with a bound on the topics a peer may subscribe to.
pub(crate) type Gossipsub = gossipsub::Behaviour<
    gossipsub::IdentityTransform,
    gossipsub::MaxCountSubscriptionFilter<gossipsub::AllowAllSubscriptionFilter>,
>;

/// Gossipsub for group logs: items are signed inside (so gossip itself is anonymous),
/// a message's id is its item id (the hash of its bytes, so a retransmission is a
/// duplicate), every message is validated by the node before it is forwarded, and peers
/// are scored (bad messages lower a peer's score until it is pruned).
fn gossipsub_behaviour() -> Result<Gossipsub, String> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(crate::wire::group::LogItem::id_of(&message.data).0.to_vec())
        })
        .build()
        .map_err(|e| e.to_string())?;
    let filter = gossipsub::MaxCountSubscriptionFilter {
        filter: gossipsub::AllowAllSubscriptionFilter {},
        max_subscribed_topics: MAX_TOPICS_PER_PEER,
        max_subscriptions_per_request: MAX_TOPICS_PER_PEER,
    };
    let mut behaviour = gossipsub::Behaviour::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Anonymous,
        config,
        filter,
    )?;
    behaviour.with_peer_score(
        peer_score_params(),
        gossipsub::PeerScoreThresholds::default(),
    )?;
    Ok(behaviour)
}

/// Peer scoring for group topics, apart from the per-topic part ([`group_topic_score`]).
///
/// The library's default penalises every peer beyond the tenth that shares one IP address
/// (P6, IP colocation), as a defence against Sybils. It does not fit here: whoever may post
/// is decided by the group's signed membership, not by how many addresses an attacker
/// has, while sharing an address is normal for a messenger (a family behind one home
/// router, phones behind a carrier's NAT, everyone reached through one relay, whose
/// address a circuit carries). With it on, a node with 14 fellow members behind one address
/// scored them below the publish threshold and gossip stopped (measured with
/// `bench-group`: 30 nodes on loopback fell back to the 30-s sync).
pub(crate) fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Per-topic scoring, set when a group topic is joined. Only invalid messages count
/// against a peer (P4): an item that does not decode or whose signature fails, which an
/// honest peer never forwards because it validates before forwarding. Three of them
/// bring a peer below the graylist threshold; the count decays by 1 % a second.
/// Delivery deficits (P3, P3b) are off: a family group can be quiet for days, and a
/// quiet mesh would be punished for it. First deliveries (P2) earn a little credit.
pub(crate) fn group_topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.99,
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.99,
        ..gossipsub::TopicScoreParams::default()
    }
}

/// Builds the swarm for `identity` with the given roles.
pub(crate) fn build_swarm(identity: &Identity, roles: Roles) -> Result<Swarm<Behaviour>, NetError> {
    let mdns = roles.mdns;
    let keypair = identity.libp2p_keypair();
    let transport_err = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_err(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| transport_err(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| transport_err(&e))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mdns = if mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            let rr_config = rr_config();
            let max_connections = if roles.relay {
                RELAY_MAX_CONNECTIONS
            } else {
                MAX_CONNECTIONS
            };
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(max_connections))
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
                .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                memory: memory_connection_limits::Behaviour::with_max_percentage(
                    MAX_MEMORY_FRACTION,
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(format!("bonghwa/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                mdns: Toggle::from(mdns),
                dm: request_response::Behaviour::new(
                    [(DM_PROTOCOL, request_response::ProtocolSupport::Full)],
                    rr_config.clone(),
                ),
                card: request_response::Behaviour::new(
                    [
                        (CARD_PROTOCOL, request_response::ProtocolSupport::Full),
                        (CARD_PROTOCOL_V1, request_response::ProtocolSupport::Full),
                    ],
                    rr_config.clone(),
                ),
                // Everyone deposits and fetches; only relays hold mail.
                mailbox: request_response::Behaviour::new(
                    [(
                        MAILBOX_PROTOCOL,
                        if roles.relay {
                            request_response::ProtocolSupport::Full
                        } else {
                            request_response::ProtocolSupport::Outbound
                        },
                    )],
                    rr_config,
                ),
                relay: Toggle::from(
                    roles
                        .relay
                        .then(|| relay::Behaviour::new(peer_id, relay_config())),
                ),
                relay_client,
                dcutr: dcutr::Behaviour::new(peer_id),
                autonat: autonat::Behaviour::new(peer_id, autonat_config(roles.relay)),
                kad: kad_behaviour(peer_id, roles.relay),
                gossipsub: gossipsub_behaviour()?,
                sync: request_response::Behaviour::new(
                    [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
                    crate::net::rr_config(),
                ),
                keep_alive: keep_alive::Behaviour::default(),
            })
        })
        .map_err(|e| transport_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

/// The courier: a second, throwaway libp2p identity that only deposits mail at relays, so
/// a relay never sees the author's peer id on a deposit. A fresh key every run.
pub(crate) type Courier = Swarm<request_response::Behaviour<MailboxCodec>>;

/// Builds the courier swarm (TCP and QUIC, dial only).
pub(crate) fn build_courier() -> Result<Courier, NetError> {
    let transport_err = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_err(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| transport_err(&e))?
        .with_behaviour(|_| {
            request_response::Behaviour::new(
                [(
                    MAILBOX_PROTOCOL,
                    request_response::ProtocolSupport::Outbound,
                )],
                rr_config(),
            )
        })
        .map_err(|e| transport_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    Ok(swarm)
}

/// The default listen addresses: TCP and QUIC on all interfaces, ports chosen by the OS.
pub fn default_listen_addrs() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `set_topic_params` does not validate, so a bad weight would only show as strange
    /// scores in the field.
    #[test]
    fn group_scoring_is_valid_and_ignores_shared_addresses() {
        let peer = peer_score_params();
        peer.validate().expect("peer score parameters");
        assert_eq!(peer.ip_colocation_factor_weight, 0.0);
        let topic = group_topic_score();
        topic.validate().expect("topic score parameters");
        let thresholds = gossipsub::PeerScoreThresholds::default();
        // Three invalid items put a peer below the graylist threshold; one does not even
        // stop gossip with it.
        let after = |invalid: f64| topic.invalid_message_deliveries_weight * invalid * invalid;
        assert!(after(3.0) * topic.topic_weight < thresholds.graylist_threshold);
        assert!(after(1.0) * topic.topic_weight >= thresholds.gossip_threshold);
    }
}
