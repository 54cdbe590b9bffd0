//! Group chats: the adapter between the sans-IO sessions (`proto::group::session`) and
//! gossipsub, the store and the direct outbox. The decisions (membership, keys, what an
//! item means, what an invite carries) are the sessions'; this file moves bytes.
//!
//! Items travel by gossipsub (one topic per group) and by `/bonghwa/sync/1` (see
//! `group_sync.rs`); invites ride the direct outbox (with mailbox fallback). Work is done
//! in batches: items taken in one round of swarm events (or by one command) are staged,
//! and [`Actor::commit_groups`] ends the batch: the sessions seal keys owed, then each
//! changed record is written, then the staged items, then one flush, then events are
//! emitted and our items published. An item is stored after what it caused (sled keeps a
//! prefix of its writes), so a surviving item implies its effects; a lost one comes back
//! by sync.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use libp2p::PeerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};

use super::actor::{Actor, ttl_expiry};
use super::{NodeError, NodeResult, now_ms};
use crate::crypto;
use crate::crypto::group::{GroupId, signing_key_of, topic_for};
use crate::event::Event;
use crate::identity::{self, ContactCard, Identity};
use crate::model::StoredMessage;
use crate::model::{ContactState, GroupRecord, Hlc, MessageId, MessageStatus, OutboxEntry};
use crate::net;
use crate::proto::group::invite::{invite_items, read_invite};
use crate::proto::group::session::{Ctx, GroupSession, Me, OsRandom, Output, SessionError, Taken};
use crate::proto::outbox;
use crate::wire::group::LogItem;
use crate::wire::{self, Body, DmPayload};

/// Groups one node keeps.
const MAX_GROUPS: usize = 256;
/// Items waiting for a gossip peer, per group.
const MAX_UNPUBLISHED: usize = 4_096;
/// Room an invite leaves for the sender's card, the payload fields and what `group_add`
/// writes before sending it (the add op, the newcomer's card, our key for them).
const INVITE_MARGIN: usize = 4_096;

/// All groups, and the batch under way.
pub(super) struct Groups {
    pub(super) map: BTreeMap<GroupId, GroupSession>,
    topics: BTreeMap<TopicHash, GroupId>,
    me: Me,
    random: OsRandom,
    /// Items taken in this batch, written at its end after the records.
    staged: BTreeMap<(GroupId, MessageId), (Hlc, Vec<u8>)>,
    /// Groups touched in this batch.
    touched: BTreeSet<GroupId>,
    /// The list of groups changed.
    list_dirty: bool,
    /// Events waiting for the end of the batch (store, then emit).
    pending_events: Vec<Event>,
    /// Encoded items of ours gossipsub did not take yet (no peer on the topic), per group.
    unpublished: BTreeMap<GroupId, VecDeque<Vec<u8>>>,
    /// Our chat items not yet handed to any member, by item id, with their message: it
    /// turns `sent` when gossipsub takes the item or a member gets it from us by sync.
    unsent: HashMap<MessageId, MessageId>,
}

/// What a received item did, as gossip sees it.
enum Received {
    Taken(Taken),
    Duplicate,
    /// Not for a group we hold.
    Unknown,
}

impl Groups {
    pub(super) fn new(identity: &Identity) -> NodeResult<Self> {
        let signing = signing_key_of(identity).map_err(|e| NodeError::Crypto(e.to_string()))?;
        Ok(Self {
            map: BTreeMap::new(),
            topics: BTreeMap::new(),
            me: Me {
                key: identity.public_key(),
                signing,
                msg_secret: *identity.msg_secret(),
            },
            random: OsRandom,
            staged: BTreeMap::new(),
            touched: BTreeSet::new(),
            list_dirty: false,
            pending_events: Vec::new(),
            unpublished: BTreeMap::new(),
            unsent: HashMap::new(),
        })
    }
}

