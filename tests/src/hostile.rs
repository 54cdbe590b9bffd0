//! A raw peer that speaks `/bonghwa/dm/1` with whatever bytes a test gives it: garbage,
//! lying length prefixes, replays, forgeries. It frames nothing itself.

use std::io;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};

use crate::WAIT;

/// Bytes out verbatim; the response read to its end (at most 64 KiB).
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

/// Largest frame the raw peer reads (a full mailbox page, with its length prefix).
const MAX_RESPONSE: u64 = bonghwa_core::wire::MAX_MAILBOX_RESPONSE_BYTES as u64 + 4;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io.take(MAX_RESPONSE).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io.take(MAX_RESPONSE).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

/// The hostile peer.
pub struct Attacker {
    swarm: Swarm<request_response::Behaviour<RawCodec>>,
}

impl Attacker {
    pub fn new() -> anyhow::Result<Self> {
        Self::speaking(
            libp2p::identity::Keypair::generate_ed25519(),
            "/bonghwa/dm/1",
        )
    }

    /// A raw peer with this identity that sends requests of `protocol`: a stand-in for
    /// another implementation's client (e.g. a mailbox user with a chosen peer id).
    pub fn speaking(
        keypair: libp2p::identity::Keypair,
        protocol: &'static str,
    ) -> anyhow::Result<Self> {
        let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    RawCodec,
                    [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(20)),
                )
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        Ok(Self { swarm })
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Dials `addr` and waits for the connection.
    pub async fn connect(&mut self, addr: &str) -> anyhow::Result<PeerId> {
        let addr: Multiaddr = addr.parse()?;
        self.swarm.dial(addr)?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .context("attacker: connection timed out")?;
            match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    bail!("attacker: dial failed: {error}")
                }
                _ => {}
            }
        }
    }

    /// Sends raw bytes as one request. `Ok(bytes)` is the raw response; `Err` says why there was none.
    pub async fn send(
        &mut self,
        peer: PeerId,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Result<Vec<u8>, String>> {
        let id = self.swarm.behaviour_mut().send_request(&peer, bytes);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .context("attacker: no answer")?;
            match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if request_id == id => return Ok(Ok(response)),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                }) if request_id == id => {
                    return Ok(Err(error.to_string()));
                }
                _ => {}
            }
        }
    }

    /// Whether the attacker still holds a connection to `peer`.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.swarm.is_connected(peer)
    }
}

/// Frames `body` as the dm protocol does: 4-byte big-endian length, then the body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}
