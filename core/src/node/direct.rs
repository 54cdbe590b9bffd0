//! Direct messages: sending through the outbox, receiving with
//! open → dedup → persist → flush → ack → event.
//!
//! `Direct` owns the outbox (`proto::outbox`, the retry machine) and the dm requests in
//! flight. It reads and writes the store itself (messages, statuses, contact requests) and
//! says what the network should do as [`DirectOut`], which the actor carries out.

use std::collections::{BTreeMap, HashMap};

use libp2p::PeerId;
use libp2p::request_response::OutboundRequestId;

use super::sessions::{Sessions, envelope_digest, keep_newer_prekey};
use super::{NodeError, NodeResult, Reply, check_text};
use crate::crypto;
use crate::event::Event;
use crate::identity::{ContactCard, Identity};
use crate::model::{
    Contact, ContactState, Hlc, HlcClock, MessageId, MessageStatus, OutboxEntry, StoredMessage,
};
use crate::proto::outbox::{Input, Outbox, Output};
use crate::store::{Store, StoreError};
use crate::wire::{self, Ack, Body, DmPayload, DmResponse, Reject};

/// Contacts whose last announced gap is remembered at most (beyond it, announcing starts
/// over).
const MAX_GAPS_TRACKED: usize = 4_096;
/// Contact requests from strangers kept at most; more are asked to retry later.
const MAX_REQUESTS: usize = 256;
/// Clock skew we accept from a sender before ignoring its timestamp for our clock.
pub(super) const MAX_SKEW_MS: u64 = 10 * 60 * 1000;

/// What a direct-message call may use: the store, who we are, the clock, the time.
pub(super) struct DirectIo<'a> {
    pub(super) store: &'a dyn Store,
    pub(super) identity: &'a Identity,
    /// Our card, carried in every payload.
    pub(super) card: &'a ContactCard,
    /// Our prekeys and pairwise sessions.
    pub(super) sessions: &'a mut Sessions,
    pub(super) clock: &'a mut HlcClock,
    pub(super) now: u64,
}

/// What `Direct` asks the actor to do.
#[derive(Debug)]
pub(super) enum DirectOut {
    /// Send these envelopes to `peer` in one request; tell [`Direct::sent`] its id.
    Transmit {
        peer: PeerId,
        envelopes: Vec<Vec<u8>>,
        ids: Vec<MessageId>,
    },
    /// The outbox must reach this contact: dial it, and meanwhile leave its messages at
    /// its mailboxes.
    Reach(String),
    /// A receipt for `to` (mail of theirs we fetched): directly if connected, else
    /// through the relays of `card`.
    Receipt {
        to: PeerId,
        card: ContactCard,
        envelope: Vec<u8>,
    },
    /// A group invite from contact `from`.
    Invite { from: String, items: Vec<Vec<u8>> },
    /// `peer` handed us a bad envelope.
    Strike(PeerId),
    /// Announce to subscribers (the store already holds what it reports).
    Emit(Event),
}

/// A send that is written to the store but not yet flushed.
pub(super) struct PreparedSend {
    id: MessageId,
    entry: OutboxEntry,
}

/// The outbox and the requests in flight.
pub(super) struct Direct {
    outbox: Outbox,
    /// Outstanding dm requests: which messages each carries, to whom.
    in_flight: HashMap<OutboundRequestId, (PeerId, Vec<MessageId>)>,
    /// How long a message waits for delivery.
    ttl_ms: u64,
    /// Each contact's gap as last announced (`messages_missing`), and as seen in the batch
    /// being received.
    gaps: HashMap<String, usize>,
    batch_gaps: BTreeMap<String, usize>,
}

impl Direct {
    /// An empty outbox (`seed` jitters its backoff; it need not be secret).
    pub(super) fn new(ttl_ms: u64, seed: u64) -> Self {
        Self {
            outbox: Outbox::new(seed),
            in_flight: HashMap::new(),
            ttl_ms,
            gaps: HashMap::new(),
            batch_gaps: BTreeMap::new(),
        }
    }

    /// The outbox, read-only (the mail client asks what is still unsent).
    pub(super) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// When the outbox must be woken for a retry or an expiry.
    pub(super) fn next_wakeup(&self) -> Option<u64> {
        self.outbox.next_wakeup()
    }

