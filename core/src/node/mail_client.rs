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
//!
//! [`MailClient`] decides; the actor carries out the [`MailOut`]s it returns (requests on
//! the main swarm and the courier, sealing, storing) and hands request ids back.

use std::collections::{HashMap, HashSet, VecDeque};

use libp2p::request_response::{self, OutboundRequestId};
use libp2p::{Multiaddr, PeerId};

use super::{MailboxState, RelayInfo};
use crate::model::MessageId;
use crate::net::MailboxFrame;
use crate::proto::outbox::Outbox;
use crate::wire::{Ack, MAX_MAIL_PAGE, MailboxRequest, MailboxResponse};

/// Relays listed in a contact card at most.
pub(super) const MAX_CARD_RELAYS: usize = 4;
/// Deposits for one contact awaiting the relay's answer at once; each `Stored` lets the
/// next one go, so a relay's stream limit is never hit.
const MAX_DEPOSITS_IN_FLIGHT: usize = 16;

/// A mailbox request of ours on the main swarm, awaiting its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// What the mail client asks the actor to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum MailOut {
    /// Send `request` to `relay` on the main swarm, then hand the request id and `op`
    /// back with [`MailClient::asked`].
    Ask {
        relay: PeerId,
        request: MailboxRequest,
        op: MailOp,
    },
    /// Seal each of `ids` for contact `to` and deposit it at each of `relays` through the
    /// courier, handing each request id back with [`MailClient::message_deposit_sent`].
    Deposit {
        to: String,
        ids: Vec<MessageId>,
        relays: Vec<PeerId>,
    },
    /// Store fetched mail like directly received mail, then report the acks with
    /// [`MailClient::page_stored`].
    StoreFetched {
        relay: PeerId,
        seqs: Vec<u64>,
        envelopes: Vec<Vec<u8>>,
        more: bool,
    },
    /// A relay holds this message of ours: it is `sent`, if still pending in the outbox.
    MarkSent(MessageId),
    /// Deposit the next messages waiting for this contact (it is still away).
    DepositNext(String),
}

/// Client-side mailbox state.
#[derive(Debug, Default)]
pub(super) struct MailClient {
    /// Our relays, from the start flags: (peer id, address).
    relays: Vec<(PeerId, Multiaddr)>,
    /// Our fetches and acks on the main swarm awaiting their answer.
    ops: HashMap<OutboundRequestId, MailOp>,
    /// Relays we are fetching from right now.
    fetching: HashSet<PeerId>,
    /// Deposits on the courier awaiting the relay's answer.
    deposits: HashMap<OutboundRequestId, Deposit>,
    /// Messages deposited this run (so each dial does not deposit them again).
    deposited: HashSet<MessageId>,
    /// Messages waiting to be deposited, per contact, oldest first.
    queued: HashMap<String, VecDeque<MessageId>>,
    /// Outcome of the last fetch per relay.
    fetched: HashMap<PeerId, bool>,
}

impl MailClient {
    /// Client state for these relays.
    pub(super) fn new(relays: Vec<(PeerId, Multiaddr)>) -> Self {
        Self {
            relays,
            ..Self::default()
        }
    }

    /// Our relays: (peer id, address).
    pub(super) fn relays(&self) -> &[(PeerId, Multiaddr)] {
        &self.relays
    }

    /// Whether `peer` is one of our relays.
    pub(super) fn is_relay(&self, peer: &PeerId) -> bool {
        self.relays.iter().any(|(id, _)| id == peer)
    }

    /// `relays`: each of our relays with its state; `connected` and `reserved` say
    /// whether we hold a connection to it and whether it holds a reservation for us.
    pub(super) fn relay_info(
        &self,
        connected: impl Fn(&PeerId) -> bool,
        reserved: impl Fn(&PeerId) -> bool,
    ) -> Vec<RelayInfo> {
        self.relays
            .iter()
            .map(|(peer, addr)| RelayInfo {
                peer_id: peer.to_string(),
                addr: addr.to_string(),
                connected: connected(peer),
                reserved: reserved(peer),
                mailbox: match self.fetched.get(peer) {
                    Some(true) => MailboxState::Ok,
                    Some(false) => MailboxState::Failed,
                    None => MailboxState::Unknown,
                },
            })
            .collect()
    }

    /// Deposits still waiting for a relay's answer (shutdown waits for them).
    pub(super) fn deposits_in_flight(&self) -> usize {
        self.deposits.len()
    }

