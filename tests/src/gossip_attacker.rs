//! A hostile gossipsub peer: it joins a group's topic and publishes whatever bytes it is
//! given (forged group log items), as a non-member or an impostor would.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, noise, tcp, yamux};
use tokio::sync::mpsc;

use crate::WAIT;

type Gossip = gossipsub::Behaviour;

/// Publications queued for the attacker's swarm task.
const QUEUE: usize = 64;

/// The attacker; its swarm runs on a task until this is dropped.
pub struct GossipAttacker {
    publish: mpsc::Sender<(String, Vec<u8>)>,
    received: mpsc::Receiver<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl GossipAttacker {
    /// Connects to `addr` (a Bonghwa node), joins `topic`, and waits until that node is
    /// seen on the topic, so that publications reach it.
    pub async fn join(
        keypair: libp2p::identity::Keypair,
        addr: &str,
        topic: &str,
    ) -> anyhow::Result<Self> {
        let mut swarm: Swarm<Gossip> = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| {
                let config = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Anonymous)
                    .max_transmit_size(65 * 1024)
                    .message_id_fn(|m: &gossipsub::Message| {
                        gossipsub::MessageId::from(
                            bonghwa_core::wire::group::LogItem::id_of(&m.data)
                                .0
                                .to_vec(),
                        )
                    })
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Anonymous,
                    config,
                )?)
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        let topic = gossipsub::IdentTopic::new(topic);
        swarm.behaviour_mut().subscribe(&topic)?;
        let target: Multiaddr = addr.parse()?;
        swarm.dial(target)?;
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut peer: Option<PeerId> = None;
        loop {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .context("gossip attacker: the node never joined the topic with us")?;
            match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => peer = Some(peer_id),
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    bail!("gossip attacker: dial failed: {error}")
                }
                SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, topic: t })
                    if Some(peer_id) == peer && t == topic.hash() =>
                {
                    break;
                }
                _ => {}
            }
        }
        let (publish, mut queue) = mpsc::channel::<(String, Vec<u8>)>(QUEUE);
        let (heard, received) = mpsc::channel::<Vec<u8>>(QUEUE);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    next = queue.recv() => {
                        let Some((topic, data)) = next else { break };
                        let topic = gossipsub::IdentTopic::new(topic);
                        if let Err(e) = swarm.behaviour_mut().publish(topic, data) {
                            eprintln!("gossip attacker: publish failed: {e}");
                        }
                    }
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = event {
                            let _ = heard.try_send(message.data);
                        }
                    }
                }
            }
        });
        Ok(Self {
            publish,
            received,
            task,
        })
    }

    /// Publishes `data` on `topic`.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> anyhow::Result<()> {
        self.publish
            .send((topic.to_owned(), data))
            .await
            .context("gossip attacker stopped")
    }
}

impl GossipAttacker {
    /// The next message heard on the topic, if one comes within `within`.
    pub async fn next_message(&mut self, within: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for GossipAttacker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