    /// Feeds the outbox and carries out what it decides.
    pub(super) fn handle(&mut self, io: &mut DirectIo<'_>, input: Input, out: &mut Vec<DirectOut>) {
        let mut queue = self.outbox.handle(input, io.now);
        while !queue.is_empty() {
            let mut next = Vec::new();
            for output in queue {
                match output {
                    Output::Transmit { peer, ids } => self.transmit(io, &peer, ids, &mut next, out),
                    Output::Dial { peer } => out.push(DirectOut::Reach(peer)),
                    Output::Delivered(id) => finish(io, &id, MessageStatus::Delivered, out),
                    Output::Refused(id) | Output::Expired(id) => {
                        finish(io, &id, MessageStatus::Failed, out);
                    }
                }
            }
            queue = next;
        }
    }

    /// Validates a send and writes the message and its outbox entry (not yet flushed).
    pub(super) fn prepare_send(
        &self,
        io: &mut DirectIo<'_>,
        peer: PeerId,
        text: &str,
    ) -> NodeResult<PreparedSend> {
        let me = io.identity.peer_id();
        if peer == me {
            return Err(NodeError::InvalidArgument(
                "you cannot send a message to yourself".into(),
            ));
        }
        let to = peer.to_string();
        check_text(text)?;
        if !self.outbox.has_room() {
            return Err(NodeError::OutboxFull(self.outbox.len()));
        }
        let id = MessageId::random()
            .map_err(|e| NodeError::Internal(format!("no randomness for a message id: {e}")))?;
        let Some(contact) = io.store.contact(&to)? else {
            return Err(NodeError::NotAContact(peer));
        };
        let hlc = io.clock.tick(io.now);
        // Sealed once, now: every copy (retries, direct, each relay) is these bytes, and
        // the session's advance is written before the message and its envelope are.
        let envelope = seal_payload(
            io,
            &contact.card,
            payload(io, &contact.card, id, hlc, Body::Text(text.to_owned())),
        )?;
        let message = StoredMessage {
            id,
            chat: to.clone(),
            from: me.to_string(),
            text: text.to_owned(),
            hlc,
            status: MessageStatus::Pending,
            outgoing: true,
        };
        let entry = OutboxEntry {
            id,
            to,
            created_ms: hlc.ms,
            expires_ms: io.now.saturating_add(self.ttl_ms),
        };
        io.store.insert_message(&message)?;
        io.store.put_sealed(&id, &envelope)?;
        io.store.outbox_put(&entry)?;
        Ok(PreparedSend { id, entry })
    }

    /// Flushes once for a batch of sends, then answers them and hands them to the outbox.
    pub(super) fn commit_sends(
        &mut self,
        io: &mut DirectIo<'_>,
        sends: Vec<(PreparedSend, Reply<MessageId>)>,
        out: &mut Vec<DirectOut>,
    ) {
        match io.store.flush() {
            Ok(()) => {
                io.sessions.flushed();
                for (prepared, reply) in sends {
                    let _ = reply.send(Ok(prepared.id));
                    self.handle(io, Input::Queued(prepared.entry), out);
                }
            }
            Err(e) => {
                tracing::error!("cannot make messages durable: {e:#}");
                for (prepared, reply) in sends {
                    // The caller is told it failed, so it must not go out later either.
                    let _ = io.store.outbox_remove(&prepared.id);
                    let _ = io.store.set_status(&prepared.id, MessageStatus::Failed);
                    let _ = reply.send(Err(NodeError::Store(StoreError::Io(e.to_string()))));
                }
            }
        }
    }

    /// Seals the messages for `peer` into one request.
    fn transmit(
        &mut self,
        io: &mut DirectIo<'_>,
        peer: &str,
        ids: Vec<MessageId>,
        next: &mut Vec<Output>,
        out: &mut Vec<DirectOut>,
    ) {
        let Ok(peer_id) = peer.parse::<PeerId>() else {
            return;
        };
        let contact = match io.store.contact(peer) {
            Ok(Some(contact)) => contact,
            _ => {
                for id in ids {
                    next.extend(self.outbox.handle(Input::Rejected(id), io.now));
                }
                return;
            }
        };
        let mut envelopes = Vec::with_capacity(ids.len());
        let mut sent = Vec::with_capacity(ids.len());
        let mut fresh = false;
        for id in ids {
            match envelope_for(io, &contact.card, &id) {
                Ok((envelope, sealed_now)) => {
                    fresh |= sealed_now;
                    envelopes.push(envelope);
                    sent.push(id);
                }
                Err(e) => {
                    tracing::warn!("cannot seal {id:?}: {e:#}");
                    next.extend(self.outbox.handle(Input::Rejected(id), io.now));
                }
            }
        }
        if sent.is_empty() {
            return;
        }
        // An envelope sealed just now (a control message) leaves only once its session's
        // advance is durable.
        if fresh {
            if let Err(e) = io.store.flush() {
                tracing::error!("cannot make sealed envelopes durable: {e:#}");
                for id in sent {
                    next.extend(self.outbox.handle(Input::Failed(id), io.now));
                }
                return;
            }
            io.sessions.flushed();
        }
        for id in &sent {
            out.extend(update_status(io.store, id, MessageStatus::Sent).map(DirectOut::Emit));
        }
        out.push(DirectOut::Transmit {
            peer: peer_id,
            envelopes,
            ids: sent,
        });
    }

