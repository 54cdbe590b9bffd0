//! The client side of mailboxes: deposit for unreachable contacts, fetch our own mail.
//!
//! - Deposit: when the outbox has to dial a contact (it is not connected), its unsent
//!   messages are sealed and deposited at the relays its contact card lists, through the
//!   courier (a throwaway identity, so the relay does not learn the author). A relay's
//!   `Stored` makes the message `sent`; it stays in the outbox until the recipient's own
//!   ack (`delivered`), which comes when the two are next connected.
//! - Fetch: whenever a connection to one of our own relays is identified, we fetch our
//!   held mail page by page, store it like directly received mail (open, dedup, flush),
//!   and only then ack it so the relay may drop it.

use std::collections::{HashSet, VecDeque};

use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};

use super::actor::Actor;
use super::relay_addrs;
use crate::identity::ContactCard;
use crate::model::{MessageId, MessageStatus};
use crate::net::MailboxFrame;
use crate::wire::{Ack, MAX_MAIL_PAGE, MailboxRequest, MailboxResponse};

/// Relays listed in a contact card at most.
pub(super) const MAX_CARD_RELAYS: usize = 4;
/// Deposits for one contact awaiting the relay's answer at once; each `Stored` lets the
/// next one go, so a relay's stream limit is never hit.
const MAX_DEPOSITS_IN_FLIGHT: usize = 16;

/// A mailbox request of ours on the main swarm, awaiting its answer.
#[derive(Clone, Debug)]
pub(super) enum MailOp {
    /// Fetching our mail from this relay.
    Fetch(PeerId),
    /// Acking fetched mail; then fetch again after `next` if there was more.
    Ack { relay: PeerId, next: Option<u64> },
}

/// What one deposit on the courier carries.
#[derive(Clone, Debug)]
enum Deposit {
    /// One of our messages, for contact `to`.
    Message { id: MessageId, to: String },
    /// A receipt for mail we fetched, for its author.
    Receipt,
}

/// Client-side mailbox state.
#[derive(Debug, Default)]
pub(super) struct MailClient {
    /// Our relays, from the start flags: (peer id, address).
    pub(super) relays: Vec<(PeerId, Multiaddr)>,
    pub(super) ops: std::collections::HashMap<OutboundRequestId, MailOp>,
    /// Relays we are fetching from right now.
    fetching: HashSet<PeerId>,
    /// Deposits on the courier awaiting the relay's answer.
    deposits: std::collections::HashMap<OutboundRequestId, Deposit>,
    /// Messages deposited this run (so each dial does not deposit them again).
    deposited: HashSet<MessageId>,
    /// Messages waiting to be deposited, per contact, oldest first.
    queued: std::collections::HashMap<String, VecDeque<MessageId>>,
    /// Outcome of the last fetch per relay.
    fetched: std::collections::HashMap<PeerId, bool>,
}

impl MailClient {
    /// Client state for these relays.
    pub(super) fn new(relays: Vec<(PeerId, Multiaddr)>) -> Self {
        Self {
            relays,
            ..Self::default()
        }
    }
}

impl Actor {
    /// A connection to `peer` was identified; if it is one of our relays and serves a
    /// mailbox, fetch our mail.
    pub(super) fn maybe_fetch_mail(&mut self, peer: PeerId, serves_mailbox: bool) {
        if !serves_mailbox || !self.mail.relays.iter().any(|(id, _)| *id == peer) {
            return;
        }
        if self.mail.fetching.insert(peer) {
            self.send_mail_op(
                peer,
                MailboxRequest::Fetch { after: None },
                MailOp::Fetch(peer),
            );
        }
    }

    fn send_mail_op(&mut self, relay: PeerId, request: MailboxRequest, op: MailOp) {
        let id = self
            .swarm
            .behaviour_mut()
            .mailbox
            .send_request(&relay, Ok(request));
        self.mail.ops.insert(id, op);
    }

    /// An answer (or failure) to one of our fetches or acks.
    pub(super) fn on_mail_response(
        &mut self,
        id: OutboundRequestId,
        response: Option<MailboxResponse>,
    ) {
        let Some(op) = self.mail.ops.remove(&id) else {
            return;
        };
        match (op, response) {
            (MailOp::Fetch(relay), Some(MailboxResponse::Page { mail, more })) => {
                self.mail.fetched.insert(relay, true);
                let last = mail.last().map(|(seq, _)| *seq);
                let (seqs, envelopes): (Vec<u64>, Vec<Vec<u8>>) = mail.into_iter().unzip();
                let acks = self.store_envelopes(None, &envelopes);
                // Ack what is stored (or can never be opened); keep what must be retried.
                let done: Vec<u64> = seqs
                    .iter()
                    .zip(&acks)
                    .filter(|(_, ack)| !matches!(ack, Ack::Retry))
                    .map(|(seq, _)| *seq)
                    .take(MAX_MAIL_PAGE)
                    .collect();
                let all_done = done.len() == seqs.len();
                let next = (more && all_done).then_some(last).flatten();
                if done.is_empty() {
                    self.mail.fetching.remove(&relay);
                } else {
                    tracing::info!(%relay, fetched = done.len(), "mail fetched");
                    self.send_mail_op(
                        relay,
                        MailboxRequest::Ack { seqs: done },
                        MailOp::Ack { relay, next },
                    );
                }
            }
            (
                MailOp::Ack {
                    relay,
                    next: Some(after),
                },
                Some(MailboxResponse::Acked),
            ) => {
                self.send_mail_op(
                    relay,
                    MailboxRequest::Fetch { after: Some(after) },
                    MailOp::Fetch(relay),
                );
            }
            (MailOp::Fetch(relay) | MailOp::Ack { relay, .. }, other) => {
                if let Some(MailboxResponse::Refused(why)) = &other {
                    tracing::warn!(%relay, "mailbox refused: {why}");
                }
                if !matches!(other, Some(MailboxResponse::Acked)) {
                    self.mail.fetched.insert(relay, false);
                }
                self.mail.fetching.remove(&relay);
            }
        }
    }

