//! Group chats. A group is a log of signed items ([`LogItem`]) that every member holds the
//! same of: chat messages under their author's sender key, membership ops, members' cards
//! and each member's sender key sealed to every other member. Items travel by gossipsub
//! (one topic per group) and by `/bonghwa/sync/1` (see `group_sync.rs`), so a member that
//! was away, or that no other member reaches directly, still ends up with all of them.
//!
//! - Creating a group or adding someone sends the newcomer an invite through the direct
//!   outbox (with mailbox fallback): the log so far without its chat messages.
//! - Keys: whenever a member lacks our current key (it joined, or we rotated because
//!   someone left or was removed), we publish a `Keys` item sealed to each such member.
//!   A removed member gets nothing sealed to it, so it cannot read what follows.
//! - Display: a chat message is shown once its author's key has arrived; items that cannot
//!   be opened yet are kept and opened when the key comes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use libp2p::PeerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};

use super::actor::{Actor, ttl_expiry};
use super::{NodeError, NodeResult, now_ms};
use crate::crypto;
use crate::crypto::group::{
    ChainState, GroupId, ReceiverChain, SenderKey, signing_key_of, topic_for,
};
use crate::event::Event;
use crate::identity::{self, ContactCard};
use crate::model::{
    ContactState, GroupRecord, Hlc, MessageId, MessageStatus, OutboxEntry, StoredMessage,
};
use crate::net;
use crate::proto::group::{KeyAction, Membership};
use crate::proto::outbox;
use crate::wire::group::{
    GroupBody, GroupEnvelope, GroupPayload, LogBody, LogItem, MAX_SEALED_KEYS, MembershipOp,
    SignedOp,
};
use crate::wire::{self, Body, DmPayload};

/// Members a group may have in this version (one key item seals to all of them).
pub(super) const MAX_GROUP_MEMBERS: usize = MAX_SEALED_KEYS;
/// Groups one node keeps.
const MAX_GROUPS: usize = 256;
/// Group topics a relay carries for its clients at most.
/// Cards kept per group (members' and those about to be added).
const MAX_CARDS: usize = 2 * MAX_GROUP_MEMBERS;
/// Items waiting for a gossip peer, per group.
const MAX_UNPUBLISHED: usize = 4_096;
/// Our sends whose chain state we keep, per group, for members we learn of late.
const MAX_CHECKPOINTS: usize = 64;
/// Chat items kept while their author's key has not arrived, per group.
const MAX_UNOPENED: usize = 4_096;
/// Room an invite leaves for the sender's card, the payload fields and what `group_add`
/// writes before sending it (the add op, the newcomer's card, our key for them).
const INVITE_MARGIN: usize = 4_096;
/// Setting key of the list of our groups.
const GROUPS_KEY: &str = "groups";
/// Setting-key prefix of one group's record.
const GROUP_KEY: &str = "group/";
/// Setting-key prefix of a control message (an invite) waiting in the outbox.
pub(super) const CONTROL_KEY: &str = "control/";

/// One group as this node holds it.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) membership: Membership,
    /// Our sending chain; `None` once we left or were removed.
    my_key: Option<SenderKey>,
    /// The chain as it was before each of our latest sends (≤ [`MAX_CHECKPOINTS`], this
    /// generation only), with the send's HLC: a member we learn of late gets our key from
    /// the first message we sent after it was added, not from now (see `key_for`).
    checkpoints: VecDeque<(Hlc, ChainState)>,
    /// Other members' chains, by identity key.
    chains: BTreeMap<[u8; 32], ReceiverChain>,
    /// Members' cards, by identity key (to seal keys to them).
    cards: BTreeMap<[u8; 32], ContactCard>,
    /// Members that hold our current key.
    shared: BTreeSet<[u8; 32]>,
    /// Chat items whose author's key we lack, by author.
    unopened: BTreeMap<[u8; 32], BTreeSet<MessageId>>,
    /// Encoded items gossipsub did not take yet (no peer on the topic).
    unpublished: VecDeque<Vec<u8>>,
}

/// All groups, and which topic is which.
#[derive(Debug, Default)]
pub(super) struct Groups {
    pub(super) map: BTreeMap<GroupId, Group>,
    topics: BTreeMap<TopicHash, GroupId>,
    /// On a relay: group topics it carries for its clients (see `group_relay`).
    pub(super) relayed: BTreeSet<TopicHash>,
    /// Gossip items taken since the last flush.
    pub(super) dirty: bool,
    /// Events waiting for that flush (store, then emit).
    pending_events: Vec<Event>,
    /// Our chat items not yet handed to any member, by item id, with their message: it
    /// turns `sent` when gossipsub takes the item or a member gets it from us by sync
    /// (which is what carries it when the gossip queue overflowed or we restarted).
    unsent: HashMap<MessageId, MessageId>,
}

/// What a received item did.
enum Taken {
    /// New and valid; stored.
    New,
    /// Already held.
    Duplicate,
    /// Not for a group we are in (or not yet): ignore, do not forward.
    Ignored,
    /// Invalid or from a non-member: reject (and lower the sender's gossip score).
    Rejected(&'static str),
}

impl Group {
    fn new(membership: Membership) -> Self {
        Self {
            membership,
            my_key: None,
            checkpoints: VecDeque::new(),
            chains: BTreeMap::new(),
            cards: BTreeMap::new(),
            shared: BTreeSet::new(),
            unopened: BTreeMap::new(),
            unpublished: VecDeque::new(),
        }
    }

