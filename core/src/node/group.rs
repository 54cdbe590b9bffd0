//! Group chats: the adapter between the sans-IO sessions (`proto::group::session`) and
//! the store, gossipsub and the direct outbox. The decisions (membership, keys, what an
//! item means, what an invite carries) are the sessions'; `Groups` moves bytes and says
//! what the network should do ([`GroupOut`]), which the actor carries out.
//!
//! Items travel by gossipsub (one topic per group) and by `/bonghwa/sync/1` (see
//! `group_sync.rs`); invites ride the direct outbox (with mailbox fallback). Work is done
//! in batches: items taken in one round of swarm events (or by one command) are staged,
//! and [`Groups::commit`] ends the batch: the sessions seal the keys owed to readers of
//! what they already sent (the rest wait for their next send), then each changed
//! record is written, then the staged items, then one flush, then events are emitted and
//! our items published. An item is stored after what it caused (sled keeps a prefix of
//! its writes), so a surviving item implies its effects; a lost one comes back by sync.
//! Commands (create, add, remove, send, invite, restore) are in `group/commands.rs`;
//! taking items from gossip, sync and invites in `group/receive.rs`.

mod commands;
mod receive;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use libp2p::PeerId;
use libp2p::gossipsub::TopicHash;

use super::{NodeError, NodeResult};
use crate::crypto::group::{GroupId, signing_key_of};
use crate::event::Event;
use crate::identity::Identity;
use crate::model::{GroupRecord, Hlc, HlcClock, MessageId, MessageStatus};
use crate::model::{OutboxEntry, StoredMessage};
use crate::proto::group::session::{Ctx, GroupSession, Me, OsRandom, Output, Taken};
use crate::store::Store;
use crate::wire::group::LogItem;

/// Groups one node keeps.
const MAX_GROUPS: usize = 256;
/// Items waiting for a gossip peer, per group.
const MAX_UNPUBLISHED: usize = 4_096;

/// What a group call may use: the store, the node's clock, the time.
pub(super) struct GroupIo<'a> {
    pub(super) store: &'a dyn Store,
    /// Shared with direct messages, so our stamps keep one order.
    pub(super) clock: &'a mut HlcClock,
    pub(super) now: u64,
}

/// What `Groups` asks the actor to do.
#[derive(Debug)]
pub(super) enum GroupOut {
    /// Join the group's topic.
    Subscribe(GroupId),
    /// Leave the group's topic.
    Unsubscribe(GroupId),
    /// Items of ours wait for gossip: publish them ([`Groups::next_unpublished`]).
    Publish(GroupId),
    /// Announce to subscribers (after the batch's flush).
    Emit(Event),
    /// A direct message (an invite) is written: hand it to the outbox.
    Queue(OutboxEntry),
    /// Reconcile the group with this peer.
    Sync(GroupId, PeerId),
    /// Items were stored in the group's log (sync's cached set is out of date).
    LogChanged(GroupId),
}

/// What a received item did, as gossip sees it.
#[derive(Debug)]
pub(super) enum Received {
    Taken(Taken),
    Duplicate,
    /// Not for a group we hold.
    Unknown,
}

/// All groups, and the batch under way.
pub(super) struct Groups {
    sessions: BTreeMap<GroupId, GroupSession>,
    topics: BTreeMap<TopicHash, GroupId>,
    me: Me,
    /// Our peer id, the author of our messages.
    me_peer: PeerId,
    random: OsRandom,
    /// How long an invite waits in the outbox.
    ttl_ms: u64,
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

impl Groups {
    /// No groups yet; [`Groups::restore`] loads them.
    pub(super) fn new(identity: &Identity, ttl_ms: u64) -> NodeResult<Self> {
        let signing = signing_key_of(identity).map_err(|e| NodeError::Crypto(e.to_string()))?;
        Ok(Self {
            sessions: BTreeMap::new(),
            topics: BTreeMap::new(),
            me: Me {
                key: identity.public_key(),
                signing,
                msg_secret: *identity.msg_secret(),
            },
            me_peer: identity.peer_id(),
            random: OsRandom,
            ttl_ms,
            staged: BTreeMap::new(),
            touched: BTreeSet::new(),
            list_dirty: false,
            pending_events: Vec::new(),
            unpublished: BTreeMap::new(),
            unsent: HashMap::new(),
        })
    }

    /// Every group's session (read-only: sync asks who may have what).
    pub(super) fn sessions(&self) -> &BTreeMap<GroupId, GroupSession> {
        &self.sessions
    }

    /// The group whose topic this is, if we are in it.
    pub(super) fn group_of(&self, topic: &TopicHash) -> Option<GroupId> {
        self.topics.get(topic).copied()
    }

    /// Remembers that `id`'s topic is `topic` (the actor joined it).
    pub(super) fn joined(&mut self, id: GroupId, topic: TopicHash) {
        self.topics.insert(topic, id);
    }