    /// The request carrying `ids` to `peer` is on its way as `request`.
    pub(super) fn sent(&mut self, request: OutboundRequestId, peer: PeerId, ids: Vec<MessageId>) {
        self.in_flight.insert(request, (peer, ids));
    }

    /// `peer` answered request `request`: one ack per envelope.
    pub(super) fn on_response(
        &mut self,
        io: &mut DirectIo<'_>,
        peer: PeerId,
        request: OutboundRequestId,
        response: DmResponse,
        out: &mut Vec<DirectOut>,
    ) {
        let Some((to, ids)) = self.in_flight.remove(&request) else {
            return;
        };
        if to != peer {
            return;
        }
        for (i, id) in ids.into_iter().enumerate() {
            let input = match response.acks.get(i) {
                Some(Ack::Stored(acked)) if *acked == id => Input::Acked(id),
                Some(Ack::Rejected(reason)) => {
                    tracing::warn!(%peer, ?reason, "message {id:?} refused by the recipient");
                    Input::Rejected(id)
                }
                _ => Input::Failed(id),
            };
            self.handle(io, input, out);
        }
    }

    /// Request `request` failed (timeout, closed connection): its messages are retried.
    pub(super) fn on_failure(
        &mut self,
        io: &mut DirectIo<'_>,
        request: OutboundRequestId,
        out: &mut Vec<DirectOut>,
    ) {
        if let Some((_, ids)) = self.in_flight.remove(&request) {
            for id in ids {
                self.handle(io, Input::Failed(id), out);
            }
        }
    }

    /// Opens, checks, dedups and stores each envelope, flushes, then emits the events; one
    /// ack per envelope. `sender` is the peer that handed them over directly, struck for bad
    /// ones (`None` for mail fetched from a relay, which did not write it).
    pub(super) fn store_envelopes(
        &mut self,
        io: &mut DirectIo<'_>,
        sender: Option<PeerId>,
        envelopes: &[Vec<u8>],
        out: &mut Vec<DirectOut>,
    ) -> Vec<Ack> {
        let mut acks = Vec::with_capacity(envelopes.len());
        let mut new_messages = Vec::new();
        let mut new_requests = Vec::new();
        // Mail fetched from a relay is acknowledged to its author with a receipt.
        let mut receipts: BTreeMap<String, Vec<MessageId>> = BTreeMap::new();
        for envelope in envelopes {
            let ack = match self.receive_one(io, envelope, out) {
                Ok(Received::New(message, request, in_session)) => {
                    let id = message.id;
                    // Mail from a relay is acknowledged to its author with a receipt; so is
                    // every session message, because our answer turns the ratchet (what
                    // heals a session after a compromise).
                    if sender.is_none() || in_session {
                        receipts.entry(message.from.clone()).or_default().push(id);
                    }
                    new_messages.push(message);
                    if let Some(r) = request {
                        new_requests.push(r);
                    }
                    Ack::Stored(id)
                }
                Ok(Received::Duplicate { id, from }) => {
                    if sender.is_none()
                        && let Some(from) = from
                    {
                        receipts.entry(from).or_default().push(id);
                    }
                    Ack::Stored(id)
                }
                Ok(Received::Receipt(id)) => Ack::Stored(id),
                Ok(Received::Busy) => Ack::Retry,
                Err(reason) => {
                    if let Some(peer) = sender {
                        out.push(DirectOut::Strike(peer));
                    }
                    Ack::Rejected(reason)
                }
            };
            acks.push(ack);
        }
        // Receipts are sealed before the flush, so their sessions' advance is durable
        // before they leave.
        let mut receipt_outs = Vec::new();
        for (to, ids) in receipts {
            receipt(io, &to, &ids, &mut receipt_outs);
        }
        let stored = acks.iter().any(|a| matches!(a, Ack::Stored(_)));
        if stored && let Err(e) = io.store.flush() {
            tracing::error!("cannot make received messages durable: {e:#}");
            return acks
                .into_iter()
                .map(|a| match a {
                    Ack::Stored(_) => Ack::Retry,
                    other => other,
                })
                .collect();
        }
        out.extend(receipt_outs);
        if stored {
            io.sessions.flushed();
        }
        for (chat, missing) in std::mem::take(&mut self.batch_gaps) {
            let before = self.gaps.get(&chat).copied().unwrap_or(0);
            if missing != before {
                if self.gaps.len() >= MAX_GAPS_TRACKED {
                    self.gaps.clear();
                }
                self.gaps.insert(chat.clone(), missing);
                out.push(DirectOut::Emit(Event::MessagesMissing { chat, missing }));
            }
        }
        for (peer_id, name) in new_requests {
            out.push(DirectOut::Emit(Event::ContactRequest { peer_id, name }));
        }
        for message in new_messages {
            out.push(DirectOut::Emit(Event::MessageReceived {
                chat: message.chat.clone(),
                message,
            }));
        }
        acks
    }