    /// Everyone who was ever a member: their items stay valid history.
    fn ever_members(&self) -> BTreeSet<[u8; 32]> {
        let mut keys = BTreeSet::new();
        for op in self.membership.ops() {
            keys.insert(op.author);
            match &op.op {
                MembershipOp::Create { members, .. } => keys.extend(members.iter().copied()),
                MembershipOp::Add { member } => {
                    keys.insert(*member);
                }
                _ => {}
            }
        }
        keys
    }

    /// The member whose peer id is `peer`, if any (ever).
    pub(super) fn member_key_of(&self, peer: &PeerId) -> Option<[u8; 32]> {
        self.ever_members()
            .into_iter()
            .find(|key| identity::peer_id_of(key).ok().as_ref() == Some(peer))
    }

    /// The state of our chain to give `member`: from the first of our kept sends made
    /// after the op that (last) admitted it, so that what we sent before we knew of it is
    /// readable there too; nothing from before it was admitted. Our current state if we
    /// have not sent since (or that send is no longer kept).
    fn key_for(&self, member: &[u8; 32], key: &SenderKey) -> ChainState {
        let admitted = self
            .membership
            .ops()
            .filter(|op| match &op.op {
                MembershipOp::Add { member: added } => added == member,
                MembershipOp::Create { members, .. } => members.contains(member),
                _ => false,
            })
            .map(|op| op.hlc)
            .max();
        admitted
            .and_then(|at| {
                self.checkpoints
                    .iter()
                    .find(|(sent, _)| *sent > at)
                    .map(|(_, state)| state.clone())
            })
            .unwrap_or_else(|| key.state().clone())
    }

    fn record(&self) -> GroupRecord {
        GroupRecord {
            ops: self.membership.ops().cloned().collect(),
            my_key: self.my_key.clone(),
            checkpoints: self.checkpoints.iter().cloned().collect(),
            chains: self.chains.iter().map(|(k, c)| (*k, c.clone())).collect(),
            cards: self.cards.values().cloned().collect(),
            shared: self.shared.iter().copied().collect(),
            unopened: self
                .unopened
                .iter()
                .map(|(k, ids)| (*k, ids.iter().copied().collect()))
                .collect(),
        }
    }
}

/// Whether an item is a group's founding op (valid before any membership is known).
fn is_founding(body: &LogBody) -> bool {
    matches!(
        body,
        LogBody::Op(SignedOp {
            op: MembershipOp::Create { .. },
            ..
        })
    )
}

impl Actor {
    fn signing(&self) -> NodeResult<ed25519_dalek::SigningKey> {
        signing_key_of(&self.identity).map_err(|e| NodeError::InvalidArgument(e.to_string()))
    }