    /// A connection to `peer` was identified; if it is one of our relays and serves a
    /// mailbox, fetch our mail.
    pub(super) fn on_identified(&mut self, peer: PeerId, serves_mailbox: bool) -> Vec<MailOut> {
        if !serves_mailbox || !self.is_relay(&peer) || !self.fetching.insert(peer) {
            return Vec::new();
        }
        vec![ask(
            peer,
            MailboxRequest::Fetch { after: None },
            MailOp::Fetch(peer),
        )]
    }

    /// The actor sent the request of a [`MailOut::Ask`] as `request`.
    pub(super) fn asked(&mut self, request: OutboundRequestId, op: MailOp) {
        self.ops.insert(request, op);
    }

    /// An answer to one of our fetches or acks; `None` if the request failed.
    pub(super) fn on_answer(
        &mut self,
        request: OutboundRequestId,
        response: Option<MailboxResponse>,
    ) -> Vec<MailOut> {
        let Some(op) = self.ops.remove(&request) else {
            return Vec::new();
        };
        match (op, response) {
            (MailOp::Fetch(relay), Some(MailboxResponse::Page { mail, more })) => {
                self.fetched.insert(relay, true);
                let (seqs, envelopes) = mail.into_iter().unzip();
                vec![MailOut::StoreFetched {
                    relay,
                    seqs,
                    envelopes,
                    more,
                }]
            }
            (
                MailOp::Ack {
                    relay,
                    next: Some(after),
                },
                Some(MailboxResponse::Acked),
            ) => vec![ask(
                relay,
                MailboxRequest::Fetch { after: Some(after) },
                MailOp::Fetch(relay),
            )],
            (MailOp::Fetch(relay) | MailOp::Ack { relay, .. }, other) => {
                if let Some(MailboxResponse::Refused(why)) = &other {
                    tracing::warn!(%relay, "mailbox refused: {why}");
                }
                if !matches!(other, Some(MailboxResponse::Acked)) {
                    self.fetched.insert(relay, false);
                }
                self.fetching.remove(&relay);
                Vec::new()
            }
        }
    }

    /// The page fetched from `relay` (`seqs`) was stored with these `acks`, one per
    /// envelope: ack what is stored (or can never be opened) and keep what must be
    /// retried; fetch the next page after the ack if there is `more` and all were taken.
    pub(super) fn page_stored(
        &mut self,
        relay: PeerId,
        seqs: &[u64],
        acks: &[Ack],
        more: bool,
    ) -> Vec<MailOut> {
        let done: Vec<u64> = seqs
            .iter()
            .zip(acks)
            .filter(|(_, ack)| !matches!(ack, Ack::Retry))
            .map(|(seq, _)| *seq)
            .take(MAX_MAIL_PAGE)
            .collect();
        let all_done = done.len() == seqs.len();
        let next = (more && all_done).then(|| seqs.last().copied()).flatten();
        if done.is_empty() {
            self.fetching.remove(&relay);
            return Vec::new();
        }
        tracing::info!(%relay, fetched = done.len(), "mail fetched");
        vec![ask(
            relay,
            MailboxRequest::Ack { seqs: done },
            MailOp::Ack { relay, next },
        )]
    }

    /// Contact `to` is unreachable: its next unsent messages (from `outbox`) to deposit at
    /// `relays`, the distinct relays its card lists. At most [`MAX_DEPOSITS_IN_FLIGHT`] per
    /// contact await an answer at once.
    pub(super) fn deposit_for(
        &mut self,
        to: &str,
        relays: &[PeerId],
        outbox: &Outbox,
    ) -> Vec<MailOut> {
        if relays.is_empty() {
            return Vec::new();
        }
        let in_flight: HashSet<MessageId> = self
            .deposits
            .values()
            .filter_map(|d| match d {
                Deposit::Message { id, to: of } if of == to => Some(*id),
                _ => None,
            })
            .collect();
        let budget = MAX_DEPOSITS_IN_FLIGHT.saturating_sub(in_flight.len());
        // The outbox is scanned only when this contact's queue has run dry, not on every
        // `Stored`: a long queue would otherwise cost O(n) per deposit.
        let empty = self.queued.get(to).is_none_or(VecDeque::is_empty);
        if empty {
            let unsent: VecDeque<MessageId> = outbox
                .unsent_for(to)
                .into_iter()
                .filter(|id| !self.deposited.contains(id))
                .collect();
            self.queued.insert(to.to_owned(), unsent);
        }
        let mut ids = Vec::with_capacity(budget);
        if let Some(queue) = self.queued.get_mut(to) {
            while ids.len() < budget {
                let Some(id) = queue.pop_front() else { break };
                // Delivered meanwhile, or deposited by an earlier round.
                if outbox.contains(&id) && !self.deposited.contains(&id) {
                    ids.push(id);
                }
            }
            if queue.is_empty() {
                self.queued.remove(to);
            }
        }
        if ids.is_empty() {
            return Vec::new();
        }
        vec![MailOut::Deposit {
            to: to.to_owned(),
            ids,
            relays: relays.to_vec(),
        }]
    }