    fn receive_one(
        &mut self,
        io: &mut DirectIo<'_>,
        envelope: &[u8],
        out: &mut Vec<DirectOut>,
    ) -> Result<Received, Reject> {
        // Copies (direct and from several relays, or a retry) are the same bytes: known
        // before opening, so a used key is never asked to open again.
        let digest = envelope_digest(envelope);
        match io.store.seen(&digest) {
            Ok(Some(id)) => {
                let from = match io.store.message(&id) {
                    Ok(Some(m)) if !m.outgoing => Some(m.from),
                    _ => None,
                };
                return Ok(Received::Duplicate { id, from });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("store read failed: {e:#}");
                return Ok(Received::Busy);
            }
        }
        let (payload, commit) = if crypto::envelope_version(envelope) == Some(crypto::ENVELOPE_V2) {
            let opened = io.sessions.open(io.store, io.identity, envelope)?;
            if let Ok(peer) = opened.payload.sender.peer_id() {
                if let Some(prekey) = &opened.prekey
                    && let Err(e) = keep_newer_prekey(io.store, &peer, prekey)
                {
                    tracing::warn!("cannot keep the prekey of {peer}: {e:#}");
                }
                self.batch_gaps.insert(peer.to_string(), opened.missing);
            }
            (opened.payload, Some(opened.commit))
        } else {
            let opened = crypto::open(io.identity.msg_secret(), envelope)
                .map_err(|_| Reject::Undecryptable)?;
            let payload = DmPayload::decode(&opened.plaintext).map_err(|_| Reject::Malformed)?;
            if payload.sender.msg_key != opened.sender_msg_key {
                return Err(Reject::Forged);
            }
            // A peer that has written to us in a session does not go back to version 1:
            // such an envelope is a downgrade (or a forgery with our own key) and refused.
            if io
                .sessions
                .heard_in_session(io.store, &payload.sender.identity)
            {
                return Err(Reject::Forged);
            }
            (payload, None)
        };
        if payload.recipient != io.identity.public_key() {
            return Err(Reject::Forged);
        }
        let in_session = commit.is_some();
        let received = self.take_payload(io, payload, in_session, out)?;
        if let Some(id) = received.id() {
            if let Err(e) = io.store.put_seen(&digest, &id, io.now) {
                tracing::warn!("cannot remember a received envelope: {e:#}");
            }
            if let Some(commit) = commit
                && let Err(e) = io.sessions.commit(io.store, commit)
            {
                tracing::warn!("cannot save a session: {e:#}");
            }
        }
        Ok(received)
    }