    /// Loads our groups at start and joins their topics.
    pub(super) fn restore_groups(&mut self) -> NodeResult<()> {
        let ids: Vec<GroupId> = match self.store.setting(GROUPS_KEY)? {
            Some(bytes) => postcard::from_bytes(&bytes).unwrap_or_default(),
            None => Vec::new(),
        };
        let me = self.identity.public_key();
        for id in ids {
            let Some(bytes) = self.store.setting(&format!("{GROUP_KEY}{}", id.to_hex()))? else {
                continue;
            };
            let Ok(record) = postcard::from_bytes::<GroupRecord>(&bytes) else {
                tracing::warn!("group {} has a damaged record; skipped", id.to_hex());
                continue;
            };
            let mut membership = Membership::new(id, me);
            if membership.apply_all(record.ops).is_err() {
                tracing::warn!("group {} has invalid ops; skipped", id.to_hex());
                continue;
            }
            let mut group = Group::new(membership);
            group.my_key = record.my_key;
            group.checkpoints = record.checkpoints.into_iter().collect();
            group.chains = record.chains.into_iter().collect();
            group.cards = record.cards.into_iter().map(|c| (c.identity, c)).collect();
            group.shared = record.shared.into_iter().collect();
            group.unopened = record
                .unopened
                .into_iter()
                .map(|(k, ids)| (k, ids.into_iter().collect()))
                .collect();
            let member = group.membership.is_member(&me);
            self.groups.map.insert(id, group);
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
        let me = self.identity.public_key();
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
            let Some(message) = pending.get(&hlc) else {
                continue;
            };
            let Some(bytes) = self.store.group_item(&chat, &item_id)? else {
                continue;
            };
            let ours = LogItem::decode(&bytes).is_ok_and(|item| item.author == me);
            if ours {
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

    fn leave_topic(&mut self, id: &GroupId) {
        let topic = IdentTopic::new(topic_for(id));
        self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
    }

    /// Writes a group's record (not flushed).
    fn save_group(&self, id: &GroupId) -> NodeResult<()> {
        let Some(group) = self.groups.map.get(id) else {
            return Ok(());
        };
        let bytes = postcard::to_stdvec(&group.record())
            .map_err(|e| NodeError::InvalidArgument(format!("cannot encode a group: {e}")))?;
        self.store
            .set_setting(&format!("{GROUP_KEY}{}", id.to_hex()), &bytes)?;
        let ids: Vec<GroupId> = self.groups.map.keys().copied().collect();
        let list = postcard::to_stdvec(&ids)
            .map_err(|e| NodeError::InvalidArgument(format!("cannot encode groups: {e}")))?;
        self.store.set_setting(GROUPS_KEY, &list)?;
        Ok(())
    }

    /// `group_create`: a new group with us and `members` (contacts), who get an invite.
    pub(super) fn group_create(&mut self, name: &str, members: &[String]) -> NodeResult<GroupId> {
        identity::check_name(name).map_err(|_| {
            NodeError::InvalidArgument("the group name is empty or too long".into())
        })?;
        if self.groups.map.len() >= MAX_GROUPS {
            return Err(NodeError::InvalidArgument(format!(
                "you are in {MAX_GROUPS} groups already"
            )));
        }
        if members.len() + 1 > MAX_GROUP_MEMBERS {
            return Err(NodeError::InvalidArgument(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        let mut cards = Vec::new();
        for member in members {
            cards.push(self.contact_card(member)?);
        }
        let signing = self.signing()?;
        let me = self.identity.public_key();
        let (id, salt) =
            GroupId::generate(&me).map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        let mut keys_of: Vec<[u8; 32]> = cards.iter().map(|c| c.identity).collect();
        keys_of.sort_unstable();
        keys_of.dedup();
        let create = SignedOp::sign(
            &signing,
            id,
            self.clock.tick(now_ms()),
            Vec::new(),
            MembershipOp::Create {
                name: name.to_owned(),
                salt,
                members: keys_of,
            },
        );
        self.groups
            .map
            .insert(id, Group::new(Membership::new(id, me)));
        self.join_topic(&id);
        self.author(&id, LogBody::Op(create))?;
        self.author(&id, LogBody::Card(self.card.clone()))?;
        for card in &cards {
            self.author(&id, LogBody::Card(card.clone()))?;
        }
        self.share_keys(&id)?;
        self.save_group(&id)?;
        for card in &cards {
            self.invite(&id, card)?;
        }
        self.store.flush()?;
        self.flush_unpublished(&id);
        Ok(id)
    }

    /// `group_add`: adds a contact to a group we are in; they get an invite.
    pub(super) fn group_add(&mut self, id: &GroupId, member: &str) -> NodeResult<()> {
        let card = self.contact_card(member)?;
        // Refused before anything is written if the invite could not be sent.
        self.invite_items(id, &card.identity)?;
        let group = self.member_group(id)?;
        if group.membership.is_member(&card.identity) {
            return Ok(());
        }
        if group.membership.state().members.len() >= MAX_GROUP_MEMBERS {
            return Err(NodeError::InvalidArgument(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        let op = self.sign_op(
            id,
            MembershipOp::Add {
                member: card.identity,
            },
        )?;
        self.author(id, LogBody::Op(op))?;
        self.author(id, LogBody::Card(card.clone()))?;
        self.share_keys(id)?;
        self.save_group(id)?;
        self.invite(id, &card)?;
        self.store.flush()?;
        self.flush_unpublished(id);
        Ok(())
    }

    /// Signs a membership op after every op we hold (our heads as its `deps`, and an HLC
    /// above theirs, or the fold would ignore it).
    fn sign_op(&mut self, id: &GroupId, op: MembershipOp) -> NodeResult<SignedOp> {
        let group = self.member_group(id)?;
        let heads = group.membership.heads();
        let latest = group.membership.ops().map(|op| op.hlc).max();
        if let Some(latest) = latest {
            self.clock
                .observe(latest, now_ms(), super::actor::MAX_SKEW_MS);
        }
        let hlc = self.clock.tick(now_ms());
        Ok(SignedOp::sign(&self.signing()?, *id, hlc, heads, op))
    }

    /// `group_remove` / `group_leave`: a membership op that makes the others rotate.
    pub(super) fn group_remove(&mut self, id: &GroupId, member: Option<&str>) -> NodeResult<()> {
        let op = match member {
            Some(peer) => {
                let peer: PeerId = peer.parse().map_err(|_| {
                    NodeError::InvalidArgument(format!("{peer:?} is not a peer id"))
                })?;
                let group = self.member_group(id)?;
                let key = group
                    .membership
                    .state()
                    .members
                    .iter()
                    .find(|k| identity::peer_id_of(k).ok() == Some(peer))
                    .copied()
                    .ok_or_else(|| NodeError::NotFound(format!("{peer} is not in the group")))?;
                MembershipOp::Remove { member: key }
            }
            None => {
                self.member_group(id)?;
                MembershipOp::Leave
            }
        };
        let op = self.sign_op(id, op)?;
        self.author(id, LogBody::Op(op))?;
        self.share_keys(id)?;
        self.save_group(id)?;
        self.store.flush()?;
        self.flush_unpublished(id);
        Ok(())
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
        let signing = self.signing()?;
        let message_id = MessageId::random()
            .map_err(|e| NodeError::InvalidArgument(format!("no randomness: {e}")))?;
        let hlc = self.clock.tick(now_ms());
        let payload = GroupPayload::new(message_id, hlc, GroupBody::Text(text.to_owned()));
        let group = self
            .groups
            .map
            .get_mut(id)
            .ok_or_else(|| NodeError::NotFound(format!("no group {}", id.to_hex())))?;
        let key = group.my_key.as_mut().ok_or_else(|| {
            NodeError::InvalidArgument("you are not a member of this group any more".into())
        })?;
        if group.checkpoints.len() >= MAX_CHECKPOINTS {
            group.checkpoints.pop_front();
        }
        group.checkpoints.push_back((hlc, key.state().clone()));
        let envelope = GroupEnvelope::seal(key, &signing, id, &payload)
            .map_err(|e| NodeError::InvalidArgument(format!("cannot seal: {e}")))?;
        let item = LogItem::sign(&signing, *id, hlc, LogBody::Message(envelope));
        let bytes = item.encode();
        let item_id = LogItem::id_of(&bytes);
        let chat = id.to_hex();
        // The advanced chain first: a message key must never be used twice, even if we
        // crash half-way (sled makes a prefix of its writes durable).
        self.save_group(id)?;
        let message = StoredMessage {
            id: message_id,
            chat: chat.clone(),
            from: self.identity.peer_id().to_string(),
            text: text.to_owned(),
            hlc,
            status: MessageStatus::Pending,
            outgoing: true,
        };
        self.store.insert_message(&message)?;
        self.store.group_item_put(&chat, hlc, &item_id, &bytes)?;
        self.store.flush()?;
        self.groups.unsent.insert(item_id, message_id);
        if let Some(group) = self.groups.map.get_mut(id) {
            push_bounded(&mut group.unpublished, bytes);
        }
        self.flush_unpublished(id);
        Ok(message_id)
    }

    /// Signs, stores and queues for gossip one item of ours, and takes it ourselves.
    fn author(&mut self, id: &GroupId, body: LogBody) -> NodeResult<()> {
        let item = LogItem::sign(&self.signing()?, *id, self.clock.tick(now_ms()), body);
        let bytes = item.encode();
        match self.take_item(&bytes) {
            Taken::New | Taken::Duplicate => {}
            Taken::Ignored | Taken::Rejected(_) => {
                return Err(NodeError::InvalidArgument(
                    "you cannot change this group (not a member)".into(),
                ));
            }
        }
        if let Some(group) = self.groups.map.get_mut(id) {
            push_bounded(&mut group.unpublished, bytes);
        }
        Ok(())
    }

    /// Publishes what waits for gossip, oldest first, until gossipsub refuses (nobody on
    /// the topic yet: tried again when a peer subscribes or at the next tick).
    pub(super) fn flush_unpublished(&mut self, id: &GroupId) {
        let topic = IdentTopic::new(topic_for(id));
        loop {
            let Some(bytes) = self
                .groups
                .map
                .get_mut(id)
                .and_then(|g| g.unpublished.front().cloned())
            else {
                return;
            };
            let item_id = LogItem::id_of(&bytes);
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes)
            {
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => {
                    if let Some(group) = self.groups.map.get_mut(id) {
                        group.unpublished.pop_front();
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

    /// One of our items left for a member (gossip took it, or a member fetched it or we
    /// pushed it by sync): if it is a chat message of ours still `pending`, now `sent`.
    pub(super) fn handed_over(&mut self, item_id: &MessageId) {
        if let Some(message) = self.groups.unsent.remove(item_id) {
            self.update_status(&message, MessageStatus::Sent);
        }
    }

    /// Retries every group's unpublished items (a peer subscribed somewhere, or a tick).
    pub(super) fn flush_all_unpublished(&mut self) {
        let ids: Vec<GroupId> = self
            .groups
            .map
            .iter()
            .filter(|(_, g)| !g.unpublished.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.flush_unpublished(&id);
        }
    }

    /// Seals our current key to every member that lacks it (and whose card we have).
    fn share_keys(&mut self, id: &GroupId) -> NodeResult<()> {
        let me = self.identity.public_key();
        let Some(group) = self.groups.map.get(id) else {
            return Ok(());
        };
        let Some(key) = &group.my_key else {
            return Ok(());
        };
        let owed: Vec<(ContactCard, ChainState)> = group
            .membership
            .state()
            .members
            .iter()
            .filter(|m| **m != me && !group.shared.contains(*m))
            .filter_map(|m| Some((group.cards.get(m)?.clone(), group.key_for(m, key))))
            .collect();
        if owed.is_empty() {
            return Ok(());
        }
        let mut sealed = Vec::with_capacity(owed.len());
        for (card, state) in &owed {
            let plain = postcard::to_stdvec(state)
                .map_err(|e| NodeError::InvalidArgument(format!("cannot encode a key: {e}")))?;
            let copy = crypto::seal(self.identity.msg_secret(), &card.msg_key, &plain)
                .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
            sealed.push((card.identity, copy));
        }
        if let Some(group) = self.groups.map.get_mut(id) {
            group.shared.extend(owed.iter().map(|(c, _)| c.identity));
        }
        self.author(id, LogBody::Keys(sealed))
    }

    /// Sends `card`'s owner the group's log so far (without chat messages) through the
    /// direct outbox, so it reaches them even when they are offline (via their mailbox).
    fn invite(&mut self, id: &GroupId, card: &ContactCard) -> NodeResult<()> {
        let items = self.invite_items(id, &card.identity)?;
        let control = MessageId::random()
            .map_err(|e| NodeError::InvalidArgument(format!("no randomness: {e}")))?;
        let body = postcard::to_stdvec(&Body::GroupInvite(items))
            .map_err(|e| NodeError::InvalidArgument(format!("cannot encode an invite: {e}")))?;
        self.store
            .set_setting(&format!("{CONTROL_KEY}{}", control.to_hex()), &body)?;
        let peer = card.peer_id()?.to_string();
        let now = now_ms();
        let entry = OutboxEntry {
            id: control,
            to: peer,
            created_ms: now,
            expires_ms: ttl_expiry(now, self.ttl_ms),
        };
        self.store.outbox_put(&entry)?;
        let outputs = self.outbox.handle(outbox::Input::Queued(entry), now);
        self.apply_outbox(outputs);
        Ok(())
    }

    /// What an invite carries: the log's ops, then the key items that hold a copy for
    /// the invitee (keys sealed to others are of no use to it), then cards, as fit one
    /// direct message (see [`pack_invite`]). Refused if the ops alone do not fit, so
    /// `group_add` fails visibly instead of an invite that can never be sent.
    fn invite_items(&self, id: &GroupId, invitee: &[u8; 32]) -> NodeResult<Vec<Vec<u8>>> {
        let chat = id.to_hex();
        let (mut ops, mut keys, mut cards) = (Vec::new(), Vec::new(), Vec::new());
        for (_, item_id) in self.store.group_items(&chat)? {
            let Some(bytes) = self.store.group_item(&chat, &item_id)? else {
                continue;
            };
            match LogItem::decode(&bytes).map(|i| i.body) {
                Ok(LogBody::Op(_)) => ops.push(bytes),
                Ok(LogBody::Keys(sealed)) if sealed.iter().any(|(to, _)| to == invitee) => {
                    keys.push(bytes);
                }
                Ok(LogBody::Card(_)) => cards.push(bytes),
                _ => {}
            }
        }
        let budget = crypto::MAX_PLAINTEXT.saturating_sub(INVITE_MARGIN);
        pack_invite(ops, keys, cards, budget).map_err(|size| {
            NodeError::InvalidArgument(format!(
                "this group's membership history ({size} bytes) no longer fits an invite; \
                 start a new group to add more people"
            ))
        })
    }

    /// The body of a control message waiting in the outbox (an invite), if `id` is one.
    pub(super) fn control_body(&self, id: &MessageId) -> Option<Body> {
        let bytes = self
            .store
            .setting(&format!("{CONTROL_KEY}{}", id.to_hex()))
            .ok()
            .flatten()?;
        postcard::from_bytes(&bytes).ok()
    }

    /// A control message left the outbox: forget its body.
    pub(super) fn forget_control(&self, id: &MessageId) {
        let key = format!("{CONTROL_KEY}{}", id.to_hex());
        if matches!(self.store.setting(&key), Ok(Some(v)) if !v.is_empty()) {
            let _ = self.store.set_setting(&key, &[]);
        }
    }

    /// An invite from `from` (a contact we accepted): take the items, join if we are in.
    pub(super) fn take_invite(&mut self, from: &str, items: &[Vec<u8>]) {
        let accepted = matches!(
            self.store.contact(from),
            Ok(Some(c)) if c.state == ContactState::Accepted
        );
        if !accepted {
            tracing::info!(%from, "group invite from someone who is not a contact; ignored");
            return;
        }
        let me = self.identity.public_key();
        // Each item is decoded (and its signature checked) once here.
        let decoded: Vec<(&Vec<u8>, LogItem)> = items
            .iter()
            .filter_map(|b| LogItem::decode(b).ok().map(|i| (b, i)))
            .collect();
        // The group is known from the invite's Create op.
        let Some(id) = decoded
            .iter()
            .find(|(_, i)| is_founding(&i.body))
            .map(|(_, i)| i.group_id)
        else {
            tracing::info!(%from, "group invite without its founding op; ignored");
            return;
        };
        if !self.groups.map.contains_key(&id) {
            if self.groups.map.len() >= MAX_GROUPS {
                tracing::warn!("group invite ignored: in {MAX_GROUPS} groups already");
                return;
            }
            self.groups
                .map
                .insert(id, Group::new(Membership::new(id, me)));
        }
        // Ops first, so that items are judged against the right membership.
        let (ops, rest): (Vec<_>, Vec<_>) = decoded
            .into_iter()
            .partition(|(_, i)| matches!(i.body, LogBody::Op(_)));
        for (bytes, _) in ops.into_iter().chain(rest) {
            self.take_item(bytes);
        }
        let member = self
            .groups
            .map
            .get(&id)
            .is_some_and(|g| g.membership.is_member(&me));
        if !member {
            self.groups.map.remove(&id);
            return;
        }
        self.join_topic(&id);
        if let Err(e) = self.save_group(&id) {
            tracing::warn!("cannot save group {}: {e:#}", id.to_hex());
        }
        self.groups
            .pending_events
            .push(Event::GroupChanged { group: id.to_hex() });
        if let Ok(peer) = from.parse::<PeerId>() {
            self.start_sync(&id, peer);
        }
        self.flush_unpublished(&id);
    }

    /// Takes one encoded item from gossip, sync or an invite: checks it, stores it, and
    /// applies it (membership, cards, keys, messages). Not flushed: the caller flushes.
    fn take_item(&mut self, bytes: &[u8]) -> Taken {
        let Ok(item) = LogItem::decode(bytes) else {
            return Taken::Rejected("malformed or forged item");
        };
        let id = item.group_id;
        let Some(group) = self.groups.map.get(&id) else {
            return Taken::Ignored;
        };
        if !is_founding(&item.body) && !group.ever_members().contains(&item.author) {
            // Before the ops that admit the author arrive, its items wait for sync.
            // Signed, but by someone who is not a member as far as we know yet: the op
            // admitting them may still be on its way. Not kept, not forwarded; sync
            // brings it again later. (Not a gossip penalty: honest peers forward such.)
            return Taken::Ignored;
        }
        let item_id = LogItem::id_of(bytes);
        let chat = id.to_hex();
        match self.store.group_item(&chat, &item_id) {
            Ok(None) => {}
            Ok(Some(_)) => return Taken::Duplicate,
            Err(e) => {
                tracing::error!("cannot read the group log: {e:#}");
                return Taken::Ignored;
            }
        }
        self.clock
            .observe(item.hlc, now_ms(), super::actor::MAX_SKEW_MS);
        let hlc = item.hlc;
        match item.body {
            LogBody::Op(op) => self.apply_op(&id, op),
            LogBody::Card(card) => {
                // Kept even before the op that adds its owner arrives (gossip may bring
                // them in either order); keys are only ever sealed to current members.
                if let Some(group) = self.groups.map.get_mut(&id)
                    && (group.cards.len() < MAX_CARDS || group.cards.contains_key(&card.identity))
                {
                    let newer = group
                        .cards
                        .get(&card.identity)
                        .is_none_or(|old| card.issued_ms > old.issued_ms);
                    if newer {
                        group.cards.insert(card.identity, card);
                    }
                }
                let _ = self.share_keys(&id);
            }
            LogBody::Keys(sealed) => self.take_keys(&id, item.author, &sealed),
            LogBody::Message(envelope) => {
                if !self.open_message(&id, item.author, &envelope)
                    && let Some(group) = self.groups.map.get_mut(&id)
                {
                    let held = group.unopened.entry(item.author).or_default();
                    if held.len() < MAX_UNOPENED {
                        held.insert(item_id);
                    }
                }
            }
        }
        // The item goes into the log last: sled makes a prefix of its writes durable, so
        // whenever the item survives a crash, so does what it did (a shown message, an
        // advanced chain, a key). If it does not, sync brings it again.
        if let Err(e) = self.save_group(&id) {
            tracing::warn!("cannot save group {}: {e:#}", id.to_hex());
        }
        if let Err(e) = self.store.group_item_put(&chat, hlc, &item_id, bytes) {
            tracing::error!("cannot store a group item: {e:#}");
            return Taken::Ignored;
        }
        Taken::New
    }

    /// Opens one chat item with its author's chain and shows it; false if it cannot be
    /// opened yet (no key from the author) or is ours (stored when we sent it).
    fn open_message(&mut self, id: &GroupId, author: [u8; 32], envelope: &GroupEnvelope) -> bool {
        if author == self.identity.public_key() {
            return true;
        }
        let Some(chain) = self
            .groups
            .map
            .get_mut(id)
            .and_then(|g| g.chains.get_mut(&author))
        else {
            return false;
        };
        let payload = match envelope.open(chain) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::debug!("group message not opened yet: {e}");
                return false;
            }
        };
        if let Some(message) = self.show_group_message(id, author, payload) {
            self.groups.pending_events.push(Event::MessageReceived {
                chat: message.chat.clone(),
                message,
            });
        }
        true
    }

    /// Stores an opened group message for display; the stored message if it is new.
    fn show_group_message(
        &mut self,
        id: &GroupId,
        author: [u8; 32],
        payload: GroupPayload,
    ) -> Option<StoredMessage> {
        let GroupBody::Text(text) = payload.body else {
            return None;
        };
        let from = identity::peer_id_of(&author).ok()?;
        let message = StoredMessage {
            id: payload.id,
            chat: id.to_hex(),
            from: from.to_string(),
            text,
            hlc: payload.hlc,
            status: MessageStatus::Delivered,
            outgoing: false,
        };
        match self.store.insert_message(&message) {
            Ok(true) => Some(message),
            Ok(false) => None,
            Err(e) => {
                tracing::error!("cannot store a group message: {e:#}");
                None
            }
        }
    }

    fn apply_op(&mut self, id: &GroupId, op: SignedOp) {
        let Some(group) = self.groups.map.get_mut(id) else {
            return;
        };
        let change = match group.membership.apply(op) {
            Ok(change) => change,
            Err(e) => {
                tracing::info!("group op refused: {e}");
                return;
            }
        };
        for gone in &change.removed {
            group.chains.remove(gone);
            group.shared.remove(gone);
        }
        let mut stop = false;
        match change.key {
            KeyAction::Start { .. } => {
                if group.my_key.is_none()
                    && let Ok(key) = SenderKey::generate()
                {
                    group.my_key = Some(key);
                    group.checkpoints.clear();
                    group.shared.clear();
                }
            }
            KeyAction::Rotate { .. } => {
                if let Some(key) = &group.my_key
                    && let Ok(next) = key.rotate()
                {
                    group.my_key = Some(next);
                    group.checkpoints.clear();
                    group.shared.clear();
                }
            }
            KeyAction::Stop => {
                group.my_key = None;
                group.checkpoints.clear();
                group.chains.clear();
                group.shared.clear();
                stop = true;
            }
            KeyAction::Share { .. } | KeyAction::None => {}
        }
        if stop {
            self.leave_topic(id);
        } else {
            let _ = self.share_keys(id);
        }
        self.groups
            .pending_events
            .push(Event::GroupChanged { group: id.to_hex() });
    }

    /// A key item: if one copy is sealed to us, install it as the author's chain.
    fn take_keys(&mut self, id: &GroupId, author: [u8; 32], sealed: &[([u8; 32], Vec<u8>)]) {
        let me = self.identity.public_key();
        let Some((_, copy)) = sealed.iter().find(|(to, _)| *to == me) else {
            return;
        };
        let Ok(opened) = crypto::open(self.identity.msg_secret(), copy) else {
            tracing::info!("a group key sealed to us does not open");
            return;
        };
        let Ok(state) = postcard::from_bytes::<ChainState>(&opened.plaintext) else {
            return;
        };
        let Some(group) = self.groups.map.get_mut(id) else {
            return;
        };
        if let Some(card) = group.cards.get(&author)
            && card.msg_key != opened.sender_msg_key
        {
            tracing::info!("a group key not sealed by its author; ignored");
            return;
        }
        if !group.membership.is_member(&author) {
            return;
        }
        match group.chains.get_mut(&author) {
            Some(chain) => {
                if let Err(e) = chain.install(&state) {
                    tracing::debug!("group key not installed: {e}");
                }
            }
            None => {
                group.chains.insert(author, ReceiverChain::new(&state));
            }
        }
        self.open_pending(id, author);
    }

    /// Opens whatever chat items of `author` are waiting for its key, and shows them.
    fn open_pending(&mut self, id: &GroupId, author: [u8; 32]) {
        let chat = id.to_hex();
        let waiting: Vec<MessageId> = self
            .groups
            .map
            .get(id)
            .and_then(|g| g.unopened.get(&author))
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        let mut items = Vec::new();
        for item_id in &waiting {
            if let Ok(Some(bytes)) = self.store.group_item(&chat, item_id)
                && let Ok(item) = LogItem::decode(&bytes)
                && let LogBody::Message(envelope) = item.body
            {
                items.push((*item_id, envelope));
            }
        }
        // Oldest first, so the chain moves forward.
        items.sort_by_key(|(_, e)| (e.generation, e.iteration));
        let mut shown = Vec::new();
        for (item_id, envelope) in items {
            let Some(group) = self.groups.map.get_mut(id) else {
                return;
            };
            let Some(chain) = group.chains.get_mut(&author) else {
                return;
            };
            let payload = match envelope.open(chain) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::debug!("group message not opened yet: {e}");
                    continue;
                }
            };
            group.unopened.entry(author).or_default().remove(&item_id);
            if let Some(message) = self.show_group_message(id, author, payload) {
                shown.push(message);
            }
        }
        if let Some(group) = self.groups.map.get_mut(id) {
            group.unopened.retain(|_, ids| !ids.is_empty());
        }
        for message in shown {
            self.groups.pending_events.push(Event::MessageReceived {
                chat: message.chat.clone(),
                message,
            });
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
                let known = self.groups.topics.get(&message.topic).copied();
                let relayed = self.groups.relayed.contains(&message.topic);
                let acceptance = match known.map(|_| self.take_item(&message.data)) {
                    // A relay carrying a topic for its clients: it holds no keys and no
                    // membership, so it forwards what is well formed and signed.
                    None if relayed => self.relay_item(&message.topic, &message.data),
                    Some(Taken::New) => {
                        // Flushed once for the whole batch of swarm events (see
                        // `commit_groups`); an item lost to a crash comes back by sync.
                        self.groups.dirty = true;
                        MessageAcceptance::Accept
                    }
                    Some(Taken::Duplicate) => MessageAcceptance::Ignore,
                    Some(Taken::Rejected(why)) => {
                        tracing::info!(peer = %propagation_source, "group item rejected: {why}");
                        MessageAcceptance::Reject
                    }
                    Some(Taken::Ignored) | None => MessageAcceptance::Ignore,
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

    /// Makes what gossip brought durable with one flush, then emits its events.
    pub(super) fn commit_groups(&mut self) {
        if self.groups.dirty {
            self.groups.dirty = false;
            if let Err(e) = self.store.flush() {
                tracing::error!("cannot make group items durable: {e:#}");
            }
        }
        for event in std::mem::take(&mut self.groups.pending_events) {
            self.emit(event);
        }
    }

    /// Items from a sync peer: taken like gossip (already checked by the same rules).
    pub(super) fn take_synced(&mut self, items: &[Vec<u8>]) -> usize {
        let mut new = 0;
        for bytes in items {
            if matches!(self.take_item(bytes), Taken::New) {
                new += 1;
            }
        }
        if new > 0
            && let Err(e) = self.store.flush()
        {
            tracing::error!("cannot make synced group items durable: {e:#}");
        }
        new
    }

    /// The card of contact `peer` (to invite them).
    fn contact_card(&self, peer: &str) -> NodeResult<ContactCard> {
        match self.store.contact(peer)? {
            Some(c) if c.state == ContactState::Accepted => Ok(c.card),
            _ => Err(NodeError::NotFound(format!(
                "{peer} is not a contact; add them with their contact code first"
            ))),
        }
    }

    fn member_group(&self, id: &GroupId) -> NodeResult<&Group> {
        let group = self
            .groups
            .map
            .get(id)
            .ok_or_else(|| NodeError::NotFound(format!("no group {}", id.to_hex())))?;
        if !group.membership.is_member(&self.identity.public_key()) {
            return Err(NodeError::InvalidArgument(
                "you are not a member of this group any more".into(),
            ));
        }
        Ok(group)
    }

    /// Group chats for `chats`: (id, name).
    pub(super) fn group_names(&self) -> Vec<(String, String)> {
        self.groups
            .map
            .iter()
            .map(|(id, g)| {
                (
                    id.to_hex(),
                    g.membership
                        .state()
                        .name
                        .clone()
                        .unwrap_or_else(|| "group".to_owned()),
                )
            })
            .collect()
    }

    /// `group_members`: peer ids of the current members.
    pub(super) fn group_members(&self, id: &GroupId) -> NodeResult<Vec<String>> {
        let group = self
            .groups
            .map
            .get(id)
            .ok_or_else(|| NodeError::NotFound(format!("no group {}", id.to_hex())))?;
        Ok(group
            .membership
            .state()
            .members
            .iter()
            .filter_map(|k| identity::peer_id_of(k).ok())
            .map(|p| p.to_string())
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

/// What an invite carries, within `budget` bytes (each item costs its length and 4) and
/// [`wire::MAX_INVITE_ITEMS`] items: every op, without which the newcomer cannot tell who
/// is in (if they alone do not fit, `Err` with their size), then the key items sealed to
/// it, then cards, as many as fit. What is left out comes by sync once the newcomer is in
/// (members answer sync to a member).
fn pack_invite(
    ops: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    cards: Vec<Vec<u8>>,
    budget: usize,
) -> Result<Vec<Vec<u8>>, usize> {
    let cost = |item: &Vec<u8>| item.len() + 4;
    let ops_size: usize = ops.iter().map(cost).sum();
    if ops.len() > wire::MAX_INVITE_ITEMS || ops_size > budget {
        return Err(ops_size);
    }
    let mut size = ops_size;
    let mut items = ops;
    for item in keys.into_iter().chain(cards) {
        if items.len() >= wire::MAX_INVITE_ITEMS {
            break;
        }
        if size + cost(&item) <= budget {
            size += cost(&item);
            items.push(item);
        }
    }
    Ok(items)
}

fn push_bounded(queue: &mut VecDeque<Vec<u8>>, item: Vec<u8>) {
    if queue.len() >= MAX_UNPUBLISHED {
        // Sync repairs what gossip never carried (and a message of ours turns `sent`
        // when it does: see `handed_over`).
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(count: usize, len: usize, tag: u8) -> Vec<Vec<u8>> {
        (0..count).map(|_| vec![tag; len]).collect()
    }

    #[test]
    fn an_invite_keeps_every_op_and_fills_up_with_keys_then_cards() {
        // Room for 10 items of 96 bytes (+4 each).
        let packed = pack_invite(items(4, 96, 1), items(3, 96, 2), items(8, 96, 3), 1_000);
        let packed = packed.expect("the ops fit");
        let count = |tag: u8| packed.iter().filter(|i| i[0] == tag).count();
        assert_eq!((count(1), count(2), count(3)), (4, 3, 3));
        // Everything fits: everything goes.
        let all = pack_invite(items(2, 10, 1), items(2, 10, 2), items(2, 10, 3), 1_000);
        assert_eq!(all.map(|i| i.len()), Ok(6));
    }

    #[test]
    fn an_invite_whose_ops_do_not_fit_is_refused_with_their_size() {
        assert_eq!(
            pack_invite(items(11, 96, 1), Vec::new(), Vec::new(), 1_000),
            Err(1_100)
        );
        let too_many = items(wire::MAX_INVITE_ITEMS + 1, 1, 1);
        assert!(pack_invite(too_many, Vec::new(), Vec::new(), usize::MAX).is_err());
    }
}
