//! What users ask of groups: create, add, remove, leave, send; the invites these send;
//! and loading the groups at start.

use std::collections::BTreeMap;

use libp2p::PeerId;

use super::{GroupIo, GroupOut, Groups, MAX_GROUPS, MAX_UNPUBLISHED};
use crate::crypto;
use crate::crypto::group::GroupId;
use crate::identity::{self, ContactCard};
use crate::model::{ContactState, MessageId, MessageStatus, OutboxEntry, StoredMessage};
use crate::node::check_text;
use crate::node::{NodeError, NodeResult};
use crate::proto::group::invite::invite_items;
use crate::proto::group::session::{Ctx, GroupSession, SessionError};
use crate::store::Store;
use crate::wire::Body;
use crate::wire::group::LogItem;

/// Room an invite leaves for the sender's card, the payload fields and what `group_add`
/// writes before sending it (the add op, the newcomer's card, our key for them).
const INVITE_MARGIN: usize = 4_096;

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

/// The card of contact `peer` (to invite them).
fn contact_card(store: &dyn Store, peer: &PeerId) -> NodeResult<ContactCard> {
    match store.contact(&peer.to_string())? {
        Some(c) if c.state == ContactState::Accepted => Ok(c.card),
        _ => Err(NodeError::NotAContact(*peer)),
    }
}

fn new_id() -> NodeResult<MessageId> {
    MessageId::random().map_err(|e| NodeError::Internal(format!("no randomness: {e}")))
}