/// What a refused group command tells the caller.
fn refused(id: &GroupId, e: SessionError) -> NodeError {
    match e {
        SessionError::NotAMember => NodeError::NotAMember(*id),
        SessionError::NotInGroup(peer) => {
            NodeError::NotFound(format!("{peer} is not in the group"))
        }
        SessionError::Crypto(why) => NodeError::Crypto(why),
        other => NodeError::InvalidArgument(other.to_string()),
    }
}

impl Actor {
    /// Runs `f` on group `id`'s session and applies what it says. `None` if no such group.
    fn with_session<T>(
        &mut self,
        id: &GroupId,
        f: impl FnOnce(&mut GroupSession, &mut Ctx<'_>, &mut Vec<Output>) -> T,
    ) -> Option<T> {
        let mut out = Vec::new();
        let groups = &mut self.groups;
        let session = groups.map.get_mut(id)?;
        let mut ctx = Ctx {
            me: &groups.me,
            clock: &mut self.clock,
            now: now_ms(),
            random: &mut groups.random,
        };
        let result = f(session, &mut ctx, &mut out);
        groups.touched.insert(*id);
        self.apply_group(id, out);
        Some(result)
    }

    fn apply_group(&mut self, id: &GroupId, mut queue: Vec<Output>) {
        while !queue.is_empty() {
            let mut next = Vec::new();
            for output in queue {
                match output {
                    Output::Store {
                        id: item,
                        hlc,
                        bytes,
                    } => {
                        self.groups.staged.insert((*id, item), (hlc, bytes));
                    }
                    Output::Publish { bytes, .. } => {
                        let queue = self.groups.unpublished.entry(*id).or_default();
                        if queue.len() >= MAX_UNPUBLISHED {
                            // Sync repairs what gossip never carried.
                            queue.pop_front();
                        }
                        queue.push_back(bytes);
                    }
                    Output::Show(m) => {
                        let message = StoredMessage {
                            id: m.id,
                            chat: id.to_hex(),
                            from: m.from.to_string(),
                            text: m.text,
                            hlc: m.hlc,
                            status: MessageStatus::Delivered,
                            outgoing: false,
                        };
                        match self.store.insert_message(&message) {
                            Ok(true) => self.groups.pending_events.push(Event::MessageReceived {
                                chat: message.chat.clone(),
                                message,
                            }),
                            Ok(false) => {}
                            Err(e) => tracing::error!("cannot store a group message: {e:#}"),
                        }
                    }
                    Output::NeedItems { author, ids } => {
                        let items = ids
                            .iter()
                            .filter_map(|item| Some((*item, self.item_bytes(id, item)?)))
                            .collect();
                        if let Some(session) = self.groups.map.get_mut(id) {
                            session.open_held(&self.groups.me, author, items, &mut next);
                        }
                    }
                    Output::JoinTopic => self.join_topic(id),
                    Output::LeaveTopic => {
                        let topic = IdentTopic::new(topic_for(id));
                        self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
                    }
                    Output::Changed => self
                        .groups
                        .pending_events
                        .push(Event::GroupChanged { group: id.to_hex() }),
                }
            }
            queue = next;
        }
    }

    /// An item of group `id`: staged in this batch, or in the store's log.
    fn item_bytes(&self, id: &GroupId, item: &MessageId) -> Option<Vec<u8>> {
        if let Some((_, bytes)) = self.groups.staged.get(&(*id, *item)) {
            return Some(bytes.clone());
        }
        self.store.group_item(&id.to_hex(), item).ok().flatten()
    }

    /// Ends a batch: keys owed are sealed, records then items written, one flush, then
    /// events and publishing. Every path that takes or authors items calls it.
    pub(super) fn commit_groups(&mut self) -> NodeResult<()> {
        for id in std::mem::take(&mut self.groups.touched) {
            if let Some(Err(e)) = self.with_session(&id, |s, ctx, out| s.flush(ctx, out)) {
                tracing::warn!("cannot seal our key in group {}: {e}", id.to_hex());
            }
            self.groups.touched.remove(&id);
        }
        let mut wrote = self
            .group_relay
            .as_mut()
            .is_some_and(|relay| relay.take_unflushed());
        let dirty: Vec<(GroupId, GroupRecord)> = self
            .groups
            .map
            .iter_mut()
            .filter_map(|(id, s)| s.take_dirty().then(|| (*id, s.record())))
            .collect();
        for (id, record) in dirty {
            self.store.put_group_record(&id, &record)?;
            wrote = true;
        }
        if std::mem::take(&mut self.groups.list_dirty) {
            let ids: Vec<GroupId> = self.groups.map.keys().copied().collect();
            self.store.set_group_ids(&ids)?;
            wrote = true;
        }
        for ((id, item), (hlc, bytes)) in std::mem::take(&mut self.groups.staged) {
            self.store
                .group_item_put(&id.to_hex(), hlc, &item, &bytes)?;
            wrote = true;
        }
        if wrote {
            self.store.flush()?;
        }
        for event in std::mem::take(&mut self.groups.pending_events) {
            self.emit(event);
        }
        self.flush_all_unpublished();
        Ok(())
    }

    /// Loads our groups at start and joins their topics.
    pub(super) fn restore_groups(&mut self) -> NodeResult<()> {
        let ids = self.store.group_ids().unwrap_or_else(|e| {
            tracing::warn!("the list of groups is damaged ({e}); none restored");
            Vec::new()
        });
        let me = self.groups.me.key;
        for id in ids {
            let record = match self.store.group_record(&id) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("group {} has a damaged record ({e}); skipped", id.to_hex());
                    continue;
                }
            };
            let session = match GroupSession::restore(id, me, record) {
                Ok(session) => session,
                Err(e) => {
                    tracing::warn!("group {} has invalid ops ({e}); skipped", id.to_hex());
                    continue;
                }
            };
            let member = session.is_member(&me);
            self.groups.map.insert(id, session);
            if member {
                self.join_topic(&id);
                self.restore_unsent(&id)?;
            }
        }
        Ok(())
    }

    /// Finds our chat items that no member had got when we stopped (their message is
    /// still `pending`), so that they turn `sent` when sync hands them over. Looks at the
    /// group's newest [`MAX_UNPUBLISHED`] messages.
    fn restore_unsent(&mut self, id: &GroupId) -> NodeResult<()> {
        let chat = id.to_hex();
        let pending: BTreeMap<_, MessageId> = self
            .store
            .messages(&chat, MAX_UNPUBLISHED, None)?
            .into_iter()
            .filter(|m| m.outgoing && m.status == MessageStatus::Pending)
            .map(|m| (m.hlc, m.id))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for (hlc, item_id) in self.store.group_items(&chat)? {
            if let Some(message) = pending.get(&hlc)
                && let Some(bytes) = self.store.group_item(&chat, &item_id)?
                && LogItem::decode(&bytes).is_ok_and(|item| item.author == self.groups.me.key)
            {
                self.groups.unsent.insert(item_id, *message);
            }
        }
        Ok(())
    }

    fn join_topic(&mut self, id: &GroupId) {
        let topic = IdentTopic::new(topic_for(id));
        self.groups.topics.insert(topic.hash(), *id);
        if let Err(e) = self.subscribe_scored(topic) {
            tracing::warn!("cannot join the topic of group {}: {e}", id.to_hex());
        }
    }

    /// Joins a group topic with the group scoring (see [`net::group_topic_score`]).
    pub(super) fn subscribe_scored(&mut self, topic: IdentTopic) -> Result<bool, String> {
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        gossipsub.set_topic_params(topic.clone(), net::group_topic_score())?;
        gossipsub.subscribe(&topic).map_err(|e| e.to_string())
    }

    /// `group_create`: a new group with us and `members` (contacts), who get an invite.
    pub(super) fn group_create(&mut self, name: &str, members: &[PeerId]) -> NodeResult<GroupId> {
        identity::check_name(name).map_err(|_| {
            NodeError::InvalidArgument("the group name is empty or too long".into())
        })?;
        if self.groups.map.len() >= MAX_GROUPS {
            return Err(NodeError::InvalidArgument(format!(
                "you are in {MAX_GROUPS} groups already"
            )));
        }
        let cards = members
            .iter()
            .map(|m| self.contact_card(m))
            .collect::<NodeResult<Vec<_>>>()?;
        let mut ctx = Ctx {
            me: &self.groups.me,
            clock: &mut self.clock,
            now: now_ms(),
            random: &mut self.groups.random,
        };
        let (session, out) =
            GroupSession::create(&mut ctx, name, &self.card, &cards).map_err(|e| match e {
                SessionError::Crypto(why) => NodeError::Crypto(why),
                other => NodeError::InvalidArgument(other.to_string()),
            })?;
        let id = session.id();
        self.groups.map.insert(id, session);
        self.groups.list_dirty = true;
        self.groups.touched.insert(id);
        self.apply_group(&id, out);
        self.commit_groups()?;
        for card in &cards {
            self.invite(&id, card)?;
        }
        self.store.flush()?;
        Ok(id)
    }

    /// `group_add`: adds a contact to a group we are in; they get an invite.
    pub(super) fn group_add(&mut self, id: &GroupId, member: &PeerId) -> NodeResult<()> {
        let card = self.contact_card(member)?;
        // Refused before anything is written if the invite could not be sent.
        self.invite_items(id, &card.identity)?;
        let added = self
            .with_session(id, |s, ctx, out| s.add(ctx, &card, out))
            .ok_or(NodeError::NoSuchGroup(*id))?
            .map_err(|e| refused(id, e))?;
        self.commit_groups()?;
        if added {
            self.invite(id, &card)?;
            self.store.flush()?;
        }
        Ok(())
    }

    /// `group_remove` / `group_leave`: a membership op that makes the others rotate.
    pub(super) fn group_remove(&mut self, id: &GroupId, member: Option<&PeerId>) -> NodeResult<()> {
        match member {
            Some(peer) => self.with_session(id, |s, ctx, out| s.remove(ctx, peer, out)),
            None => self.with_session(id, |s, ctx, out| s.leave(ctx, out)),
        }
        .ok_or(NodeError::NoSuchGroup(*id))?
        .map_err(|e| refused(id, e))?;
        self.commit_groups()
    }

    /// Sends a chat message to a group: sealed, stored, flushed, then published.
    pub(super) fn group_send(&mut self, id: &GroupId, text: &str) -> NodeResult<MessageId> {
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
        let message_id =
            MessageId::random().map_err(|e| NodeError::Internal(format!("no randomness: {e}")))?;
        let hlc = self.clock.tick(now_ms());
        let item = self
            .with_session(id, |s, ctx, out| s.send(ctx, message_id, hlc, text, out))
            .ok_or(NodeError::NoSuchGroup(*id))?
            .map_err(|e| refused(id, e))?;
        // The advanced chain first: a message key must never be used twice, even if we
        // crash half-way (sled makes a prefix of its writes durable).
        if let Some(session) = self.groups.map.get_mut(id)
            && session.take_dirty()
        {
            let record = session.record();
            self.store.put_group_record(id, &record)?;
        }
        self.store.insert_message(&StoredMessage {
            id: message_id,
            chat: id.to_hex(),
            from: self.identity.peer_id().to_string(),
            text: text.to_owned(),
            hlc,
            status: MessageStatus::Pending,
            outgoing: true,
        })?;
        self.groups.unsent.insert(item, message_id);
        self.commit_groups()?;
        Ok(message_id)
    }

    /// Publishes what waits for gossip, oldest first, until gossipsub refuses (nobody on
    /// the topic yet: tried again when a peer subscribes or at the next tick).
    pub(super) fn flush_unpublished(&mut self, id: &GroupId) {
        let topic = IdentTopic::new(topic_for(id));
        while let Some(bytes) = self
            .groups
            .unpublished
            .get_mut(id)
            .and_then(|q| q.front().cloned())
        {
            let item_id = LogItem::id_of(&bytes);
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes)
            {
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => {
                    if let Some(queue) = self.groups.unpublished.get_mut(id) {
                        queue.pop_front();
                    }
                    self.handed_over(&item_id);
                }
                Err(e) => {
                    tracing::debug!(group = %id.to_hex(), "not published yet: {e}");
                    return;
                }
            }
        }
    }

    /// Retries every group's unpublished items (a peer subscribed somewhere, or a tick).
    pub(super) fn flush_all_unpublished(&mut self) {
        self.groups.unpublished.retain(|_, q| !q.is_empty());
        let ids: Vec<GroupId> = self.groups.unpublished.keys().copied().collect();
        for id in ids {
            self.flush_unpublished(&id);
        }
    }

    /// One of our items left for a member (gossip took it, or a member fetched it or we
    /// pushed it by sync): if it is a chat message of ours still `pending`, now `sent`.
    pub(super) fn handed_over(&mut self, item_id: &MessageId) {
        if let Some(message) = self.groups.unsent.remove(item_id) {
            self.update_status(&message, MessageStatus::Sent);
        }
    }

    /// Sends `card`'s owner the group's log so far (without chat messages) through the
    /// direct outbox, so it reaches them even when they are offline (via their mailbox).
    fn invite(&mut self, id: &GroupId, card: &ContactCard) -> NodeResult<()> {
        let items = self.invite_items(id, &card.identity)?;
        let control =
            MessageId::random().map_err(|e| NodeError::Internal(format!("no randomness: {e}")))?;
        self.store
            .put_control(&control, &Body::GroupInvite(items))?;
        let now = now_ms();
        let entry = OutboxEntry {
            id: control,
            to: card.peer_id()?.to_string(),
            created_ms: now,
            expires_ms: ttl_expiry(now, self.ttl_ms),
        };
        self.store.outbox_put(&entry)?;
        let outputs = self.outbox.handle(outbox::Input::Queued(entry), now);
        self.apply_outbox(outputs);
        Ok(())
    }

    /// What an invite to `invitee` carries (see [`invite_items`]); refused if the ops
    /// alone do not fit, so `group_add` fails visibly instead of an invite that can never
    /// be sent.
    fn invite_items(&self, id: &GroupId, invitee: &[u8; 32]) -> NodeResult<Vec<Vec<u8>>> {
        let chat = id.to_hex();
        let mut log = Vec::new();
        for (_, item) in self.store.group_items(&chat)? {
            log.extend(self.store.group_item(&chat, &item)?);
        }
        let budget = crypto::MAX_PLAINTEXT.saturating_sub(INVITE_MARGIN);
        invite_items(log, invitee, budget).map_err(|size| {
            NodeError::InvalidArgument(format!(
                "this group's membership history ({size} bytes) no longer fits an invite; \
                 start a new group to add more people"
            ))
        })
    }

    /// An invite from `from` (a contact we accepted): take the items, join if we are in.
    fn take_invite(&mut self, from: &str, items: &[Vec<u8>]) {
        let accepted = matches!(
            self.store.contact(from),
            Ok(Some(c)) if c.state == ContactState::Accepted
        );
        if !accepted {
            tracing::info!(%from, "group invite from someone who is not a contact; ignored");
            return;
        }
        let Some((id, ordered)) = read_invite(items) else {
            tracing::info!(%from, "group invite without its founding op; ignored");
            return;
        };
        if !self.groups.map.contains_key(&id) {
            if self.groups.map.len() >= MAX_GROUPS {
                tracing::warn!("group invite ignored: in {MAX_GROUPS} groups already");
                return;
            }
            let session = GroupSession::new(id, self.groups.me.key);
            self.groups.map.insert(id, session);
            self.groups.list_dirty = true;
        }
        for (bytes, item) in ordered {
            self.take_decoded(bytes, item);
        }
        if !self
            .groups
            .map
            .get(&id)
            .is_some_and(|s| s.is_member(&self.groups.me.key))
        {
            self.groups.map.remove(&id);
            self.groups.staged.retain(|(group, _), _| *group != id);
            self.groups.touched.remove(&id);
            return;
        }
        // Durable before the invite's envelope is acknowledged.
        if let Err(e) = self.commit_groups() {
            tracing::error!("cannot store group {}: {e:#}", id.to_hex());
        }
        if let Ok(peer) = from.parse::<PeerId>() {
            self.start_sync(&id, peer);
        }
    }

    /// Takes one encoded item from gossip or sync (staged; the batch's commit stores it).
    fn take_bytes(&mut self, bytes: &[u8]) -> Received {
        match LogItem::decode(bytes) {
            Ok(item) => self.take_decoded(bytes, item),
            Err(_) => Received::Taken(Taken::Rejected("malformed or forged item")),
        }
    }

    fn take_decoded(&mut self, bytes: &[u8], item: LogItem) -> Received {
        let id = item.group_id;
        if !self.groups.map.contains_key(&id) {
            return Received::Unknown;
        }
        if self.item_bytes(&id, &LogItem::id_of(bytes)).is_some() {
            return Received::Duplicate;
        }
        match self.with_session(&id, |s, ctx, out| s.take(ctx, bytes, item, out)) {
            Some(taken) => Received::Taken(taken),
            None => Received::Unknown,
        }
    }

    /// A gossip event.
    pub(super) fn on_gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let known = self.groups.topics.contains_key(&message.topic);
                let acceptance = match known.then(|| self.take_bytes(&message.data)) {
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
                if let Some(id) = self.groups.topics.get(&topic).copied() {
                    self.flush_unpublished(&id);
                }
                self.relay_topic(&topic, peer_id);
            }
            _ => {}
        }
    }

    /// Items from a sync peer: taken like gossip, and made durable at once.
    pub(super) fn take_synced(&mut self, items: &[Vec<u8>]) -> usize {
        let new = items
            .iter()
            .filter(|bytes| matches!(self.take_bytes(bytes), Received::Taken(Taken::New)))
            .count();
        if let Err(e) = self.commit_groups() {
            tracing::error!("cannot make synced group items durable: {e:#}");
        }
        new
    }

    /// The card of contact `peer` (to invite them).
    fn contact_card(&self, peer: &PeerId) -> NodeResult<ContactCard> {
        match self.store.contact(&peer.to_string())? {
            Some(c) if c.state == ContactState::Accepted => Ok(c.card),
            _ => Err(NodeError::NotAContact(*peer)),
        }
    }

    /// Group chats for `chats`: (id, name).
    pub(super) fn group_names(&self) -> Vec<(String, String)> {
        self.groups
            .map
            .iter()
            .map(|(id, s)| (id.to_hex(), s.name()))
            .collect()
    }

    /// `group_members`: peer ids of the current members.
    pub(super) fn group_members(&self, id: &GroupId) -> NodeResult<Vec<String>> {
        let session = self.groups.map.get(id).ok_or(NodeError::NoSuchGroup(*id))?;
        Ok(session
            .member_peers()
            .iter()
            .map(PeerId::to_string)
            .collect())
    }

    /// A direct message body for the outbox: a stored chat text, or a control message.
    pub(super) fn outgoing_body(&self, id: &MessageId) -> NodeResult<Body> {
        if let Some(message) = self.store.message(id)? {
            return Ok(Body::Text(message.text));
        }
        self.control_body(id)
            .ok_or_else(|| NodeError::NotFound(format!("message {id} is gone")))
    }

    /// The body of a control message waiting in the outbox (an invite), if `id` is one.
    pub(super) fn control_body(&self, id: &MessageId) -> Option<Body> {
        self.store.control(id).ok().flatten()
    }

    /// A control message left the outbox: forget its body.
    pub(super) fn forget_control(&self, id: &MessageId) {
        if let Err(e) = self.store.remove_control(id) {
            tracing::warn!("cannot forget control message {id}: {e:#}");
        }
    }

    /// Whether `payload` is a group invite: taken here, nothing to store in a chat.
    pub(super) fn take_control(&mut self, from: &str, payload: &DmPayload) -> bool {
        match &payload.body {
            Body::GroupInvite(items) => {
                self.take_invite(from, items);
                true
            }
            _ => false,
        }
    }
}