    /// Runs `f` on group `id`'s session and applies what it says. `None` if no such group.
    fn with_session<T>(
        &mut self,
        io: &mut GroupIo<'_>,
        id: &GroupId,
        out: &mut Vec<GroupOut>,
        f: impl FnOnce(&mut GroupSession, &mut Ctx<'_>, &mut Vec<Output>) -> T,
    ) -> Option<T> {
        let mut outputs = Vec::new();
        let session = self.sessions.get_mut(id)?;
        let mut ctx = Ctx {
            me: &self.me,
            clock: io.clock,
            now: io.now,
            random: &mut self.random,
        };
        let result = f(session, &mut ctx, &mut outputs);
        self.touched.insert(*id);
        self.apply(io.store, id, outputs, out);
        Some(result)
    }

    /// Carries out a session's outputs (and those they lead to).
    fn apply(
        &mut self,
        store: &dyn Store,
        id: &GroupId,
        mut queue: Vec<Output>,
        out: &mut Vec<GroupOut>,
    ) {
        while !queue.is_empty() {
            let mut next = Vec::new();
            for output in queue {
                match output {
                    Output::Store {
                        id: item,
                        hlc,
                        bytes,
                    } => {
                        self.staged.insert((*id, item), (hlc, bytes));
                    }
                    Output::Publish { bytes, .. } => {
                        let queue = self.unpublished.entry(*id).or_default();
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
                        match store.insert_message(&message) {
                            Ok(true) => self.pending_events.push(Event::MessageReceived {
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
                            .filter_map(|item| Some((*item, self.item_bytes(store, id, item)?)))
                            .collect();
                        if let Some(session) = self.sessions.get_mut(id) {
                            session.open_held(&self.me, author, items, &mut next);
                        }
                    }
                    Output::JoinTopic => out.push(GroupOut::Subscribe(*id)),
                    Output::LeaveTopic => out.push(GroupOut::Unsubscribe(*id)),
                    Output::Changed => self
                        .pending_events
                        .push(Event::GroupChanged { group: id.to_hex() }),
                }
            }
            queue = next;
        }
    }

    /// An item of group `id`: staged in this batch, or in the store's log.
    fn item_bytes(&self, store: &dyn Store, id: &GroupId, item: &MessageId) -> Option<Vec<u8>> {
        if let Some((_, bytes)) = self.staged.get(&(*id, *item)) {
            return Some(bytes.clone());
        }
        store.group_item(&id.to_hex(), item).ok().flatten()
    }

    /// Ends a batch: keys owed to readers of what we sent are sealed, records then items
    /// written (sync is told which logs changed), one flush (also when `also_flush`:
    /// someone else wrote in this batch), then events and publishing. Every path that
    /// takes or authors items calls it.
    pub(super) fn commit(
        &mut self,
        io: &mut GroupIo<'_>,
        also_flush: bool,
        out: &mut Vec<GroupOut>,
    ) -> NodeResult<()> {
        for id in std::mem::take(&mut self.touched) {
            if let Some(Err(e)) = self.with_session(io, &id, out, |s, ctx, o| s.flush(ctx, o)) {
                tracing::warn!("cannot seal our key in group {}: {e}", id.to_hex());
            }
            self.touched.remove(&id);
        }
        let store = io.store;
        let mut wrote = also_flush;
        let dirty: Vec<(GroupId, GroupRecord)> = self
            .sessions
            .iter_mut()
            .filter_map(|(id, s)| s.take_dirty().then(|| (*id, s.record())))
            .collect();
        for (id, record) in dirty {
            store.put_group_record(&id, &record)?;
            wrote = true;
        }
        if std::mem::take(&mut self.list_dirty) {
            let ids: Vec<GroupId> = self.sessions.keys().copied().collect();
            store.set_group_ids(&ids)?;
            wrote = true;
        }
        // Said before the writes, so that a failing one cannot leave sync a stale set.
        let changed: BTreeSet<GroupId> = self.staged.keys().map(|(id, _)| *id).collect();
        out.extend(changed.into_iter().map(GroupOut::LogChanged));
        for ((id, item), (hlc, bytes)) in std::mem::take(&mut self.staged) {
            store.group_item_put(&id.to_hex(), hlc, &item, &bytes)?;
            wrote = true;
        }
        if wrote {
            store.flush()?;
        }
        out.extend(self.pending_events.drain(..).map(GroupOut::Emit));
        out.extend(self.waiting().into_iter().map(GroupOut::Publish));
        Ok(())
    }

    /// Groups with items of ours waiting for gossip.
    pub(super) fn waiting(&mut self) -> Vec<GroupId> {
        self.unpublished.retain(|_, q| !q.is_empty());
        self.unpublished.keys().copied().collect()
    }

    /// The oldest of our items in `id` waiting for gossip.
    pub(super) fn next_unpublished(&self, id: &GroupId) -> Option<&[u8]> {
        self.unpublished
            .get(id)
            .and_then(|q| q.front())
            .map(Vec::as_slice)
    }

    /// Gossip took the oldest waiting item: it leaves the queue, and if it was a chat
    /// message of ours still `pending`, that message is now `sent`.
    pub(super) fn published(&mut self, id: &GroupId) -> Option<MessageId> {
        let bytes = self.unpublished.get_mut(id)?.pop_front()?;
        self.handed_over(&LogItem::id_of(&bytes))
    }

    /// One of our items left for a member (gossip took it, or a member fetched it or we
    /// pushed it by sync): the message to mark `sent`, if it is one of ours still pending.
    pub(super) fn handed_over(&mut self, item_id: &MessageId) -> Option<MessageId> {
        self.unsent.remove(item_id)
    }

    /// Group chats for `chats`: (id, name).
    pub(super) fn names(&self) -> Vec<(String, String)> {
        self.sessions
            .iter()
            .map(|(id, s)| (id.to_hex(), s.name()))
            .collect()
    }

    /// `group_members`: peer ids of the current members.
    pub(super) fn members(&self, id: &GroupId) -> NodeResult<Vec<String>> {
        let session = self.sessions.get(id).ok_or(NodeError::NoSuchGroup(*id))?;
        Ok(session
            .member_peers()
            .iter()
            .map(PeerId::to_string)
            .collect())
    }
}