    /// Applies an opened payload: a receipt, an invite, or a text to store.
    fn take_payload(
        &mut self,
        io: &mut DirectIo<'_>,
        payload: DmPayload,
        in_session: bool,
        out: &mut Vec<DirectOut>,
    ) -> Result<Received, Reject> {
        let sender = payload.sender.peer_id().map_err(|_| Reject::Forged)?;
        let sender_text = sender.to_string();
        match payload.body {
            Body::Receipt(ids) => {
                self.take_receipt(io, &sender_text, &ids, out);
                return Ok(Received::Receipt(payload.id));
            }
            Body::GroupInvite(items) => {
                out.push(DirectOut::Invite {
                    from: sender_text,
                    items,
                });
                return Ok(Received::Receipt(payload.id));
            }
            Body::Text(_) => {}
        }
        let duplicate = |id| Received::Duplicate {
            id,
            from: Some(sender_text.clone()),
        };
        match io.store.message(&payload.id) {
            Ok(Some(_)) => return Ok(duplicate(payload.id)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("store read failed: {e:#}");
                return Ok(Received::Busy);
            }
        }
        let mut request = None;
        match io.store.contact(&sender_text) {
            Ok(Some(contact)) if contact.state == ContactState::Refused => {
                // The user refused this person: acknowledge (so they stop retrying) and drop.
                return Ok(duplicate(payload.id));
            }
            Ok(Some(mut contact)) => {
                if payload.sender.issued_ms > contact.card.issued_ms {
                    contact.card = payload.sender.clone();
                    if let Err(e) = io.store.put_contact(&contact) {
                        tracing::warn!("cannot update card of {sender}: {e:#}");
                    }
                }
            }
            Ok(None) => {
                let requests = io
                    .store
                    .contacts()
                    .map(|c| {
                        c.iter()
                            .filter(|c| c.state == ContactState::Request)
                            .count()
                    })
                    .unwrap_or(usize::MAX);
                if requests >= MAX_REQUESTS {
                    return Ok(Received::Busy);
                }
                let contact = Contact {
                    peer_id: sender_text.clone(),
                    card: payload.sender.clone(),
                    alias: None,
                    verified: false,
                    state: ContactState::Request,
                };
                if io.store.put_contact(&contact).is_err() {
                    return Ok(Received::Busy);
                }
                request = Some((sender_text.clone(), payload.sender.name.clone()));
            }
            Err(_) => return Ok(Received::Busy),
        }
        let Body::Text(text) = payload.body else {
            return Err(Reject::Malformed);
        };
        let message = StoredMessage {
            id: payload.id,
            chat: sender_text.clone(),
            from: sender_text.clone(),
            text,
            hlc: payload.hlc,
            status: MessageStatus::Delivered,
            outgoing: false,
        };
        match io.store.insert_message(&message) {
            Ok(true) => {
                io.clock.observe(payload.hlc, io.now, MAX_SKEW_MS);
                Ok(Received::New(message, request, in_session))
            }
            Ok(false) => Ok(duplicate(message.id)),
            Err(e) => {
                tracing::error!("cannot store a received message: {e:#}");
                Ok(Received::Busy)
            }
        }
    }

    /// `from` says it holds these messages: those we sent to `from` are delivered.
    fn take_receipt(
        &mut self,
        io: &mut DirectIo<'_>,
        from: &str,
        ids: &[MessageId],
        out: &mut Vec<DirectOut>,
    ) {
        for id in ids {
            let ours = matches!(
                io.store.message(id),
                Ok(Some(m)) if m.outgoing && m.chat == from
            );
            if ours {
                self.handle(io, Input::Acked(*id), out);
            }
        }
    }
}

/// A message left the outbox (delivered, refused or expired).
fn finish(io: &mut DirectIo<'_>, id: &MessageId, status: MessageStatus, out: &mut Vec<DirectOut>) {
    if let Err(e) = io.store.outbox_remove(id) {
        tracing::warn!("cannot remove {id:?} from the outbox: {e:#}");
    }
    if let Err(e) = io.store.remove_control(id) {
        tracing::warn!("cannot forget control message {id}: {e:#}");
    }
    if let Err(e) = io.store.remove_sealed(id) {
        tracing::warn!("cannot forget the envelope of {id}: {e:#}");
    }
    out.extend(update_status(io.store, id, status).map(DirectOut::Emit));
}