    /// The actor deposited message `id` for `to` at one relay as `request`.
    pub(super) fn message_deposit_sent(
        &mut self,
        request: OutboundRequestId,
        id: MessageId,
        to: &str,
    ) {
        self.deposits.insert(
            request,
            Deposit::Message {
                id,
                to: to.to_owned(),
            },
        );
        self.deposited.insert(id);
    }

    /// The actor deposited a receipt at one relay as `request`.
    pub(super) fn receipt_deposit_sent(&mut self, request: OutboundRequestId) {
        self.deposits.insert(request, Deposit::Receipt);
    }

    /// An event of the courier; `online` says whether we hold a connection to a peer.
    pub(super) fn on_courier_event(
        &mut self,
        event: request_response::Event<MailboxFrame, MailboxResponse>,
        online: impl Fn(&PeerId) -> bool,
    ) -> Vec<MailOut> {
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
                let Some(deposit) = self.deposits.remove(&request_id) else {
                    return Vec::new();
                };
                let Deposit::Message { id, to } = deposit else {
                    if !matches!(response, MailboxResponse::Stored) {
                        tracing::warn!(%peer, "receipt refused: {response:?}");
                    }
                    return Vec::new();
                };
                match response {
                    MailboxResponse::Stored => {
                        let mut outs = vec![MailOut::MarkSent(id)];
                        // Next in line, while the contact is still away.
                        let away = to.parse().is_ok_and(|p: PeerId| !online(&p));
                        if away {
                            outs.push(MailOut::DepositNext(to));
                        }
                        outs
                    }
                    other => {
                        tracing::warn!(%peer, "deposit refused: {other:?}");
                        self.deposited.remove(&id);
                        Vec::new()
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                // Retried at the next dial of the contact (its backoff paces it).
                match self.deposits.remove(&request_id) {
                    Some(Deposit::Message { id, .. }) => {
                        tracing::debug!("deposit failed: {error}");
                        self.deposited.remove(&id);
                    }
                    Some(Deposit::Receipt) => tracing::debug!("receipt deposit failed: {error}"),
                    None => {}
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

fn ask(relay: PeerId, request: MailboxRequest, op: MailOp) -> MailOut {
    MailOut::Ask { relay, request, op }
}

#[cfg(test)]
mod tests {
    use libp2p::request_response::{Config, OutboundFailure, ProtocolSupport};
    use libp2p::swarm::ConnectionId;

    use super::*;
    use crate::model::OutboxEntry;
    use crate::net::{MAILBOX_PROTOCOL, MailboxCodec};
    use crate::proto::outbox::Input;

    /// Sends requests like the actor does, on a behaviour that is never polled: it only
    /// hands out request ids.
    struct Net(request_response::Behaviour<MailboxCodec>);

    impl Net {
        fn new() -> Self {
            Self(request_response::Behaviour::new(
                [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                Config::default(),
            ))
        }

        /// Carries out asks and deposits; the deposits made, one per message and relay.
        fn apply(
            &mut self,
            client: &mut MailClient,
            outs: Vec<MailOut>,
        ) -> Vec<(OutboundRequestId, MessageId)> {
            let mut deposits = Vec::new();
            for out in outs {
                match out {
                    MailOut::Ask { relay, request, op } => {
                        let id = self.0.send_request(&relay, Ok(request));
                        client.asked(id, op);
                    }
                    MailOut::Deposit { to, ids, relays } => {
                        for id in ids {
                            for relay in &relays {
                                let request = MailboxRequest::Deposit {
                                    recipient: to.clone(),
                                    envelope: id.0.to_vec(),
                                };
                                let sent = self.0.send_request(relay, Ok(request));
                                client.message_deposit_sent(sent, id, &to);
                                deposits.push((sent, id));
                            }
                        }
                    }
                    other => panic!("not a network effect: {other:?}"),
                }
            }
            deposits
        }

        /// The one request the last `apply` asked for.
        fn ask(&mut self, client: &mut MailClient, outs: Vec<MailOut>) -> OutboundRequestId {
            assert!(matches!(outs.as_slice(), [MailOut::Ask { .. }]), "{outs:?}");
            self.apply(client, outs);
            let asked: Vec<OutboundRequestId> = client.ops.keys().copied().collect();
            assert_eq!(asked.len(), 1);
            asked[0]
        }
    }

    fn message_id(n: u8) -> MessageId {
        MessageId([n; 32])
    }

    /// An outbox holding `n` messages for `to`, oldest first.
    fn outbox_for(to: &str, n: u8) -> (Outbox, Vec<MessageId>) {
        let mut outbox = Outbox::new(7);
        let ids: Vec<MessageId> = (0..n).map(message_id).collect();
        for (i, id) in ids.iter().enumerate() {
            let entry = OutboxEntry {
                id: *id,
                to: to.to_owned(),
                created_ms: 1_000 + i as u64,
                expires_ms: u64::MAX,
            };
            outbox.handle(Input::Queued(entry), 1_000);
        }
        (outbox, ids)
    }

    fn answer(
        relay: PeerId,
        request_id: OutboundRequestId,
        response: MailboxResponse,
    ) -> request_response::Event<MailboxFrame, MailboxResponse> {
        request_response::Event::Message {
            peer: relay,
            connection_id: ConnectionId::new_unchecked(0),
            message: request_response::Message::Response {
                request_id,
                response,
            },
        }
    }

    fn failure(
        relay: PeerId,
        request_id: OutboundRequestId,
    ) -> request_response::Event<MailboxFrame, MailboxResponse> {
        request_response::Event::OutboundFailure {
            peer: relay,
            connection_id: ConnectionId::new_unchecked(0),
            request_id,
            error: OutboundFailure::DialFailure,
        }
    }

    fn away(_: &PeerId) -> bool {
        false
    }

    #[test]
    fn sixteen_deposits_per_contact_in_flight_and_each_stored_releases_the_next() {
        let relay = PeerId::random();
        let bob = PeerId::random().to_string();
        let (outbox, ids) = outbox_for(&bob, 40);
        let mut alice = MailClient::new(Vec::new());
        let mut net = Net::new();

        let outs = alice.deposit_for(&bob, &[relay], &outbox);
        let first = net.apply(&mut alice, outs);
        let deposited: Vec<MessageId> = first.iter().map(|(_, id)| *id).collect();
        assert_eq!(deposited, ids[..MAX_DEPOSITS_IN_FLIGHT]);
        assert_eq!(alice.deposits_in_flight(), MAX_DEPOSITS_IN_FLIGHT);
        // Another dial of bob sends nothing more while sixteen are in flight.
        assert_eq!(alice.deposit_for(&bob, &[relay], &outbox), Vec::new());

        let outs = alice.on_courier_event(answer(relay, first[0].0, MailboxResponse::Stored), away);
        assert_eq!(
            outs,
            vec![MailOut::MarkSent(ids[0]), MailOut::DepositNext(bob.clone())]
        );
        let outs = alice.deposit_for(&bob, &[relay], &outbox);
        let next = net.apply(&mut alice, outs);
        assert_eq!(
            next.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            [ids[16]]
        );

        // Once bob is back, a stored deposit only marks its message sent.
        let outs =
            alice.on_courier_event(answer(relay, first[1].0, MailboxResponse::Stored), |_| true);
        assert_eq!(outs, vec![MailOut::MarkSent(ids[1])]);
    }

    #[test]
    fn a_failed_or_refused_deposit_goes_again_at_the_next_dial() {
        let relay = PeerId::random();
        let bob = PeerId::random().to_string();
        let (outbox, ids) = outbox_for(&bob, 3);
        let mut alice = MailClient::new(Vec::new());
        let mut net = Net::new();
        let outs = alice.deposit_for(&bob, &[relay], &outbox);
        let first = net.apply(&mut alice, outs);
        assert_eq!(first.len(), 3);

        assert_eq!(
            alice.on_courier_event(failure(relay, first[0].0), away),
            Vec::new()
        );
        let refused = MailboxResponse::Refused("full".into());
        assert_eq!(
            alice.on_courier_event(answer(relay, first[1].0, refused), away),
            Vec::new()
        );
        assert_eq!(alice.deposits_in_flight(), 1);

        assert_eq!(
            alice.deposit_for(&bob, &[relay], &outbox),
            vec![MailOut::Deposit {
                to: bob.clone(),
                ids: vec![ids[0], ids[1]],
                relays: vec![relay],
            }]
        );
    }

    #[test]
    fn each_message_goes_to_every_relay_of_the_card_once() {
        let relays = [PeerId::random(), PeerId::random()];
        let bob = PeerId::random().to_string();
        let (outbox, ids) = outbox_for(&bob, 2);
        let mut alice = MailClient::new(Vec::new());
        let mut net = Net::new();
        assert_eq!(alice.deposit_for(&bob, &[], &outbox), Vec::new());
        let outs = alice.deposit_for(&bob, &relays, &outbox);
        let sent: Vec<MessageId> = net
            .apply(&mut alice, outs)
            .iter()
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(sent, [ids[0], ids[0], ids[1], ids[1]]);
        // Deposited this run: a later dial does not deposit them again.
        assert_eq!(alice.deposit_for(&bob, &relays, &outbox), Vec::new());
    }

    #[test]
    fn a_fetched_page_is_acked_and_the_next_one_fetched_when_there_is_more() {
        let relay = PeerId::random();
        let addr: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}")
            .parse()
            .unwrap();
        let mut alice = MailClient::new(vec![(relay, addr)]);
        let mut net = Net::new();
        assert_eq!(alice.on_identified(PeerId::random(), true), Vec::new());
        assert_eq!(alice.on_identified(relay, false), Vec::new());

        let outs = alice.on_identified(relay, true);
        assert_eq!(
            outs,
            vec![MailOut::Ask {
                relay,
                request: MailboxRequest::Fetch { after: None },
                op: MailOp::Fetch(relay),
            }]
        );
        let fetch = net.ask(&mut alice, outs);
        // A second identify while fetching does not start another fetch.
        assert_eq!(alice.on_identified(relay, true), Vec::new());

        let page = MailboxResponse::Page {
            mail: vec![(1, b"one".to_vec()), (2, b"two".to_vec())],
            more: true,
        };
        assert_eq!(
            alice.on_answer(fetch, Some(page)),
            vec![MailOut::StoreFetched {
                relay,
                seqs: vec![1, 2],
                envelopes: vec![b"one".to_vec(), b"two".to_vec()],
                more: true,
            }]
        );
        let acks = [Ack::Stored(message_id(1)), Ack::Stored(message_id(2))];
        let outs = alice.page_stored(relay, &[1, 2], &acks, true);
        assert_eq!(
            outs,
            vec![MailOut::Ask {
                relay,
                request: MailboxRequest::Ack { seqs: vec![1, 2] },
                op: MailOp::Ack {
                    relay,
                    next: Some(2)
                },
            }]
        );
        let ack = net.ask(&mut alice, outs);
        assert_eq!(
            alice.on_answer(ack, Some(MailboxResponse::Acked)),
            vec![MailOut::Ask {
                relay,
                request: MailboxRequest::Fetch { after: Some(2) },
                op: MailOp::Fetch(relay),
            }]
        );
        let info = alice.relay_info(|_| true, |_| false);
        assert_eq!(info[0].mailbox, MailboxState::Ok);
        assert!(info[0].connected && !info[0].reserved);
    }

    #[test]
    fn mail_to_retry_is_not_acked_and_stops_the_fetch() {
        let relay = PeerId::random();
        let addr: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}")
            .parse()
            .unwrap();
        let mut alice = MailClient::new(vec![(relay, addr)]);
        let mut net = Net::new();
        let outs = alice.on_identified(relay, true);
        let fetch = net.ask(&mut alice, outs);
        let page = MailboxResponse::Page {
            mail: vec![(1, Vec::new()), (2, Vec::new())],
            more: true,
        };
        alice.on_answer(fetch, Some(page));
        // Only what is stored is acked, and no next page follows the ack.
        let outs = alice.page_stored(
            relay,
            &[1, 2],
            &[Ack::Stored(message_id(1)), Ack::Retry],
            true,
        );
        assert_eq!(
            outs,
            vec![MailOut::Ask {
                relay,
                request: MailboxRequest::Ack { seqs: vec![1] },
                op: MailOp::Ack { relay, next: None },
            }]
        );
        let ack = net.ask(&mut alice, outs);
        assert_eq!(
            alice.on_answer(ack, Some(MailboxResponse::Acked)),
            Vec::new()
        );

        // The fetch is over: the next identify fetches again; this time it fails.
        let outs = alice.on_identified(relay, true);
        let fetch = net.ask(&mut alice, outs);
        assert_eq!(alice.on_answer(fetch, None), Vec::new());
        assert_eq!(
            alice.relay_info(|_| false, |_| false)[0].mailbox,
            MailboxState::Failed
        );
    }
}
