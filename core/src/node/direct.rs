//! Direct messages and contacts: sending through the outbox, receiving with
//! open → dedup → persist → flush → ack → event, and the contact-book queries.

use libp2p::PeerId;

use super::actor::{Actor, ttl_expiry};
use super::{ChatInfo, ChatKind, ContactInfo, MessageInfo, NodeError, NodeResult, Reply, now_ms};
use crate::crypto;
use crate::event::Event;
use crate::identity::{self, ContactCard};
use crate::model::{Contact, ContactState, MessageId, MessageStatus, OutboxEntry, StoredMessage};
use crate::proto::outbox::{self, Output};
use crate::store::Store;
use crate::wire::{self, Ack, Body, DmPayload, DmRequest, DmResponse, Reject};

/// Contact requests from strangers kept at most; more are asked to retry later.
const MAX_REQUESTS: usize = 256;

/// A send that is written to the store but not yet flushed.
pub(super) struct PreparedSend {
    id: MessageId,
    entry: OutboxEntry,
}

impl Actor {
    /// Validates a send and writes the message and its outbox entry (not yet flushed).
    pub(super) fn prepare_send(&mut self, peer: PeerId, text: &str) -> NodeResult<PreparedSend> {
        if peer == self.identity.peer_id() {
            return Err(NodeError::InvalidArgument(
                "you cannot send a message to yourself".into(),
            ));
        }
        let to = peer.to_string();
        if self.store.contact(&to)?.is_none() {
            return Err(NodeError::NotAContact(peer));
        }
        if text.trim().is_empty() {
            return Err(NodeError::InvalidArgument("the message is empty".into()));
        }
        if text.len() > wire::MAX_TEXT_BYTES {
            return Err(NodeError::InvalidArgument(format!(
                "the message is {} bytes; the limit is {} bytes",
                text.len(),
                wire::MAX_TEXT_BYTES
            )));
        }
        if !self.outbox.has_room() {
            return Err(NodeError::OutboxFull(self.outbox.len()));
        }
        let now = now_ms();
        let id = MessageId::random()
            .map_err(|e| NodeError::Internal(format!("no randomness for a message id: {e}")))?;
        let hlc = self.clock.tick(now);
        let message = StoredMessage {
            id,
            chat: to.clone(),
            from: self.identity.peer_id().to_string(),
            text: text.to_owned(),
            hlc,
            status: MessageStatus::Pending,
            outgoing: true,
        };
        let entry = OutboxEntry {
            id,
            to,
            created_ms: hlc.ms,
            expires_ms: ttl_expiry(now, self.ttl_ms),
        };
        self.store.insert_message(&message)?;
        self.store.outbox_put(&entry)?;
        Ok(PreparedSend { id, entry })
    }

    /// Flushes once for a batch of sends, then answers them and hands them to the outbox.
    pub(super) fn commit_sends(&mut self, sends: Vec<(PreparedSend, Reply<MessageId>)>) {
        match self.store.flush() {
            Ok(()) => {
                let now = now_ms();
                for (prepared, reply) in sends {
                    let _ = reply.send(Ok(prepared.id));
                    let outputs = self
                        .outbox
                        .handle(outbox::Input::Queued(prepared.entry), now);
                    self.apply_outbox(outputs);
                }
            }
            Err(e) => {
                tracing::error!("cannot make messages durable: {e:#}");
                for (prepared, reply) in sends {
                    // The caller is told it failed, so it must not go out later either.
                    let _ = self.store.outbox_remove(&prepared.id);
                    let _ = self.store.set_status(&prepared.id, MessageStatus::Failed);
                    let _ = reply.send(Err(NodeError::Store(crate::store::StoreError::Io(
                        e.to_string(),
                    ))));
                }
            }
        }
    }