impl Groups {
    /// Loads our groups at start and joins their topics.
    pub(in crate::node) fn restore(
        &mut self,
        store: &dyn Store,
        out: &mut Vec<GroupOut>,
    ) -> NodeResult<()> {
        let ids = store.group_ids().unwrap_or_else(|e| {
            tracing::warn!("the list of groups is damaged ({e}); none restored");
            Vec::new()
        });
        let me = self.me.key;
        for id in ids {
            let record = match store.group_record(&id) {
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
            self.sessions.insert(id, session);
            if member {
                out.push(GroupOut::Subscribe(id));
                self.restore_unsent(store, &id)?;
            }
        }
        Ok(())
    }

    /// Finds our chat items that no member had got when we stopped (their message is
    /// still `pending`), so that they turn `sent` when sync hands them over. Looks at the
    /// group's newest [`MAX_UNPUBLISHED`] messages.
    fn restore_unsent(&mut self, store: &dyn Store, id: &GroupId) -> NodeResult<()> {
        let chat = id.to_hex();
        let pending: BTreeMap<_, MessageId> = store
            .messages(&chat, MAX_UNPUBLISHED, None)?
            .into_iter()
            .filter(|m| m.outgoing && m.status == MessageStatus::Pending)
            .map(|m| (m.hlc, m.id))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for (hlc, item_id) in store.group_items(&chat)? {
            if let Some(message) = pending.get(&hlc)
                && let Some(bytes) = store.group_item(&chat, &item_id)?
                && LogItem::decode(&bytes).is_ok_and(|item| item.author == self.me.key)
            {
                self.unsent.insert(item_id, *message);
            }
        }
        Ok(())
    }

    /// `group_create`: a new group with us (`card`) and `members` (contacts), who get an
    /// invite.
    pub(in crate::node) fn create(
        &mut self,
        io: &mut GroupIo<'_>,
        card: &ContactCard,
        name: &str,
        members: &[PeerId],
        out: &mut Vec<GroupOut>,
    ) -> NodeResult<GroupId> {
        identity::check_name(name).map_err(|_| {
            NodeError::InvalidArgument("the group name is empty or too long".into())
        })?;
        if self.sessions.len() >= MAX_GROUPS {
            return Err(NodeError::InvalidArgument(format!(
                "you are in {MAX_GROUPS} groups already"
            )));
        }
        let cards = members
            .iter()
            .map(|m| contact_card(io.store, m))
            .collect::<NodeResult<Vec<_>>>()?;
        let mut ctx = Ctx {
            me: &self.me,
            clock: io.clock,
            now: io.now,
            random: &mut self.random,
        };
        let (session, outputs) =
            GroupSession::create(&mut ctx, name, card, &cards).map_err(|e| match e {
                SessionError::Crypto(why) => NodeError::Crypto(why),
                other => NodeError::InvalidArgument(other.to_string()),
            })?;
        let id = session.id();
        self.sessions.insert(id, session);
        self.list_dirty = true;
        self.touched.insert(id);
        self.apply(io.store, &id, outputs, out);
        self.commit(io, false, out)?;
        for card in &cards {
            self.invite(io, &id, card, out)?;
        }
        io.store.flush()?;
        Ok(id)
    }

    /// `group_add`: adds a contact to a group we are in; they get an invite.
    pub(in crate::node) fn add(
        &mut self,
        io: &mut GroupIo<'_>,
        id: &GroupId,
        member: &PeerId,
        out: &mut Vec<GroupOut>,
    ) -> NodeResult<()> {
        let card = contact_card(io.store, member)?;
        // Refused before anything is written if the invite could not be sent.
        self.invite_items(io.store, id, &card.identity)?;
        let added = self
            .with_session(io, id, out, |s, ctx, o| s.add(ctx, &card, o))
            .ok_or(NodeError::NoSuchGroup(*id))?
            .map_err(|e| refused(id, e))?;
        self.commit(io, false, out)?;
        if added {
            self.invite(io, id, &card, out)?;
            io.store.flush()?;
        }
        Ok(())
    }

    /// `group_remove` (a member) or `group_leave` (`None`): a membership op that makes the
    /// others rotate.
    pub(in crate::node) fn remove(
        &mut self,
        io: &mut GroupIo<'_>,
        id: &GroupId,
        member: Option<&PeerId>,
        out: &mut Vec<GroupOut>,
    ) -> NodeResult<()> {
        match member {
            Some(peer) => self.with_session(io, id, out, |s, ctx, o| s.remove(ctx, peer, o)),
            None => self.with_session(io, id, out, |s, ctx, o| s.leave(ctx, o)),
        }
        .ok_or(NodeError::NoSuchGroup(*id))?
        .map_err(|e| refused(id, e))?;
        self.commit(io, false, out)
    }

    /// Sends a chat message to a group: sealed, stored, flushed, then published.
    pub(in crate::node) fn send(
        &mut self,
        io: &mut GroupIo<'_>,
        id: &GroupId,
        text: &str,
        out: &mut Vec<GroupOut>,
    ) -> NodeResult<MessageId> {
        check_text(text)?;
        let message_id = new_id()?;
        let hlc = io.clock.tick(io.now);
        let item = self
            .with_session(io, id, out, |s, ctx, o| {
                s.send(ctx, message_id, hlc, text, o)
            })
            .ok_or(NodeError::NoSuchGroup(*id))?
            .map_err(|e| refused(id, e))?;
        // The advanced chain first: a message key must never be used twice, even if we
        // crash half-way (sled makes a prefix of its writes durable).
        if let Some(session) = self.sessions.get_mut(id)
            && session.take_dirty()
        {
            io.store.put_group_record(id, &session.record())?;
        }
        io.store.insert_message(&StoredMessage {
            id: message_id,
            chat: id.to_hex(),
            from: self.me_peer.to_string(),
            text: text.to_owned(),
            hlc,
            status: MessageStatus::Pending,
            outgoing: true,
        })?;
        self.unsent.insert(item, message_id);
        self.commit(io, false, out)?;
        Ok(message_id)
    }

    /// Writes an invite for `card`'s owner: the group's log so far (without chat
    /// messages), as a control message for the direct outbox, so it reaches them even when
    /// they are offline (via their mailbox).
    fn invite(
        &mut self,
        io: &mut GroupIo<'_>,
        id: &GroupId,
        card: &ContactCard,
        out: &mut Vec<GroupOut>,
    ) -> NodeResult<()> {
        let items = self.invite_items(io.store, id, &card.identity)?;
        let control = new_id()?;
        io.store.put_control(&control, &Body::GroupInvite(items))?;
        let entry = OutboxEntry {
            id: control,
            to: card.peer_id()?.to_string(),
            created_ms: io.now,
            expires_ms: io.now.saturating_add(self.ttl_ms),
        };
        io.store.outbox_put(&entry)?;
        out.push(GroupOut::Queue(entry));
        Ok(())
    }

    /// What an invite to `invitee` carries (see [`invite_items`]); refused if the ops
    /// alone do not fit, so `group_add` fails visibly instead of an invite that can never
    /// be sent.
    fn invite_items(
        &self,
        store: &dyn Store,
        id: &GroupId,
        invitee: &[u8; 32],
    ) -> NodeResult<Vec<Vec<u8>>> {
        let chat = id.to_hex();
        let mut log = Vec::new();
        for (_, item) in store.group_items(&chat)? {
            log.extend(store.group_item(&chat, &item)?);
        }
        let budget = crypto::MAX_PLAINTEXT.saturating_sub(INVITE_MARGIN);
        invite_items(log, invitee, budget).map_err(|size| {
            NodeError::InvalidArgument(format!(
                "this group's membership history ({size} bytes) no longer fits an invite; \
                 start a new group to add more people"
            ))
        })
    }
}