    /// `relays`: each of our relays with its state.
    pub(super) fn relays(&self) -> Vec<super::RelayInfo> {
        self.mail
            .relays
            .iter()
            .map(|(peer, addr)| super::RelayInfo {
                peer_id: peer.to_string(),
                addr: addr.to_string(),
                connected: self.is_online(peer),
                reserved: self.reach.is_reserved(peer),
                mailbox: match self.mail.fetched.get(peer) {
                    Some(true) => super::MailboxState::Ok,
                    Some(false) => super::MailboxState::Failed,
                    None => super::MailboxState::Unknown,
                },
            })
            .collect()
    }

    /// `peer` is unreachable: deposit its unsent messages at the relays its card lists.
    pub(super) fn deposit_for(&mut self, peer: &str) {
        let Ok(Some(contact)) = self.store.contact(peer) else {
            return;
        };
        let relays = self.courier_relays(&contact.card.relay_multiaddrs());
        if relays.is_empty() {
            return;
        }
        let in_flight: HashSet<MessageId> = self
            .mail
            .deposits
            .values()
            .filter_map(|d| match d {
                Deposit::Message { id, to } if to == peer => Some(*id),
                _ => None,
            })
            .collect();
        let budget = MAX_DEPOSITS_IN_FLIGHT.saturating_sub(in_flight.len());
        // The outbox is scanned only when this contact's queue has run dry, not on every
        // `Stored`: a long queue would otherwise cost O(n) per deposit.
        let empty = self.mail.queued.get(peer).is_none_or(VecDeque::is_empty);
        if empty {
            let unsent: VecDeque<MessageId> = self
                .outbox
                .unsent_for(peer)
                .into_iter()
                .filter(|id| !self.mail.deposited.contains(id))
                .collect();
            self.mail.queued.insert(peer.to_owned(), unsent);
        }
        let mut ids = Vec::with_capacity(budget);
        if let Some(queue) = self.mail.queued.get_mut(peer) {
            while ids.len() < budget {
                let Some(id) = queue.pop_front() else { break };
                // Delivered meanwhile, or deposited by an earlier round.
                if self.outbox.contains(&id) && !self.mail.deposited.contains(&id) {
                    ids.push(id);
                }
            }
            if queue.is_empty() {
                self.mail.queued.remove(peer);
            }
        }
        for id in ids {
            let envelope = match self.seal_for(&contact.card, &id) {
                Ok(envelope) => envelope,
                Err(e) => {
                    tracing::warn!("cannot seal {id:?} for a mailbox: {e:#}");
                    continue;
                }
            };
            for relay in &relays {
                let request = self.courier.behaviour_mut().send_request(
                    relay,
                    Ok(MailboxRequest::Deposit {
                        recipient: peer.to_owned(),
                        envelope: envelope.clone(),
                    }),
                );
                self.mail.deposits.insert(
                    request,
                    Deposit::Message {
                        id,
                        to: peer.to_owned(),
                    },
                );
            }
            self.mail.deposited.insert(id);
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

    /// Leaves a receipt for `to` at the relays its card lists.
    pub(super) fn deposit_receipt(&mut self, card: &ContactCard, to: &str, envelope: Vec<u8>) {
        for relay in self.courier_relays(&card.relay_multiaddrs()) {
            let request = self.courier.behaviour_mut().send_request(
                &relay,
                Ok(MailboxRequest::Deposit {
                    recipient: to.to_owned(),
                    envelope: envelope.clone(),
                }),
            );
            self.mail.deposits.insert(request, Deposit::Receipt);
        }
    }

    /// Deposits still waiting for a relay's answer (shutdown waits for them).
    pub(super) fn deposits_in_flight(&self) -> usize {
        self.mail.deposits.len()
    }

    pub(super) fn on_courier_event(
        &mut self,
        event: SwarmEvent<request_response::Event<MailboxFrame, MailboxResponse>>,
    ) {
        let SwarmEvent::Behaviour(event) = event else {
            return;
        };
        match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                peer,
                ..
            } => {
                let Some(deposit) = self.mail.deposits.remove(&request_id) else {
                    return;
                };
                let Deposit::Message { id, to } = deposit else {
                    if !matches!(response, MailboxResponse::Stored) {
                        tracing::warn!(%peer, "receipt refused: {response:?}");
                    }
                    return;
                };
                match response {
                    MailboxResponse::Stored => {
                        if self.outbox.contains(&id) {
                            self.mark_sent(&id);
                        }
                        // Next in line, while the contact is still away.
                        let away = to.parse().is_ok_and(|p: PeerId| !self.is_online(&p));
                        if away {
                            self.deposit_for(&to);
                        }
                    }
                    other => {
                        tracing::warn!(%peer, "deposit refused: {other:?}");
                        self.mail.deposited.remove(&id);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                // Retried at the next dial of the contact (its backoff paces it).
                match self.mail.deposits.remove(&request_id) {
                    Some(Deposit::Message { id, .. }) => {
                        tracing::debug!("deposit failed: {error}");
                        self.mail.deposited.remove(&id);
                    }
                    Some(Deposit::Receipt) => tracing::debug!("receipt deposit failed: {error}"),
                    None => {}
                }
            }
            _ => {}
        }
    }

    fn mark_sent(&mut self, id: &MessageId) {
        if let Ok(Some(message)) = self.store.message(id)
            && message.status == MessageStatus::Pending
        {
            self.update_status(id, MessageStatus::Sent);
        }
    }
}