    /// Carries out what the outbox decided.
    pub(super) fn apply_outbox(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Transmit { peer, ids } => self.transmit(&peer, ids),
                Output::Dial { peer } => {
                    if let Ok(peer_id) = peer.parse() {
                        self.dial_peer(peer_id);
                    }
                    // Not connected: meanwhile, leave the messages at its mailboxes.
                    self.deposit_for(&peer);
                }
                Output::Delivered(id) => self.finish_outgoing(&id, MessageStatus::Delivered),
                Output::Refused(id) | Output::Expired(id) => {
                    self.finish_outgoing(&id, MessageStatus::Failed);
                }
            }
        }
    }

    fn finish_outgoing(&mut self, id: &MessageId, status: MessageStatus) {
        if let Err(e) = self.store.outbox_remove(id) {
            tracing::warn!("cannot remove {id:?} from the outbox: {e:#}");
        }
        forget_control(self.store.as_ref(), id);
        self.update_status(id, status);
    }

    pub(super) fn update_status(&mut self, id: &MessageId, status: MessageStatus) {
        match self.store.set_status(id, status) {
            Ok(Some(message)) => self.emit(Event::MessageStatus {
                id: id.to_hex(),
                chat: message.chat,
                status,
            }),
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot update status of {id:?}: {e:#}"),
        }
    }

    /// Seals the messages for `peer` and sends them in one request.
    fn transmit(&mut self, peer: &str, ids: Vec<MessageId>) {
        let now = now_ms();
        let Ok(peer_id) = peer.parse::<PeerId>() else {
            return;
        };
        let contact = match self.store.contact(peer) {
            Ok(Some(contact)) => contact,
            _ => {
                for id in ids {
                    let outputs = self.outbox.handle(outbox::Input::Rejected(id), now);
                    self.apply_outbox(outputs);
                }
                return;
            }
        };
        let mut envelopes = Vec::with_capacity(ids.len());
        let mut sent = Vec::with_capacity(ids.len());
        for id in ids {
            match self.seal_for(&contact.card, &id) {
                Ok(envelope) => {
                    envelopes.push(envelope);
                    sent.push(id);
                }
                Err(e) => {
                    tracing::warn!("cannot seal {id:?}: {e:#}");
                    let outputs = self.outbox.handle(outbox::Input::Rejected(id), now);
                    self.apply_outbox(outputs);
                }
            }
        }
        if sent.is_empty() {
            return;
        }
        let request_id = self
            .swarm
            .behaviour_mut()
            .dm
            .send_request(&peer_id, Ok(DmRequest { envelopes }));
        for id in &sent {
            self.update_status(id, MessageStatus::Sent);
        }
        self.pending_dm.insert(request_id, (peer_id, sent));
    }

    pub(super) fn seal_for(&self, card: &ContactCard, id: &MessageId) -> NodeResult<Vec<u8>> {
        let body = outgoing_body(self.store.as_ref(), id)?;
        let hlc = match self.store.message(id)? {
            Some(message) => message.hlc,
            None => crate::model::Hlc {
                ms: now_ms(),
                counter: 0,
            },
        };
        let payload = DmPayload {
            version: wire::PAYLOAD_VERSION,
            id: *id,
            hlc,
            sender: self.card.clone(),
            recipient: card.identity,
            body,
        };
        crypto::seal(self.identity.msg_secret(), &card.msg_key, &payload.encode())
            .map_err(|e| NodeError::Crypto(format!("sealing message {id}: {e}")))
    }

    pub(super) fn on_dm_response(
        &mut self,
        peer: PeerId,
        request_id: libp2p::request_response::OutboundRequestId,
        response: DmResponse,
    ) {
        let Some((to, ids)) = self.pending_dm.remove(&request_id) else {
            return;
        };
        if to != peer {
            return;
        }
        let now = now_ms();
        for (i, id) in ids.into_iter().enumerate() {
            let input = match response.acks.get(i) {
                Some(Ack::Stored(acked)) if *acked == id => outbox::Input::Acked(id),
                Some(Ack::Rejected(reason)) => {
                    tracing::warn!(%peer, ?reason, "message {id:?} refused by the recipient");
                    outbox::Input::Rejected(id)
                }
                _ => outbox::Input::Failed(id),
            };
            let outputs = self.outbox.handle(input, now);
            self.apply_outbox(outputs);
        }
    }

    /// Opens, checks, dedups and stores each envelope; flushes before answering.
    pub(super) fn receive_envelopes(&mut self, peer: PeerId, request: DmRequest) -> DmResponse {
        DmResponse {
            acks: self.store_envelopes(Some(peer), &request.envelopes),
        }
    }

    /// Opens, checks, dedups and stores each envelope, flushes, then emits the events; one
    /// ack per envelope. `sender` is the peer that handed them over directly, struck for bad
    /// ones (`None` for mail fetched from a relay, which did not write it).
    pub(super) fn store_envelopes(
        &mut self,
        sender: Option<PeerId>,
        envelopes: &[Vec<u8>],
    ) -> Vec<Ack> {
        let now = now_ms();
        let mut acks = Vec::with_capacity(envelopes.len());
        let mut new_messages = Vec::new();
        let mut new_requests = Vec::new();
        // Mail fetched from a relay is acknowledged to its author with a receipt.
        let mut receipts: std::collections::BTreeMap<String, Vec<MessageId>> = Default::default();
        for envelope in envelopes {
            let ack = match self.receive_one(envelope, now) {
                Ok(Received::New(message, request)) => {
                    let id = message.id;
                    if sender.is_none() {
                        receipts.entry(message.from.clone()).or_default().push(id);
                    }
                    new_messages.push(message);
                    if let Some(r) = request {
                        new_requests.push(r);
                    }
                    Ack::Stored(id)
                }
                Ok(Received::Duplicate { id, from }) => {
                    if sender.is_none() {
                        receipts.entry(from).or_default().push(id);
                    }
                    Ack::Stored(id)
                }
                Ok(Received::Receipt(id)) => Ack::Stored(id),
                Ok(Received::Busy) => Ack::Retry,
                Err(reason) => {
                    if let Some(peer) = sender {
                        self.strike(peer, "bad envelope");
                    }
                    Ack::Rejected(reason)
                }
            };
            acks.push(ack);
        }
        let stored = acks.iter().any(|a| matches!(a, Ack::Stored(_)));
        if stored && let Err(e) = self.store.flush() {
            tracing::error!("cannot make received messages durable: {e:#}");
            return acks
                .into_iter()
                .map(|a| match a {
                    Ack::Stored(_) => Ack::Retry,
                    other => other,
                })
                .collect();
        }
        for (to, ids) in receipts {
            self.send_receipt(&to, &ids);
        }
        for (peer_id, name) in new_requests {
            self.emit(Event::ContactRequest { peer_id, name });
        }
        for message in new_messages {
            self.emit(Event::MessageReceived {
                chat: message.chat.clone(),
                message,
            });
        }
        acks
    }

    fn receive_one(&mut self, envelope: &[u8], now: u64) -> Result<Received, Reject> {
        let opened = crypto::open(self.identity.msg_secret(), envelope)
            .map_err(|_| Reject::Undecryptable)?;
        let payload = DmPayload::decode(&opened.plaintext).map_err(|_| Reject::Malformed)?;
        if payload.sender.msg_key != opened.sender_msg_key
            || payload.recipient != self.identity.public_key()
        {
            return Err(Reject::Forged);
        }
        let sender = payload.sender.peer_id().map_err(|_| Reject::Forged)?;
        let sender_text = sender.to_string();
        if let Body::Receipt(ids) = &payload.body {
            self.take_receipt(&sender_text, ids, now);
            return Ok(Received::Receipt(payload.id));
        }
        if self.take_control(&sender_text, &payload) {
            return Ok(Received::Receipt(payload.id));
        }
        let duplicate = |id| Received::Duplicate {
            id,
            from: sender_text.clone(),
        };
        match self.store.message(&payload.id) {
            Ok(Some(_)) => return Ok(duplicate(payload.id)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("store read failed: {e:#}");
                return Ok(Received::Busy);
            }
        }
        let mut request = None;
        match self.store.contact(&sender_text) {
            Ok(Some(contact)) if contact.state == ContactState::Refused => {
                // The user refused this person: acknowledge (so they stop retrying) and drop.
                return Ok(duplicate(payload.id));
            }
            Ok(Some(mut contact)) => {
                if payload.sender.issued_ms > contact.card.issued_ms {
                    contact.card = payload.sender.clone();
                    if let Err(e) = self.store.put_contact(&contact) {
                        tracing::warn!("cannot update card of {sender}: {e:#}");
                    }
                }
            }
            Ok(None) => {
                let requests = self
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
                if self.store.put_contact(&contact).is_err() {
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
        match self.store.insert_message(&message) {
            Ok(true) => {
                self.clock
                    .observe(payload.hlc, now, super::actor::MAX_SKEW_MS);
                Ok(Received::New(message, request))
            }
            Ok(false) => Ok(duplicate(message.id)),
            Err(e) => {
                tracing::error!("cannot store a received message: {e:#}");
                Ok(Received::Busy)
            }
        }
    }

    /// `from` says it holds these messages: those we sent to `from` are delivered.
    fn take_receipt(&mut self, from: &str, ids: &[MessageId], now: u64) {
        for id in ids {
            let ours = matches!(
                self.store.message(id),
                Ok(Some(m)) if m.outgoing && m.chat == from
            );
            if ours {
                let outputs = self.outbox.handle(outbox::Input::Acked(*id), now);
                self.apply_outbox(outputs);
            }
        }
    }

    /// Tells `to` that we hold `ids` (mail of theirs we fetched from a relay): directly if
    /// connected, else through their mailboxes. Best effort: if a receipt is lost, the
    /// author's retry of the message gets a fresh ack.
    fn send_receipt(&mut self, to: &str, ids: &[MessageId]) {
        let (Ok(peer), Ok(Some(contact))) = (to.parse::<PeerId>(), self.store.contact(to)) else {
            return;
        };
        for chunk in ids.chunks(wire::MAX_RECEIPT_IDS) {
            let Ok(id) = MessageId::random() else {
                return;
            };
            let payload = DmPayload {
                version: wire::PAYLOAD_VERSION,
                id,
                hlc: self.clock.tick(now_ms()),
                sender: self.card.clone(),
                recipient: contact.card.identity,
                body: Body::Receipt(chunk.to_vec()),
            };
            let envelope = match crypto::seal(
                self.identity.msg_secret(),
                &contact.card.msg_key,
                &payload.encode(),
            ) {
                Ok(envelope) => envelope,
                Err(e) => {
                    tracing::warn!("cannot seal a receipt for {to}: {e:#}");
                    return;
                }
            };
            if self.is_online(&peer) {
                // Not tracked: its answer needs no action.
                self.swarm.behaviour_mut().dm.send_request(
                    &peer,
                    Ok(DmRequest {
                        envelopes: vec![envelope],
                    }),
                );
            } else {
                self.deposit_receipt(&contact.card, to, envelope);
            }
        }
    }

    pub(super) fn contact_add(&mut self, code: &str, alias: Option<String>) -> NodeResult<PeerId> {
        let card = ContactCard::from_code(code)?;
        let peer = card.peer_id()?;
        if peer == self.identity.peer_id() {
            return Err(NodeError::InvalidArgument(
                "that is your own contact code".into(),
            ));
        }
        if let Some(alias) = &alias {
            identity::check_name(alias)?;
        }
        let key = peer.to_string();
        let contact = match self.store.contact(&key)? {
            Some(mut existing) => {
                if card.issued_ms >= existing.card.issued_ms {
                    existing.card = card;
                }
                existing.state = ContactState::Accepted;
                if alias.is_some() {
                    existing.alias = alias;
                }
                existing
            }
            None => Contact {
                peer_id: key,
                card,
                alias,
                verified: false,
                state: ContactState::Accepted,
            },
        };
        self.store.put_contact(&contact)?;
        self.remember_current_addrs(&peer);
        self.store.flush()?;
        self.keep(peer, true);
        if !self.is_online(&peer) {
            self.dial_peer(peer);
        }
        Ok(peer)
    }

    /// Accepts or refuses a pending request.
    pub(super) fn contact_decide(&mut self, peer: &PeerId, state: ContactState) -> NodeResult<()> {
        let mut contact = self.known_contact(peer)?;
        match (contact.state, state) {
            (ContactState::Accepted, ContactState::Accepted) => return Ok(()),
            (ContactState::Accepted, _) => {
                return Err(NodeError::InvalidArgument(format!(
                    "{peer} is already a contact, not a request"
                )));
            }
            _ => {}
        }
        contact.state = state;
        self.store.put_contact(&contact)?;
        if state == ContactState::Accepted {
            self.remember_current_addrs(peer);
        }
        self.store.flush()?;
        self.keep(*peer, state == ContactState::Accepted);
        Ok(())
    }

    pub(super) fn contacts(&self) -> NodeResult<Vec<ContactInfo>> {
        Ok(self
            .store
            .contacts()?
            .into_iter()
            .filter(|c| c.state == ContactState::Accepted)
            .map(|c| ContactInfo {
                online: c.peer_id.parse().is_ok_and(|p| self.is_online(&p)),
                name: c.display_name().to_owned(),
                verified: c.verified,
                peer_id: c.peer_id,
            })
            .collect())
    }

    fn known_contact(&self, peer: &PeerId) -> NodeResult<Contact> {
        self.store
            .contact(&peer.to_string())?
            .ok_or(NodeError::NotAContact(*peer))
    }

    pub(super) fn safety_number(&self, peer: &PeerId) -> NodeResult<String> {
        let contact = self.known_contact(peer)?;
        Ok(identity::safety_number(
            &self.identity.public_key(),
            &contact.card.identity,
        ))
    }

    pub(super) fn contact_verify(&mut self, peer: &PeerId) -> NodeResult<()> {
        let mut contact = self.known_contact(peer)?;
        contact.verified = true;
        self.store.put_contact(&contact)?;
        self.store.flush()?;
        Ok(())
    }

    pub(super) fn chats(&self) -> NodeResult<Vec<ChatInfo>> {
        let mut chats: Vec<ChatInfo> = Vec::new();
        let mut groups: std::collections::BTreeMap<String, String> =
            self.group_names().into_iter().collect();
        for (id, meta) in self.store.chats()? {
            if let Some(name) = groups.remove(&id) {
                chats.push(ChatInfo {
                    name,
                    request: false,
                    kind: ChatKind::Group,
                    unread: meta.unread,
                    last: meta.last.as_ref().map(MessageInfo::from),
                    id,
                });
                continue;
            }
            let contact = self.store.contact(&id)?;
            if contact
                .as_ref()
                .is_some_and(|c| c.state == ContactState::Refused)
            {
                continue;
            }
            chats.push(ChatInfo {
                name: contact
                    .as_ref()
                    .map_or_else(|| id.clone(), |c| c.display_name().to_owned()),
                request: contact.is_some_and(|c| c.state == ContactState::Request),
                kind: ChatKind::Direct,
                unread: meta.unread,
                last: meta.last.as_ref().map(MessageInfo::from),
                id,
            });
        }
        // Groups with no message yet.
        for (id, name) in groups {
            chats.push(ChatInfo {
                name,
                request: false,
                kind: ChatKind::Group,
                unread: 0,
                last: None,
                id,
            });
        }
        chats.sort_by(|a, b| {
            let key = |c: &ChatInfo| c.last.as_ref().map(|m| m.sent_at);
            key(b).cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(chats)
    }

    pub(super) fn messages(
        &self,
        chat: &str,
        limit: usize,
        before: Option<MessageId>,
    ) -> NodeResult<Vec<MessageInfo>> {
        let before = match before {
            Some(id) => {
                let message = self
                    .store
                    .message(&id)?
                    .ok_or_else(|| NodeError::NotFound(format!("no message with id {id}")))?;
                Some((message.hlc, message.id))
            }
            None => None,
        };
        Ok(self
            .store
            .messages(chat, limit, before)?
            .iter()
            .map(MessageInfo::from)
            .collect())
    }
}

/// The outcome of receiving one envelope that opened correctly.
enum Received {
    /// Stored now; with a contact request `(peer_id, name)` if the sender was a stranger.
    New(StoredMessage, Option<(String, String)>),
    /// Already held: ack again, store and show nothing.
    Duplicate {
        /// The message.
        id: MessageId,
        /// Its author's peer id.
        from: String,
    },
    /// A receipt for our own messages, applied; nothing to store.
    Receipt(MessageId),
    /// Could not store it now; ask the sender to retry.
    Busy,
}

/// A direct message body for the outbox: a stored chat text, or a control message (an
/// invite) waiting in the outbox.
fn outgoing_body(store: &dyn Store, id: &MessageId) -> NodeResult<Body> {
    if let Some(message) = store.message(id)? {
        return Ok(Body::Text(message.text));
    }
    store
        .control(id)
        .ok()
        .flatten()
        .ok_or_else(|| NodeError::NotFound(format!("message {id} is gone")))
}

/// A control message left the outbox: forget its body.
fn forget_control(store: &dyn Store, id: &MessageId) {
    if let Err(e) = store.remove_control(id) {
        tracing::warn!("cannot forget control message {id}: {e:#}");
    }
}