/// Sets a message's status; the event to announce, if the message exists.
pub(super) fn update_status(
    store: &dyn Store,
    id: &MessageId,
    status: MessageStatus,
) -> Option<Event> {
    match store.set_status(id, status) {
        Ok(Some(message)) => Some(Event::MessageStatus {
            id: id.to_hex(),
            chat: message.chat,
            status,
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("cannot update status of {id:?}: {e:#}");
            None
        }
    }
}

/// The envelope of our message `id` (a stored chat text, or a control message such as an
/// invite) for the owner of `card`: the one it was sealed into, or sealed now and kept.
/// `true` if sealed now: the caller flushes before the envelope leaves.
pub(super) fn envelope_for(
    io: &mut DirectIo<'_>,
    card: &ContactCard,
    id: &MessageId,
) -> NodeResult<(Vec<u8>, bool)> {
    if let Some(envelope) = io.store.sealed(id)? {
        return Ok((envelope, false));
    }
    let (body, hlc) = match io.store.message(id)? {
        Some(message) => (Body::Text(message.text), message.hlc),
        None => {
            let body = io
                .store
                .control(id)
                .ok()
                .flatten()
                .ok_or_else(|| NodeError::NotFound(format!("message {id} is gone")))?;
            (
                body,
                Hlc {
                    ms: io.now,
                    counter: 0,
                },
            )
        }
    };
    let sealed = payload(io, card, *id, hlc, body);
    let envelope = seal_payload(io, card, sealed)?;
    io.store.put_sealed(id, &envelope)?;
    Ok((envelope, true))
}

/// A payload from us to the owner of `card`.
fn payload(
    io: &DirectIo<'_>,
    card: &ContactCard,
    id: MessageId,
    hlc: Hlc,
    body: Body,
) -> DmPayload {
    DmPayload {
        version: wire::PAYLOAD_VERSION,
        id,
        hlc,
        sender: io.card.clone(),
        recipient: card.identity,
        body,
    }
}

/// Seals `payload` for the owner of `card`: in our session with them (a version-2
/// envelope) when we hold their prekey, else as version 1 (a contact whose build predates
/// sessions). The session's advance is written to the store, not flushed.
fn seal_payload(
    io: &mut DirectIo<'_>,
    card: &ContactCard,
    payload: DmPayload,
) -> NodeResult<Vec<u8>> {
    let peer = card
        .peer_id()
        .map_err(|e| NodeError::Crypto(e.to_string()))?;
    match io.store.peer_prekey(&peer)? {
        Some(prekey) => io
            .sessions
            .seal(io.store, io.identity, io.card, card, &prekey, payload),
        None => crypto::seal(io.identity.msg_secret(), &card.msg_key, &payload.encode())
            .map_err(|e| NodeError::Crypto(format!("sealing message {}: {e}", payload.id))),
    }
}

/// Tells `to` that we hold `ids` (mail of theirs we fetched from a relay, or messages of a
/// session). Best effort: if a receipt is lost, the author's retry of the message gets a
/// fresh ack.
fn receipt(io: &mut DirectIo<'_>, to: &str, ids: &[MessageId], out: &mut Vec<DirectOut>) {
    let (Ok(peer), Ok(Some(contact))) = (to.parse::<PeerId>(), io.store.contact(to)) else {
        return;
    };
    for chunk in ids.chunks(wire::MAX_RECEIPT_IDS) {
        let Ok(id) = MessageId::random() else {
            return;
        };
        let hlc = io.clock.tick(io.now);
        let body = payload(io, &contact.card, id, hlc, Body::Receipt(chunk.to_vec()));
        match seal_payload(io, &contact.card, body) {
            Ok(envelope) => out.push(DirectOut::Receipt {
                to: peer,
                card: contact.card.clone(),
                envelope,
            }),
            Err(e) => {
                tracing::warn!("cannot seal a receipt for {to}: {e:#}");
                return;
            }
        }
    }
}

/// The outcome of receiving one envelope that opened correctly.
enum Received {
    /// Stored now; with a contact request `(peer_id, name)` if the sender was a stranger,
    /// and whether it came in a session.
    New(StoredMessage, Option<(String, String)>, bool),
    /// Already held: ack again, store and show nothing.
    Duplicate {
        /// The message.
        id: MessageId,
        /// Its author's peer id, if it is a chat message of theirs we hold.
        from: Option<String>,
    },
    /// A receipt for our own messages, or a group invite, applied; nothing to store.
    Receipt(MessageId),
    /// Could not store it now; ask the sender to retry.
    Busy,
}

impl Received {
    /// The message taken (stored, already held, or applied), unless it must come again.
    fn id(&self) -> Option<MessageId> {
        match self {
            Received::New(message, ..) => Some(message.id),
            Received::Duplicate { id, .. } | Received::Receipt(id) => Some(*id),
            Received::Busy => None,
        }
    }
}
